//! What the `[gateway]` configuration section turns into: listeners, limits and the
//! upstream. The section itself (plain values) lives in `config::gateway`.

use std::path::Path;
use std::time::Duration;

pub use crate::config::GatewayConfig;
use crate::config::ProviderConfig;
use crate::provider::{self, GatewayProvider};

use super::listen::{self, ListenError, ListenSpec};
use super::Limits;
use crate::http::{HttpError, Upstream};

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

    /// How often an unbound address is retried (at least 50 ms).
    #[must_use]
    pub fn listen_retry(&self) -> Duration {
        Duration::from_millis(self.listen_retry_ms.max(50))
    }

    #[must_use]
    pub fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections.max(1),
            max_body_bytes: self.max_body_bytes,
            idle_timeout: Duration::from_secs(self.idle_timeout_secs.max(1)),
            header_timeout: Duration::from_secs(self.header_timeout_secs.max(1)),
            first_byte_timeout: Duration::from_secs(self.first_byte_timeout_secs.max(1)),
            refusal_window: Duration::from_secs(self.refusal_audit_secs.clamp(1, 3600)),
        }
    }

    /// The upstream and its client.
    ///
    /// # Errors
    /// The URL breaks the loopback rule or the CA file is unusable.
    pub fn upstream(&self) -> Result<Upstream, HttpError> {
        Upstream::new(&self.upstream, self.extra_ca_file.as_deref())
    }

    /// Every provider's upstream: its `[providers.ID] upstream`, else (Anthropic) this
    /// section's `upstream`, else the provider's own; the CA file likewise.
    ///
    /// # Errors
    /// A URL breaks the loopback rule or a CA file is unusable, naming the provider.
    pub fn upstreams(
        &self,
        tables: &std::collections::BTreeMap<String, ProviderConfig>,
    ) -> Result<Upstreams, HttpError> {
        let default = ProviderConfig::default();
        let mut by_id = Vec::new();
        for p in provider::ALL {
            let table = tables.get(p.id()).unwrap_or(&default);
            let anthropic = p.id() == provider::anthropic::ANTHROPIC.id();
            let url = match &table.upstream {
                Some(u) => u.as_str(),
                None if anthropic => self.upstream.as_str(),
                None => p.default_upstream(),
            };
            let ca = table
                .extra_ca_file
                .as_deref()
                .or(self.extra_ca_file.as_deref());
            by_id.push((p.id(), Upstream::new(url, ca)?));
        }
        Ok(Upstreams(by_id))
    }
}

/// Where each provider's requests go.
pub struct Upstreams(Vec<(&'static str, Upstream)>);

impl Upstreams {
    #[must_use]
    pub fn get(&self, provider: &dyn GatewayProvider) -> Option<&Upstream> {
        self.0
            .iter()
            .find(|(id, _)| *id == provider.id())
            .map(|(_, u)| u)
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
        let ups = c.upstreams(&Default::default()).unwrap();
        let at = |id: &str| {
            ups.get(provider::by_id(id).unwrap())
                .unwrap()
                .base
                .to_string()
        };
        assert_eq!(at("anthropic"), "http://127.0.0.1:9/");
        assert_eq!(at("openai"), "https://chatgpt.com/");
        assert_eq!(at("google"), "https://cloudcode-pa.googleapis.com/");
        let tables = toml::from_str::<crate::config::Config>(
            "[providers.openai]\nupstream = \"http://127.0.0.1:10/x\"\n",
        )
        .unwrap()
        .providers;
        let ups = c.upstreams(&tables).unwrap();
        assert_eq!(
            ups.get(&provider::openai::OPENAI).unwrap().base.to_string(),
            "http://127.0.0.1:10/x"
        );
        let bad: GatewayConfig = toml::from_str("upstream = \"http://example.com\"").unwrap();
        assert!(matches!(
            bad.upstream().unwrap_err(),
            HttpError::PlainHttpNotLoopback { .. }
        ));
    }
}
