//! OpenAI's ChatGPT backend as Codex calls it with a ChatGPT login (read from openai/codex
//! `codex-rs/`): model calls are `POST {base}/responses` (and `/responses/compact`), where
//! the base is `https://chatgpt.com/backend-api/codex` for ChatGPT auth
//! (`model-provider-info` `to_api_provider`); the login goes on as `Authorization: Bearer`
//! with the workspace as `ChatGPT-Account-ID` (`codex-api/src/auth.rs`
//! `add_auth_headers_to_header_map`); usage arrives in the SSE `response.completed` event's
//! `response.usage` (`codex-api/src/sse/responses.rs`).
//!
//! The sandbox's Codex is not given a ChatGPT login at all, not even one of placeholders:
//! Codex 0.171 discovers "workspace routing" on its ChatGPT backend and refuses any origin
//! that is not HTTPS ("workspace backend must use an HTTPS origin without credentials",
//! `app-server/.../workspace_routing.rs` `parse_backend_url`), so a plain-HTTP gateway on
//! loopback or a bridge cannot stand in for it. Instead the grant's `config.toml` names a
//! model provider of its own (the gateway) that takes its bearer from a variable: such a
//! provider never refreshes, never opens a WebSocket (custom providers default to
//! `supports_websockets = false`), and needs no `auth.json`. The gateway then puts on the
//! host's real ChatGPT token and account.

use http::header::{self, HeaderMap, HeaderName, HeaderValue, InvalidHeaderValue};
use http::Method;
use serde::{Deserialize, Serialize};

use super::{ErrorKind, GatewayProvider, Lent, NotAdmitted, SandboxValue, Usage};
use crate::credential::Kind;

/// What is forwarded, for the 404 of anything else.
const ROUTES: &str =
    "only POST /backend-api/codex/responses and POST /backend-api/codex/responses/compact";

/// The variable the sandbox's `config.toml` tells Codex to read its bearer from.
pub const TOKEN_VAR: &str = "KEYFERRY_CODEX_TOKEN";

/// The workspace header Codex sends with a ChatGPT login; the host's goes on.
const ACCOUNT: HeaderName = HeaderName::from_static("chatgpt-account-id");

pub struct OpenAi;

pub static OPENAI: OpenAi = OpenAi;

/// `response.usage` of the Responses API: `input_tokens` includes the cached ones.
#[derive(Deserialize, Default)]
struct ApiUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    input_tokens_details: Details,
}

#[derive(Deserialize, Default)]
struct Details {
    #[serde(default)]
    cached_tokens: u64,
}

impl From<&ApiUsage> for Usage {
    fn from(u: &ApiUsage) -> Self {
        let cached = u.input_tokens_details.cached_tokens.min(u.input_tokens);
        Usage {
            input_tokens: u.input_tokens - cached,
            output_tokens: u.output_tokens,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: cached,
        }
    }
}

#[derive(Deserialize)]
struct WithUsage {
    usage: Option<ApiUsage>,
}

#[derive(Deserialize)]
struct Completed {
    response: WithUsage,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    message: &'a str,
    r#type: &'static str,
    code: &'static str,
}

fn error_code(kind: ErrorKind) -> (&'static str, &'static str) {
    match kind {
        ErrorKind::InvalidRequest => ("invalid_request_error", "invalid_request"),
        ErrorKind::Authentication => ("invalid_request_error", "invalid_api_key"),
        ErrorKind::Permission => ("invalid_request_error", "permission_denied"),
        ErrorKind::NotFound => ("invalid_request_error", "not_found"),
        ErrorKind::RequestTooLarge => ("invalid_request_error", "request_too_large"),
        ErrorKind::RateLimit => ("rate_limit_error", "rate_limit_exceeded"),
        ErrorKind::Api => ("server_error", "bad_gateway"),
    }
}

impl GatewayProvider for OpenAi {
    fn name(&self) -> &'static str {
        "OpenAI"
    }

    fn cli(&self) -> &'static str {
        "codex"
    }

    fn id(&self) -> &'static str {
        "openai"
    }

    fn default_upstream(&self) -> &'static str {
        "https://chatgpt.com"
    }

    fn sandbox_env(&self, _base_url: &str) -> Vec<(&'static str, SandboxValue)> {
        vec![(TOKEN_VAR, SandboxValue::Placeholder)]
    }

    fn sandbox_files(&self, base_url: &str) -> Vec<(&'static str, String)> {
        // A TOML basic string: the URL is ours (`http://host:port`), quoted all the same.
        let base = toml_string(&format!("{base_url}/backend-api/codex"));
        vec![(
            "config.toml",
            format!(
                "{}: Codex reaches the API through the Keyferry\n\
                 # gateway, which holds the real login; {TOKEN_VAR} is a placeholder.\n\
                 model_provider = \"keyferry\"\n\n\
                 [model_providers.keyferry]\n\
                 name = \"Keyferry gateway\"\n\
                 base_url = {base}\n\
                 env_key = \"{TOKEN_VAR}\"\n\
                 wire_api = \"responses\"\n",
                super::SANDBOX_MARK
            ),
        )]
    }

    fn sandbox_home_var(&self) -> Option<&'static str> {
        Some("CODEX_HOME")
    }

    fn sandbox_home_login(&self) -> Option<&'static str> {
        Some("auth.json")
    }

    fn max_output_tokens(&self, body: &[u8]) -> Option<u64> {
        super::json_u64(body, &["max_output_tokens"])
    }

    fn route(&self, method: &Method, path: &str) -> Result<(), &'static str> {
        match (method, path) {
            (&Method::POST, "/backend-api/codex/responses")
            | (&Method::POST, "/backend-api/codex/responses/compact") => Ok(()),
            _ => Err(ROUTES),
        }
    }

    fn admit(&self, kind: Kind, _headers: &HeaderMap, grant: &str) -> Result<(), NotAdmitted> {
        if kind == Kind::Codex {
            return Ok(());
        }
        Err(NotAdmitted(format!(
            "grant {grant:?} draws on a {} credential, not a Codex login",
            kind.as_str()
        )))
    }

    fn authorize(&self, headers: &mut HeaderMap, lent: &Lent) -> Result<(), InvalidHeaderValue> {
        headers.insert(header::AUTHORIZATION, super::bearer(&lent.token)?);
        headers.remove(ACCOUNT);
        if let Some(account) = &lent.account {
            headers.insert(ACCOUNT, HeaderValue::try_from(account.as_str())?);
        }
        Ok(())
    }

    fn error_body(&self, kind: ErrorKind, message: &str) -> Vec<u8> {
        let (r#type, code) = error_code(kind);
        serde_json::to_vec(&Envelope {
            error: Inner {
                message,
                r#type,
                code,
            },
        })
        .unwrap_or_default()
    }

    fn usage_events(&self) -> &'static [&'static str] {
        &["response.completed"]
    }

    fn apply_usage_event(&self, data: &[u8], usage: &mut Usage) {
        if let Ok(Completed {
            response: WithUsage { usage: Some(u) },
        }) = serde_json::from_slice(data)
        {
            *usage = Usage::from(&u);
        }
    }

    fn json_usage(&self, body: &[u8]) -> Option<Usage> {
        let u = serde_json::from_slice::<WithUsage>(body).ok()?.usage?;
        Some(Usage::from(&u))
    }
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::header_map as map;
    use crate::secret::Secret;

    #[test]
    fn only_the_responses_paths_are_routed() {
        let api = |m: Method, p: &str| OPENAI.route(&m, p).is_ok();
        assert!(api(Method::POST, "/backend-api/codex/responses"));
        assert!(api(Method::POST, "/backend-api/codex/responses/compact"));
        for (m, p) in [
            (Method::GET, "/backend-api/codex/responses"),
            (Method::POST, "/backend-api/codex/responses/"),
            (Method::POST, "/backend-api/codex/../wham/tasks"),
            (Method::GET, "/backend-api/wham/accounts/check"),
            (Method::POST, "/v1/responses"),
            (Method::POST, "/v1/messages"),
        ] {
            assert!(!api(m.clone(), p), "{m} {p}");
        }
    }

    #[test]
    fn the_hosts_login_and_account_go_on() {
        let mut h = map(&[("chatgpt-account-id", "sandbox-said-this")]);
        let lent = Lent {
            kind: Kind::Codex,
            token: Secret::new("eyJ.REAL.sig".into()),
            account: Some("acct-host".into()),
        };
        OPENAI.authorize(&mut h, &lent).unwrap();
        assert_eq!(h["authorization"], "Bearer eyJ.REAL.sig");
        assert!(h["authorization"].is_sensitive());
        assert_eq!(h.get_all("chatgpt-account-id").iter().count(), 1);
        assert_eq!(h["chatgpt-account-id"], "acct-host");
        assert!(OPENAI
            .admit(Kind::ClaudeOauth, &HeaderMap::new(), "box")
            .is_err());
    }

    #[test]
    fn usage_from_response_completed_and_a_whole_answer() {
        let mut u = Usage::default();
        OPENAI.apply_usage_event(
            br#"{"type":"response.completed","response":{"id":"r","usage":{"input_tokens":11,"input_tokens_details":{"cached_tokens":3},"output_tokens":5,"total_tokens":16}}}"#,
            &mut u,
        );
        assert_eq!(
            (u.input_tokens, u.cache_read_input_tokens, u.output_tokens),
            (8, 3, 5)
        );
        assert_eq!(u.total(), 16);
        let whole = OPENAI
            .json_usage(br#"{"output":[],"usage":{"input_tokens":4,"output_tokens":2}}"#)
            .unwrap();
        assert_eq!(whole.total(), 6);
        assert!(OPENAI.json_usage(b"{}").is_none());
    }

    #[test]
    fn the_sandbox_gets_a_provider_and_a_placeholder_variable() {
        let files = OPENAI.sandbox_files("http://127.0.0.1:7778");
        let (name, text) = &files[0];
        assert_eq!(*name, "config.toml");
        let doc: toml::Value = toml::from_str(text).unwrap();
        assert_eq!(doc["model_provider"].as_str(), Some("keyferry"));
        let p = &doc["model_providers"]["keyferry"];
        assert_eq!(
            p["base_url"].as_str(),
            Some("http://127.0.0.1:7778/backend-api/codex")
        );
        assert_eq!(p["env_key"].as_str(), Some(TOKEN_VAR));
        assert_eq!(
            OPENAI.sandbox_env("x"),
            vec![(TOKEN_VAR, SandboxValue::Placeholder)]
        );
        let body = OPENAI.error_body(ErrorKind::NotFound, "no");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["message"], "no");
    }
}
