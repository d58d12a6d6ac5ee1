//! Header hygiene at the boundary: find the placeholder, drop it and every other incoming
//! credential, drop hop-by-hop headers both ways; the provider puts on the real credential.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::provider::{GatewayProvider, Lent};

// Names, not strings: `HeaderMap::remove("te")` parses the name on every call, twice a
// request for each of these (measured: ~5,000 instructions a request).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

/// Every header that may carry a credential from the sandbox; none goes upstream.
const CREDENTIALS: [HeaderName; 4] = [
    header::AUTHORIZATION,
    HeaderName::from_static("x-api-key"),
    header::PROXY_AUTHORIZATION,
    header::COOKIE,
];

/// The placeholder the client sent: `Authorization: Bearer …`, else `x-api-key`.
#[must_use]
pub fn placeholder(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let key = || {
        headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    bearer.or_else(key).filter(|p| !p.is_empty())
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages have no `Connection` header: then nothing is collected or parsed.
    if headers.contains_key(header::CONNECTION) {
        remove_connection_named(headers);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The headers a `Connection` header names (`Connection: keep-alive, x-drop-me`).
fn remove_connection_named(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
}

/// The upstream request's headers: the client's, minus hop-by-hop, credentials and
/// `Host` (hyper sets it from the URI), plus the real credential as `provider` puts it.
///
/// `accept-encoding` becomes `identity` so usage can be read from the answer.
///
/// # Errors
/// The token holds bytes a header cannot carry.
pub fn outbound(
    mut headers: HeaderMap,
    provider: &dyn GatewayProvider,
    lent: &Lent,
) -> Result<HeaderMap, header::InvalidHeaderValue> {
    strip_hop_by_hop(&mut headers);
    for name in &CREDENTIALS {
        headers.remove(name);
    }
    headers.remove(header::HOST);
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    provider.authorize(&mut headers, lent)?;
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::Kind;
    use crate::provider::anthropic::ANTHROPIC;
    use crate::secret::Secret;

    use crate::provider::header_map as map;

    #[test]
    fn placeholder_from_bearer_or_api_key() {
        assert_eq!(
            placeholder(&map(&[("authorization", "Bearer kfg_a")])),
            Some("kfg_a")
        );
        assert_eq!(placeholder(&map(&[("x-api-key", "kfg_b")])), Some("kfg_b"));
        assert_eq!(placeholder(&map(&[("authorization", "Basic eA==")])), None);
        assert_eq!(placeholder(&map(&[("authorization", "Bearer ")])), None);
        assert_eq!(placeholder(&HeaderMap::new()), None);
    }

    #[test]
    fn outbound_swaps_credentials_and_strips_hop_by_hop() {
        let h = map(&[
            ("authorization", "Bearer kfg_secret"),
            ("x-api-key", "kfg_secret"),
            ("cookie", "s=1"),
            ("proxy-authorization", "Basic x"),
            ("host", "sandbox.local"),
            ("connection", "keep-alive, x-drop-me"),
            ("x-drop-me", "1"),
            ("te", "trailers"),
            ("anthropic-beta", "claude-code-20250219,fine-grained"),
            ("anthropic-version", "2023-06-01"),
            ("x-claude-code-session-id", "abc"),
            ("accept-encoding", "gzip, br"),
        ]);
        let token = Lent::new(Kind::ClaudeOauth, Secret::new("sk-ant-oat01-REAL".into()));
        let out = outbound(h.clone(), &ANTHROPIC, &token).unwrap();
        assert_eq!(out["authorization"], "Bearer sk-ant-oat01-REAL");
        assert!(out["authorization"].is_sensitive());
        for gone in [
            "x-api-key",
            "cookie",
            "proxy-authorization",
            "host",
            "connection",
            "x-drop-me",
            "te",
        ] {
            assert!(!out.contains_key(gone), "{gone}");
        }
        assert_eq!(
            out["anthropic-beta"],
            "claude-code-20250219,fine-grained,oauth-2025-04-20"
        );
        assert_eq!(out["anthropic-version"], "2023-06-01");
        assert_eq!(out["x-claude-code-session-id"], "abc");
        assert_eq!(out["accept-encoding"], "identity");

        let key = outbound(
            h,
            &ANTHROPIC,
            &Lent::new(Kind::ApiKey, Secret::new("sk-ant-api03-K".into())),
        )
        .unwrap();
        assert_eq!(key["x-api-key"], "sk-ant-api03-K");
        assert!(!key.contains_key("authorization"));
        assert_eq!(key["anthropic-beta"], "claude-code-20250219,fine-grained");
    }
}
