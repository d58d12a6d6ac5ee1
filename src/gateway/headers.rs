//! Header hygiene at the boundary: find the placeholder, drop it and every other incoming
//! credential, drop hop-by-hop headers both ways, and put on the real credential.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::credential::Kind;
use crate::secret::Secret;

/// The beta flag an OAuth (subscription) token needs upstream.
pub const OAUTH_BETA: &str = "oauth-2025-04-20";

const HOP_BY_HOP: [&str; 9] = [
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

/// Every header that may carry a credential from the sandbox; none goes upstream.
const CREDENTIALS: [&str; 4] = [
    "authorization",
    "x-api-key",
    "proxy-authorization",
    "cookie",
];

/// How a credential kind goes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `Authorization: Bearer`, with the OAuth beta when `oauth`.
    Bearer { oauth: bool },
    /// `x-api-key`.
    ApiKey,
}

impl Scheme {
    /// `None` for kinds the Anthropic API does not take (Codex, Gemini).
    #[must_use]
    pub fn for_kind(kind: Kind) -> Option<Self> {
        match kind {
            Kind::ClaudeOauth | Kind::SetupToken => Some(Self::Bearer { oauth: true }),
            Kind::ApiKey => Some(Self::ApiKey),
            // A token of unknown shape is what ANTHROPIC_AUTH_TOKEN carries: a bearer.
            Kind::Opaque => Some(Self::Bearer { oauth: false }),
            Kind::Codex | Kind::Gemini => None,
        }
    }

    /// Subscription tokens are meant for Claude Code alone.
    #[must_use]
    pub fn is_subscription(self) -> bool {
        self == Self::Bearer { oauth: true }
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

/// Whether the request identifies as Claude Code (`user-agent: claude-cli/…` or
/// `x-app: cli`), as the real CLI sends on every API call.
#[must_use]
pub fn is_claude_code(headers: &HeaderMap) -> bool {
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let app = headers.get("x-app").and_then(|v| v.to_str().ok());
    ua.is_some_and(|u| u.starts_with("claude-cli/")) || app == Some("cli")
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
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
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The upstream request's headers: the client's, minus hop-by-hop, credentials and
/// `Host` (hyper sets it from the URI), plus the real credential.
///
/// `accept-encoding` becomes `identity` so usage can be read from the answer.
///
/// # Errors
/// The token holds bytes a header cannot carry.
pub fn outbound(
    mut headers: HeaderMap,
    scheme: Scheme,
    token: &Secret,
) -> Result<HeaderMap, header::InvalidHeaderValue> {
    strip_hop_by_hop(&mut headers);
    for name in CREDENTIALS {
        headers.remove(name);
    }
    headers.remove(header::HOST);
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    match scheme {
        Scheme::Bearer { oauth } => {
            let mut v = HeaderValue::try_from(format!("Bearer {}", token.expose()))?;
            v.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, v);
            if oauth {
                append_beta(&mut headers, OAUTH_BETA);
            }
        }
        Scheme::ApiKey => {
            let mut v = HeaderValue::try_from(token.expose())?;
            v.set_sensitive(true);
            headers.insert("x-api-key", v);
        }
    }
    Ok(headers)
}

/// Adds `flag` to `anthropic-beta` unless already there; what the client sent stays.
pub fn append_beta(headers: &mut HeaderMap, flag: &str) {
    let present: Vec<String> = headers
        .get_all("anthropic-beta")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|f| f.trim().to_owned())
        .filter(|f| !f.is_empty())
        .collect();
    if present.iter().any(|f| f == flag) {
        return;
    }
    let joined = present
        .iter()
        .map(String::as_str)
        .chain([flag])
        .collect::<Vec<_>>()
        .join(",");
    if let Ok(v) = HeaderValue::try_from(joined) {
        headers.insert("anthropic-beta", v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

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
        let token = Secret::new("sk-ant-oat01-REAL".into());
        let out = outbound(h.clone(), Scheme::Bearer { oauth: true }, &token).unwrap();
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

        let key = outbound(h, Scheme::ApiKey, &Secret::new("sk-ant-api03-K".into())).unwrap();
        assert_eq!(key["x-api-key"], "sk-ant-api03-K");
        assert!(!key.contains_key("authorization"));
        assert_eq!(key["anthropic-beta"], "claude-code-20250219,fine-grained");
    }

    #[test]
    fn beta_is_appended_once() {
        let mut h = map(&[("anthropic-beta", "a, oauth-2025-04-20")]);
        append_beta(&mut h, OAUTH_BETA);
        assert_eq!(h["anthropic-beta"], "a, oauth-2025-04-20");
        let mut h = map(&[("anthropic-beta", "a"), ("anthropic-beta", "b")]);
        append_beta(&mut h, OAUTH_BETA);
        assert_eq!(h.get_all("anthropic-beta").iter().count(), 1);
        assert_eq!(h["anthropic-beta"], "a,b,oauth-2025-04-20");
        let mut h = HeaderMap::new();
        append_beta(&mut h, OAUTH_BETA);
        assert_eq!(h["anthropic-beta"], OAUTH_BETA);
    }

    #[test]
    fn claude_code_is_recognised_by_its_headers() {
        assert!(is_claude_code(&map(&[(
            "user-agent",
            "claude-cli/2.1.197 (external, sdk-cli)"
        )])));
        assert!(is_claude_code(&map(&[("x-app", "cli")])));
        assert!(!is_claude_code(&map(&[("user-agent", "curl/8.0")])));
        assert!(!is_claude_code(&map(&[("user-agent", "Bun/1.4.0")])));
        assert_eq!(Scheme::for_kind(Kind::Codex), None);
        assert!(Scheme::for_kind(Kind::SetupToken)
            .unwrap()
            .is_subscription());
        assert!(!Scheme::for_kind(Kind::ApiKey).unwrap().is_subscription());
    }
}
