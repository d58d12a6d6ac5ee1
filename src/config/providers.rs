//! `[providers.ID]`: one API provider's endpoints (`anthropic`, `openai`, `google`), as
//! written in the config file. What they turn into (upstream clients) is the gateway's
//! business; an id no provider has is refused when the file is read.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

/// One `[providers.ID]` table. Every key is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderConfig {
    /// Where the gateway sends this provider's requests: https anywhere, plain http only
    /// to loopback. For `anthropic`, `[gateway] upstream` still works.
    pub upstream: Option<String>,
    /// A PEM file of extra trusted CAs for that upstream (else `[gateway] extra_ca_file`).
    pub extra_ca_file: Option<PathBuf>,
    /// Where the refresher trades this provider's refresh tokens (`openai`, `google`; for
    /// `anthropic` it is `[oauth] token_url`). Same URL rule as `upstream`; the endpoint is
    /// trusted with the webpki roots plus `[oauth] extra_ca_file`.
    pub token_url: Option<String>,
    /// Where a login's subscription figures are asked (`openai`: Codex's `/wham/usage`; for
    /// `anthropic` it is `[oauth] usage_url`; Gemini CLI logins have none).
    pub usage_url: Option<String>,
}

/// The tables, each id checked against the providers Keyferry has.
pub(super) fn tables<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, ProviderConfig>, D::Error> {
    let map = BTreeMap::<String, ProviderConfig>::deserialize(d)?;
    if let Some(bad) = map.keys().find(|k| crate::provider::by_id(k).is_none()) {
        return Err(serde::de::Error::custom(format!(
            "no provider named {bad:?} (known: {})",
            crate::provider::ids()
        )));
    }
    // Anthropic's refresher endpoint has lived in `[oauth]` since before providers had
    // tables; two places for one URL would leave one of them silently ignored.
    if map.get("anthropic").is_some_and(|p| p.token_url.is_some()) {
        return Err(serde::de::Error::custom(
            "[providers.anthropic] has no token_url: Anthropic's is `[oauth] token_url`",
        ));
    }
    if map.get("anthropic").is_some_and(|p| p.usage_url.is_some()) {
        return Err(serde::de::Error::custom(
            "[providers.anthropic] has no usage_url: Anthropic's is `[oauth] usage_url`",
        ));
    }
    if map.get("google").is_some_and(|p| p.usage_url.is_some()) {
        return Err(serde::de::Error::custom(
            "[providers.google] has no usage_url: Gemini CLI logins have no usage figures",
        ));
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn token_urls_per_provider_and_none_for_anthropic() {
        let c = Config::parse(
            "[providers.openai]\ntoken_url = \"http://127.0.0.1:9/oauth/token\"\n[providers.google]\ntoken_url = \"https://g.example/token\"\n",
            std::path::Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(
            c.providers["openai"].token_url.as_deref(),
            Some("http://127.0.0.1:9/oauth/token")
        );
        assert_eq!(
            c.providers["google"].token_url.as_deref(),
            Some("https://g.example/token")
        );
        let err = Config::parse(
            "[providers.anthropic]\ntoken_url = \"https://x/token\"\n",
            std::path::Path::new("c.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("[oauth] token_url"), "{err}");
        let c = Config::parse(
            "[providers.openai]\nusage_url = \"http://127.0.0.1:9/backend-api/wham/usage\"\n",
            std::path::Path::new("c.toml"),
        )
        .unwrap();
        assert!(c.providers["openai"].usage_url.is_some());
        for bad in ["anthropic", "google"] {
            let err = Config::parse(
                &format!("[providers.{bad}]\nusage_url = \"https://x/u\"\n"),
                std::path::Path::new("c.toml"),
            )
            .unwrap_err();
            assert!(err.to_string().contains("usage_url"), "{err}");
        }
    }
}
