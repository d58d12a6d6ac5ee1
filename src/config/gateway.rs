//! `[gateway]` as written in the config file: plain values, parsed once. What they turn
//! into (listeners, limits, the upstream) is the gateway's business (`gateway::config`), so
//! this layer never depends on the one above it.

use std::path::PathBuf;

use serde::Deserialize;

/// `[gateway]` in the config file. Every key is optional.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// TCP addresses (`127.0.0.1:7778`, a bridge address) and `unix:/path` sockets.
    pub listen: Vec<String>,
    /// Also listen on `gateway.sock` next to the agent's socket.
    pub unix_socket: bool,
    /// Permit `0.0.0.0` / `[::]` in `listen` (every interface: rarely what you want).
    pub allow_unspecified: bool,
    /// Where requests go: https anywhere, plain http only to loopback.
    pub upstream: String,
    /// A PEM file of extra trusted CAs (corporate proxy, tests), on top of Mozilla's.
    pub extra_ca_file: Option<PathBuf>,
    pub max_body_bytes: u64,
    pub idle_timeout_secs: u64,
    pub header_timeout_secs: u64,
    /// Seconds a new connection may stay silent before it is closed.
    pub first_byte_timeout_secs: u64,
    /// Seconds over which refusals of clients that proved nothing (no grant opened, silent
    /// connections) are summed into one audit entry per peer.
    pub refusal_audit_secs: u64,
    pub max_connections: usize,
    /// How often an address that cannot be bound yet is retried (and a bound one checked
    /// for having gone away), in milliseconds.
    pub listen_retry_ms: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: vec!["127.0.0.1:7778".to_owned()],
            unix_socket: true,
            allow_unspecified: false,
            upstream: "https://api.anthropic.com".to_owned(),
            extra_ca_file: None,
            max_body_bytes: 32 << 20,
            idle_timeout_secs: 600,
            header_timeout_secs: 10,
            first_byte_timeout_secs: 10,
            refusal_audit_secs: 60,
            max_connections: 4096,
            listen_retry_ms: 2000,
        }
    }
}
