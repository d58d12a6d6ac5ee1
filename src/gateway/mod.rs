//! The gateway: a loopback (or bridge, or Unix-socket) reverse proxy to the Anthropic API
//! that swaps a grant's placeholder for the credential's current token, so the token
//! never enters a sandbox. See `docs/gateway.md`.
//!
//! The agent plugs in through [`GatewayContext`]: verify a placeholder, hand over the
//! current token, record a finished request, and name the upstream.

use std::time::Duration;

use serde::Serialize;

use crate::credential::Kind;
use crate::secret::Secret;

pub mod body;
pub mod config;
pub mod grants;
pub mod grants_file;
pub mod headers;
pub mod listen;
pub mod memory;
pub mod placeholder;
pub mod proxy;
pub mod reply;
pub mod route;
pub mod server;
pub mod usage;

pub use crate::http::{HttpError, Upstream};
pub use config::GatewayConfig;
pub use grants::{Denial, Grant, GrantError, Grants, NewGrant};
pub use grants_file::{GrantsFile, GrantsFileError};
pub use listen::{ListenError, ListenSpec, Listener};
pub use memory::MemoryContext;
pub use server::run;
pub use usage::Usage;

/// What the gateway needs to know about the grant a request came with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantView {
    pub name: String,
    /// The credential whose token the request goes out with.
    pub credential: String,
    /// Requests of this grant allowed in flight at once.
    pub max_concurrent: Option<u32>,
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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
    fn token(&self, credential: &str) -> Result<(Kind, Secret), TokenError>;

    /// A request finished or was refused: meter it and audit it.
    fn record(&self, record: RequestRecord);

    /// Where requests go.
    fn upstream(&self) -> &Upstream;
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
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_body_bytes: 32 << 20,
            idle_timeout: Duration::from_secs(600),
            header_timeout: Duration::from_secs(10),
        }
    }
}
