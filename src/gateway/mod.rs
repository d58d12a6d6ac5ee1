//! The gateway: a loopback (or bridge, or Unix-socket) reverse proxy to the Anthropic API
//! that swaps a grant's placeholder for the credential's current token, so the token
//! never enters a sandbox. See `docs/gateway.md`.
//!
//! The agent plugs in through [`GatewayContext`]: verify a placeholder, hand over the
//! current token, record a finished request, and name the upstream.

use std::time::Duration;

use serde::Serialize;

use crate::provider::GatewayProvider;
pub use crate::provider::Lent;

pub mod absorb;
pub mod body;
pub mod clock;
pub mod config;
pub mod grants;
pub mod grants_file;
pub mod h1;
pub mod headers;
pub mod history;
pub mod listen;
pub mod manager;
pub mod memory;
pub mod opening;
pub mod placeholder;
pub mod proxy;
pub mod refusals;
pub mod reply;
pub mod reserve;
pub mod route;
pub mod server;
pub mod usage;

pub use crate::http::{HttpError, Upstream};
pub use config::{GatewayConfig, Upstreams};
pub use grants::{Denial, Grant, GrantError, Grants, NewGrant};
pub use grants_file::{GrantsFile, GrantsFileError};
pub use listen::{ListenError, ListenSpec, Listener};
pub use manager::Listeners;
pub use memory::MemoryContext;
pub use refusals::{PeerAddr, RefusedSummary};
pub use server::{run, run_managed};
pub use usage::Usage;

/// What the gateway needs to know about the grant a request came with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantView {
    pub name: String,
    /// The credential whose token the request goes out with.
    pub credential: String,
    /// Requests of this grant allowed in flight at once.
    pub max_concurrent: Option<u32>,
    /// Tokens of the daily budget not yet spent today (`None`: no budget). Requests in
    /// flight are not in it: the gateway reserves for those itself.
    pub budget_left: Option<u64>,
}

/// The credential's token cannot be had right now.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no credential named {0:?}")]
    UnknownCredential(String),
    #[error("credential {credential:?} has no token right now: {reason}")]
    Unavailable { credential: String, reason: String },
}

/// One finished (or refused) request, for metering and the audit log. Never a secret:
/// no placeholder, token, header or body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RequestRecord {
    /// The grant, when the placeholder opened one.
    pub grant: Option<String>,
    pub method: String,
    /// The path only; the query is not kept.
    pub path: String,
    /// The status the client got (upstream's, or the gateway's own refusal).
    pub status: u16,
    pub usage: Usage,
    /// Why the gateway refused or cut it short, if it did.
    pub note: Option<String>,
    /// Whether the answer was streamed to its end (false: client left, upstream broke).
    pub complete: bool,
}

/// The narrow interface the agent implements. Called on the gateway's tasks: keep each
/// call short and non-blocking (in-memory state behind a lock).
pub trait GatewayContext: Send + Sync + 'static {
    /// The grant a placeholder opens, or why it does not.
    ///
    /// # Errors
    /// The [`Denial`] the client is answered with (401, or 429 for a spent budget).
    fn verify(&self, placeholder: &str) -> Result<GrantView, Denial>;

    /// The credential's token *now*: read per request, so a refresh or reroll applies to
    /// the very next one.
    ///
    /// # Errors
    /// The credential is unknown or has no token (answered with a 502, naming it).
    fn token(&self, credential: &str) -> Result<Lent, TokenError>;

    /// A request finished, or was refused after its placeholder opened a grant: meter it
    /// and audit it.
    fn record(&self, record: RequestRecord);

    /// One peer's refusals before any grant was opened, over one window: audit them as
    /// one entry (see [`refusals`]).
    fn refused(&self, summary: RefusedSummary);

    /// Where requests of `provider`'s API go (`None`: it has no upstream configured).
    fn upstream(&self, provider: &dyn GatewayProvider) -> Option<&Upstream>;
}

/// Resource bounds of one gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Open client connections at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Largest request body; larger gets a 413.
    pub max_body_bytes: u64,
    /// Longest wait for the next frame either way (and for upstream's answer head).
    /// There is no total timeout: a long generation is legitimate.
    pub idle_timeout: Duration,
    /// Longest a client may take to send its request head (slow-loris bound).
    pub header_timeout: Duration,
    /// Longest a new connection may stay silent before its first bytes (up to the HTTP/2
    /// preface) arrive. hyper-util's HTTP/1-or-2 detection has no deadline of its own, so
    /// without this a silent connection holds a permit and a descriptor forever.
    pub first_byte_timeout: Duration,
    /// How long refusals of clients that proved nothing are counted before one audit entry
    /// per peer sums them up.
    pub refusal_window: Duration,
}

/// Descriptors kept out of both connection caps for the agent's own work: sources and
/// stores being read, the config and state files, inotify watches, the keychain's D-Bus
/// connection, the audit and log files, the runtime's own (epoll, eventfds, signal pipe),
/// and each listener. Measured on an idle agent with a gateway: ~30 open; 64 leaves room
/// for a refresh (an outbound HTTPS connection) and a sink write at the same time.
pub const RESERVED_FILES: u64 = 64;

/// The two connection caps that fit a soft open-file limit of `soft`:
/// `(agent socket, gateway)`. What is left after [`RESERVED_FILES`] is halved between the
/// agent socket and the gateway, and a gateway connection counts twice (its client side and
/// the upstream connection it may hold in the pool), so a flood on one can never take the
/// descriptors the other, or a source read, needs. Each cap is at least 1 and never above
/// what was configured.
#[must_use]
pub fn fit_to_file_limit(soft: u64, agent_conns: usize, gateway_conns: usize) -> (usize, usize) {
    let spare = soft.saturating_sub(RESERVED_FILES);
    let half = usize::try_from(spare / 2).unwrap_or(usize::MAX);
    let agent = agent_conns.min(half).max(1);
    let left = spare.saturating_sub(agent as u64) / 2;
    let gateway = gateway_conns
        .min(usize::try_from(left).unwrap_or(usize::MAX))
        .max(1);
    (agent, gateway)
}

/// The defaults are the config section's: one place says what they are.
impl Default for Limits {
    fn default() -> Self {
        GatewayConfig::default().limits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_fit_the_usual_file_limit() {
        // systemd's default soft limit: 1024 - 64 = 960; 480 for the socket, 240 gateway
        // connections at two descriptors each.
        assert_eq!(fit_to_file_limit(1024, 512, 4096), (480, 240));
        let (a, g) = fit_to_file_limit(1024, 512, 4096);
        assert!(RESERVED_FILES + a as u64 + 2 * g as u64 <= 1024);
        // A generous limit keeps what was configured.
        assert_eq!(fit_to_file_limit(1 << 20, 512, 4096), (512, 4096));
        // A tiny limit still leaves one of each.
        assert_eq!(fit_to_file_limit(10, 512, 4096), (1, 1));
    }
}
