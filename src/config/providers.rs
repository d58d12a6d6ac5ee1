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
    Ok(map)
}
