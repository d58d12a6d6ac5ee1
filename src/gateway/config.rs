//! The `[gateway]` configuration section and what it turns into: listeners, limits and
//! the upstream.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::listen::{self, ListenError, ListenSpec, Listener};
use super::Limits;
use crate::http::{HttpError, Upstream};

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
    pub max_connections: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        let l = Limits::default();
        Self {
            listen: vec!["127.0.0.1:7778".to_owned()],
            unix_socket: true,
            allow_unspecified: false,
            upstream: "https://api.anthropic.com".to_owned(),
            extra_ca_file: None,
            max_body_bytes: l.max_body_bytes,
            idle_timeout_secs: l.idle_timeout.as_secs(),
            header_timeout_secs: l.header_timeout.as_secs(),
            max_connections: l.max_connections,
        }
    }
}

impl GatewayConfig {
    /// Every place to listen, the Unix socket (if on) in `agent_socket_dir`.
    ///
    /// # Errors
    /// A `listen` entry does not parse.
    pub fn specs(&self, agent_socket_dir: &Path) -> Result<Vec<ListenSpec>, ListenError> {
        let mut specs = self
            .listen
            .iter()
            .map(|s| s.parse())
            .collect::<Result<Vec<ListenSpec>, _>>()?;
        if self.unix_socket {
            specs.push(ListenSpec::Unix(listen::default_socket(agent_socket_dir)));
        }
        Ok(specs)
    }

    /// Binds every listener (all or none).
    ///
    /// # Errors
    /// See [`Self::specs`] and [`Listener::bind`].
    pub async fn bind(&self, agent_socket_dir: &Path) -> Result<Vec<Listener>, ListenError> {
        let mut out = Vec::new();
        for spec in self.specs(agent_socket_dir)? {
            out.push(Listener::bind(&spec, self.allow_unspecified).await?);
        }
        Ok(out)
    }

    #[must_use]
    pub fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections.max(1),
            max_body_bytes: self.max_body_bytes,
            idle_timeout: Duration::from_secs(self.idle_timeout_secs.max(1)),
            header_timeout: Duration::from_secs(self.header_timeout_secs.max(1)),
        }
    }

    /// The upstream and its client.
    ///
    /// # Errors
    /// The URL breaks the loopback rule or the CA file is unusable.
    pub fn upstream(&self) -> Result<Upstream, HttpError> {
        Upstream::new(&self.upstream, self.extra_ca_file.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_parses_with_defaults_and_rejects_typos() {
        let c: GatewayConfig = toml::from_str("").unwrap();
        assert_eq!(c, GatewayConfig::default());
        assert_eq!(c.specs(Path::new("/run/kf")).unwrap().len(), 2);
        let c: GatewayConfig = toml::from_str(
            "listen = [\"172.17.0.1:7778\"]\nunix_socket = false\nupstream = \"http://127.0.0.1:9\"\nidle_timeout_secs = 5\n",
        )
        .unwrap();
        assert_eq!(
            c.specs(Path::new("/x")).unwrap(),
            vec![ListenSpec::Tcp("172.17.0.1:7778".parse().unwrap())]
        );
        assert_eq!(c.limits().idle_timeout, Duration::from_secs(5));
        assert!(toml::from_str::<GatewayConfig>("listn = []").is_err());
        let bad: GatewayConfig = toml::from_str("upstream = \"http://example.com\"").unwrap();
        assert!(matches!(
            bad.upstream().unwrap_err(),
            HttpError::PlainHttpNotLoopback { .. }
        ));
    }
}
