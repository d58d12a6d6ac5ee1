//! Anthropic's API as Claude Code calls it: the routes it uses, `Authorization: Bearer`
//! (with the OAuth beta for subscription tokens) or `x-api-key`, the
//! `{"type":"error","error":{…}}` envelope Claude Code shows, and usage from the JSON
//! `usage` of an answer or the SSE `message_start.message.usage` and `message_delta.usage`.

use http::header::{self, HeaderMap, HeaderValue, InvalidHeaderValue};
use http::Method;
use serde::{Deserialize, Serialize};

use super::{ErrorKind, GatewayProvider, Lent, NotAdmitted, SandboxValue, Usage};
use crate::credential::Kind;

/// The beta flag an OAuth (subscription) token needs upstream.
pub const OAUTH_BETA: &str = "oauth-2025-04-20";

/// What is forwarded, for the 404 of anything else.
const ROUTES: &str = "only POST /v1/messages, POST /v1/messages/count_tokens, GET /v1/models";

pub struct Anthropic;

pub static ANTHROPIC: Anthropic = Anthropic;

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

/// Adds `flag` to `anthropic-beta` unless already there; what the client sent stays.
pub fn append_beta(headers: &mut HeaderMap, flag: &'static str) {
    // One pass over the flags as they stand, and one string built: no copy of each flag.
    // A parsed name: a `&str` one is parsed again on every use, each request.
    const BETA: http::HeaderName = http::HeaderName::from_static("anthropic-beta");
    if !headers.contains_key(&BETA) {
        // None yet: the flag alone, with nothing to join or copy (a constant of ours,
        // so `from_static`'s check cannot fail).
        headers.insert(BETA, HeaderValue::from_static(flag));
        return;
    }
    let flags = || {
        headers
            .get_all(&BETA)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|f| !f.is_empty())
    };
    if flags().any(|f| f == flag) {
        return;
    }
    let mut joined = String::new();
    for f in flags().chain([flag]) {
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(f);
    }
    if let Ok(v) = HeaderValue::try_from(joined) {
        headers.insert(BETA, v);
    }
}

fn model_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        && id != "."
        && id != ".."
}

fn error_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest => "invalid_request_error",
        ErrorKind::Authentication => "authentication_error",
        ErrorKind::Permission => "permission_error",
        ErrorKind::NotFound => "not_found_error",
        ErrorKind::RequestTooLarge => "request_too_large",
        ErrorKind::RateLimit => "rate_limit_error",
        ErrorKind::Api => "api_error",
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    r#type: &'static str,
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    r#type: &'static str,
    message: &'a str,
}

/// The API's `usage` object: any field may be absent (a delta names only what changed).
#[derive(Deserialize, Default)]
struct ApiUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

impl ApiUsage {
    /// Fields present here replace `into`'s (the API's counts are cumulative).
    fn apply(&self, into: &mut Usage) {
        let set = |slot: &mut u64, v: Option<u64>| {
            if let Some(v) = v {
                *slot = v;
            }
        };
        set(&mut into.input_tokens, self.input_tokens);
        set(&mut into.output_tokens, self.output_tokens);
        set(
            &mut into.cache_creation_input_tokens,
            self.cache_creation_input_tokens,
        );
        set(
            &mut into.cache_read_input_tokens,
            self.cache_read_input_tokens,
        );
    }
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    usage: ApiUsage,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event {
    MessageStart {
        message: Message,
    },
    MessageDelta {
        #[serde(default)]
        usage: ApiUsage,
    },
    #[serde(other)]
    Other,
}

impl GatewayProvider for Anthropic {
    fn name(&self) -> &'static str {
        "Anthropic"
    }

    fn cli(&self) -> &'static str {
        "claude"
    }

    fn id(&self) -> &'static str {
        "anthropic"
    }

    fn default_upstream(&self) -> &'static str {
        "https://api.anthropic.com"
    }

    fn sandbox_env(&self, base_url: &str) -> Vec<(&'static str, SandboxValue)> {
        vec![
            (
                "ANTHROPIC_BASE_URL",
                SandboxValue::Text(base_url.to_owned()),
            ),
            ("ANTHROPIC_AUTH_TOKEN", SandboxValue::Placeholder),
        ]
    }

    fn max_output_tokens(&self, body: &[u8]) -> Option<u64> {
        super::json_u64(body, &["max_tokens"])
    }

    fn route(&self, method: &Method, path: &str) -> Result<(), &'static str> {
        match (method, path) {
            (&Method::POST, "/v1/messages" | "/v1/messages/count_tokens")
            | (&Method::GET, "/v1/models") => Ok(()),
            (&Method::GET, p) if p.strip_prefix("/v1/models/").is_some_and(model_id) => Ok(()),
            _ => Err(ROUTES),
        }
    }

    fn admit(&self, kind: Kind, headers: &HeaderMap, grant: &str) -> Result<(), NotAdmitted> {
        let subscription = Scheme::for_kind(kind).is_some_and(Scheme::is_subscription);
        if subscription && !is_claude_code(headers) {
            return Err(NotAdmitted(format!(
                "grant {grant:?} draws on a Claude subscription credential, which is meant for \
                 Claude Code only; this request does not identify as Claude Code \
                 (user-agent claude-cli/… or x-app: cli)"
            )));
        }
        Ok(())
    }

    fn authorize(&self, headers: &mut HeaderMap, lent: &Lent) -> Result<(), InvalidHeaderValue> {
        let token = &lent.token;
        // Kinds of other providers never reach here (`for_kind`); a bearer is the safe guess.
        match Scheme::for_kind(lent.kind).unwrap_or(Scheme::Bearer { oauth: false }) {
            Scheme::Bearer { oauth } => {
                headers.insert(header::AUTHORIZATION, super::bearer(token)?);
                if oauth {
                    append_beta(headers, OAUTH_BETA);
                }
            }
            Scheme::ApiKey => {
                let mut v = HeaderValue::try_from(token.expose())?;
                v.set_sensitive(true);
                headers.insert("x-api-key", v);
            }
        }
        Ok(())
    }

    fn error_body(&self, kind: ErrorKind, message: &str) -> Vec<u8> {
        serde_json::to_vec(&Envelope {
            r#type: "error",
            error: Inner {
                r#type: error_type(kind),
                message,
            },
        })
        .unwrap_or_default()
    }

    fn usage_events(&self) -> &'static [&'static str] {
        &["message_start", "message_delta"]
    }

    fn apply_usage_event(&self, data: &[u8], usage: &mut Usage) {
        match serde_json::from_slice::<Event>(data) {
            Ok(Event::MessageStart { message }) => message.usage.apply(usage),
            Ok(Event::MessageDelta { usage: u }) => u.apply(usage),
            Ok(Event::Other) | Err(_) => {}
        }
    }

    fn json_usage(&self, body: &[u8]) -> Option<Usage> {
        let m = serde_json::from_slice::<Message>(body).ok()?;
        let mut u = Usage::default();
        m.usage.apply(&mut u);
        Some(u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::provider::header_map as map;
    use crate::secret::Secret;

    fn lent(kind: Kind, token: &str) -> Lent {
        Lent::new(kind, Secret::new(token.into()))
    }

    #[test]
    fn only_claude_codes_paths_are_routed() {
        let api = |m: Method, p: &str| ANTHROPIC.route(&m, p).is_ok();
        assert!(api(Method::POST, "/v1/messages"));
        assert!(api(Method::POST, "/v1/messages/count_tokens"));
        assert!(api(Method::GET, "/v1/models"));
        assert!(api(Method::GET, "/v1/models/claude-sonnet-4-5"));
        for (m, p) in [
            (Method::GET, "/v1/messages"),
            (Method::POST, "/v1/messages/"),
            (Method::POST, "/v1/messages/../files"),
            (Method::POST, "/v1/files"),
            (Method::GET, "/v1/models/.."),
            (Method::GET, "/v1/models/a/b"),
            (Method::POST, "/v1/complete"),
            (Method::GET, "/"),
            (Method::HEAD, "/"),
            (Method::DELETE, "/v1/messages"),
        ] {
            assert!(!api(m.clone(), p), "{m} {p}");
        }
    }

    #[test]
    fn the_real_credential_goes_on_by_kind() {
        let mut h = map(&[("anthropic-beta", "claude-code-20250219,fine-grained")]);
        ANTHROPIC
            .authorize(&mut h, &lent(Kind::ClaudeOauth, "sk-ant-oat01-REAL"))
            .unwrap();
        assert_eq!(h["authorization"], "Bearer sk-ant-oat01-REAL");
        assert!(h["authorization"].is_sensitive());
        assert_eq!(
            h["anthropic-beta"],
            "claude-code-20250219,fine-grained,oauth-2025-04-20"
        );
        let mut k = map(&[("anthropic-beta", "claude-code-20250219")]);
        ANTHROPIC
            .authorize(&mut k, &lent(Kind::ApiKey, "sk-ant-api03-K"))
            .unwrap();
        assert_eq!(k["x-api-key"], "sk-ant-api03-K");
        assert!(!k.contains_key("authorization"));
        assert_eq!(k["anthropic-beta"], "claude-code-20250219");
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
    fn subscriptions_serve_claude_code_only() {
        assert!(is_claude_code(&map(&[(
            "user-agent",
            "claude-cli/2.1.197 (external, sdk-cli)"
        )])));
        assert!(is_claude_code(&map(&[("x-app", "cli")])));
        assert!(!is_claude_code(&map(&[("user-agent", "curl/8.0")])));
        assert!(!is_claude_code(&map(&[("user-agent", "Bun/1.4.0")])));
        let curl = map(&[("user-agent", "curl/8.0")]);
        assert!(ANTHROPIC.admit(Kind::SetupToken, &curl, "box").is_err());
        assert!(ANTHROPIC.admit(Kind::ApiKey, &curl, "box").is_ok());
        assert_eq!(Scheme::for_kind(Kind::Codex), None);
    }

    #[test]
    fn refusals_are_anthropic_shaped() {
        let body = ANTHROPIC.error_body(ErrorKind::RateLimit, "slow \"down\"");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"error","error":{"type":"rate_limit_error","message":"slow \"down\""}})
        );
    }

    #[test]
    fn usage_from_events_and_a_whole_answer() {
        let mut u = Usage::default();
        ANTHROPIC.apply_usage_event(
            br#"{"type":"message_start","message":{"usage":{"input_tokens":25,"output_tokens":1}}}"#,
            &mut u,
        );
        ANTHROPIC.apply_usage_event(
            br#"{"type":"message_delta","usage":{"output_tokens":42}}"#,
            &mut u,
        );
        assert_eq!((u.input_tokens, u.output_tokens), (25, 42));
        let whole = ANTHROPIC
            .json_usage(br#"{"usage":{"input_tokens":3,"cache_read_input_tokens":2}}"#)
            .unwrap();
        assert_eq!((whole.input_tokens, whole.cache_read_input_tokens), (3, 2));
        assert!(ANTHROPIC.json_usage(b"not json").is_none());
    }
}
