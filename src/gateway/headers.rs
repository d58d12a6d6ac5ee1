//! Header hygiene at the boundary: find the placeholder, drop it and every other incoming
//! credential, drop hop-by-hop headers both ways; the provider puts on the real credential.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::provider::{GatewayProvider, Lent};

/// Hop-by-hop headers (RFC 9110 §7.6.1, and the legacy `keep-alive`/`proxy-connection`).
fn hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-authenticate"
            | "proxy-authorization"
    )
}

/// Every header that may carry a credential from the sandbox; none goes upstream.
fn credential(name: &str) -> bool {
    matches!(
        name,
        "authorization" | "x-api-key" | "proxy-authorization" | "cookie"
    )
}

/// Removes every header `drop` picks. One pass over the names there are (a handful) finds
/// them; only those present are removed. Removing each candidate name instead hashes it,
/// present or not (measured: ~2,000 instructions a request for the 14 names).
fn remove_where(headers: &mut HeaderMap, drop: impl Fn(&str) -> bool) {
    let mut found: [Option<HeaderName>; 4] = Default::default();
    let mut n = 0;
    for name in headers.keys() {
        if drop(name.as_str()) {
            if n == found.len() {
                // More than a few: the rest are found on the next pass.
                break;
            }
            found[n] = Some(name.clone());
            n += 1;
        }
    }
    for name in found.iter_mut().take(n) {
        if let Some(name) = name.take() {
            headers.remove(name);
        }
    }
    if n == found.len() {
        remove_where(headers, drop);
    }
}

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
    remove_where(headers, hop_by_hop);
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
    if headers.contains_key(header::CONNECTION) {
        remove_connection_named(&mut headers);
    }
    remove_where(&mut headers, |n| {
        hop_by_hop(n) || credential(n) || n == "host"
    });
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

    #[test]
    fn every_hop_by_hop_header_goes_however_many_there_are() {
        let names = [
            "connection",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "te",
            "trailer",
            "upgrade",
            "proxy-authenticate",
            "proxy-authorization",
        ];
        let mut pairs: Vec<(&str, &str)> = names.iter().map(|n| (*n, "x")).collect();
        // Repeated values, and more names than one pass collects.
        pairs.extend([("te", "y"), ("upgrade", "h2c"), ("x-kept", "1")]);
        let mut h = map(&pairs);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "1");
    }
}
