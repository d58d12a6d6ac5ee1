//! Google's Code Assist API as Gemini CLI calls it with "Login with Google" (read from
//! google-gemini/gemini-cli `packages/core/src/code_assist/server.ts`): every call is
//! `{CODE_ASSIST_ENDPOINT}/v1internal:{method}` (`streamGenerateContent?alt=sse` for a
//! prompt), long operations are polled at `GET /v1internal/{operation name}`, and usage is
//! `response.usageMetadata` in each streamed chunk (cumulative) or in a whole answer.
//!
//! The sandbox gets no credentials file: with `GOOGLE_GENAI_USE_GCA=true` and
//! `GOOGLE_CLOUD_ACCESS_TOKEN` the CLI uses that token as is and never refreshes it
//! (`code_assist/oauth2.ts` `initOauthClient`), so the placeholder is all it holds, and
//! `CODE_ASSIST_ENDPOINT` points it at the gateway.

use http::header::{self, HeaderMap, InvalidHeaderValue};
use http::Method;
use serde::{Deserialize, Serialize};

use super::{ErrorKind, GatewayProvider, Lent, NotAdmitted, SandboxValue, Usage};
use crate::credential::Kind;

/// What is forwarded, for the 404 of anything else.
const ROUTES: &str = "only POST /v1internal:<a Code Assist method Gemini CLI calls> and GET /v1internal/operations/<id>";

/// The Code Assist methods Gemini CLI 0.61 calls (`server.ts`, `setup.ts`, `config.ts`).
const METHODS: [&str; 9] = [
    "loadCodeAssist",
    "onboardUser",
    "generateContent",
    "streamGenerateContent",
    "countTokens",
    "retrieveUserQuota",
    "listExperiments",
    "recordCodeAssistMetrics",
    "fetchAdminControls",
];

pub struct Google;

pub static GOOGLE: Google = Google;

/// `usageMetadata`: `promptTokenCount` includes the cached part; thoughts are output.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    thoughts_token_count: u64,
    #[serde(default)]
    cached_content_token_count: u64,
}

impl From<&Metadata> for Usage {
    fn from(m: &Metadata) -> Self {
        let cached = m.cached_content_token_count.min(m.prompt_token_count);
        Usage {
            input_tokens: m.prompt_token_count - cached,
            output_tokens: m
                .candidates_token_count
                .saturating_add(m.thoughts_token_count),
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: cached,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Inner {
    usage_metadata: Option<Metadata>,
}

/// Code Assist wraps the Gemini answer: `{"traceId":…,"response":{…}}`.
#[derive(Deserialize)]
struct Wrapped {
    response: Option<Inner>,
}

impl Wrapped {
    fn usage(body: &[u8]) -> Option<Usage> {
        let w: Self = serde_json::from_slice(body).ok()?;
        Some(Usage::from(&w.response?.usage_metadata?))
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Status<'a>,
}

#[derive(Serialize)]
struct Status<'a> {
    code: u16,
    message: &'a str,
    status: &'static str,
}

fn status(kind: ErrorKind) -> (u16, &'static str) {
    match kind {
        ErrorKind::InvalidRequest => (400, "INVALID_ARGUMENT"),
        ErrorKind::Authentication => (401, "UNAUTHENTICATED"),
        ErrorKind::Permission => (403, "PERMISSION_DENIED"),
        ErrorKind::NotFound => (404, "NOT_FOUND"),
        ErrorKind::RequestTooLarge => (413, "INVALID_ARGUMENT"),
        ErrorKind::RateLimit => (429, "RESOURCE_EXHAUSTED"),
        ErrorKind::Api => (502, "UNAVAILABLE"),
    }
}

fn operation_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

impl GatewayProvider for Google {
    fn name(&self) -> &'static str {
        "Google"
    }

    fn cli(&self) -> &'static str {
        "gemini"
    }

    fn id(&self) -> &'static str {
        "google"
    }

    fn default_upstream(&self) -> &'static str {
        "https://cloudcode-pa.googleapis.com"
    }

    fn sandbox_env(&self, base_url: &str) -> Vec<(&'static str, SandboxValue)> {
        vec![
            ("GOOGLE_GENAI_USE_GCA", SandboxValue::Text("true".into())),
            ("GOOGLE_CLOUD_ACCESS_TOKEN", SandboxValue::Placeholder),
            (
                "CODE_ASSIST_ENDPOINT",
                SandboxValue::Text(base_url.to_owned()),
            ),
        ]
    }

    fn sandbox_passthrough(&self) -> &'static [&'static str] {
        // A Workspace login names its Cloud project; a personal one gets it from
        // `loadCodeAssist` (`setup.ts`).
        &["GOOGLE_CLOUD_PROJECT"]
    }

    fn max_output_tokens(&self, body: &[u8]) -> Option<u64> {
        super::json_u64(body, &["request", "generationConfig", "maxOutputTokens"])
    }

    fn route(&self, method: &Method, path: &str) -> Result<(), &'static str> {
        let call = path
            .strip_prefix("/v1internal:")
            .is_some_and(|m| METHODS.contains(&m));
        let poll = path
            .strip_prefix("/v1internal/operations/")
            .is_some_and(operation_id);
        match *method {
            Method::POST if call => Ok(()),
            Method::GET if poll => Ok(()),
            _ => Err(ROUTES),
        }
    }

    fn admit(&self, kind: Kind, _headers: &HeaderMap, grant: &str) -> Result<(), NotAdmitted> {
        if kind == Kind::Gemini {
            return Ok(());
        }
        Err(NotAdmitted(format!(
            "grant {grant:?} draws on a {} credential, not a Gemini login",
            kind.as_str()
        )))
    }

    fn authorize(&self, headers: &mut HeaderMap, lent: &Lent) -> Result<(), InvalidHeaderValue> {
        headers.insert(header::AUTHORIZATION, super::bearer(&lent.token)?);
        Ok(())
    }

    fn error_body(&self, kind: ErrorKind, message: &str) -> Vec<u8> {
        let (code, status) = status(kind);
        serde_json::to_vec(&Envelope {
            error: Status {
                code,
                message,
                status,
            },
        })
        .unwrap_or_default()
    }

    fn usage_events(&self) -> &'static [&'static str] {
        // Code Assist's SSE has data lines only: the meter searches them for this.
        &["usageMetadata"]
    }

    fn apply_usage_event(&self, data: &[u8], usage: &mut Usage) {
        // Each chunk's metadata counts the whole answer so far: the last one wins.
        if let Some(u) = Wrapped::usage(data) {
            *usage = u;
        }
    }

    fn json_usage(&self, body: &[u8]) -> Option<Usage> {
        Wrapped::usage(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn only_code_assist_methods_and_operations_are_routed() {
        let api = |m: Method, p: &str| GOOGLE.route(&m, p).is_ok();
        assert!(api(Method::POST, "/v1internal:streamGenerateContent"));
        assert!(api(Method::POST, "/v1internal:loadCodeAssist"));
        assert!(api(Method::GET, "/v1internal/operations/abc-1_2"));
        for (m, p) in [
            (Method::GET, "/v1internal:loadCodeAssist"),
            (Method::POST, "/v1internal:deleteEverything"),
            (Method::POST, "/v1internal:streamGenerateContent/x"),
            (Method::GET, "/v1internal/operations/../x"),
            (Method::GET, "/v1internal/operations/"),
            (Method::POST, "/v1beta/models/gemini:generateContent"),
            (Method::POST, "/v1/messages"),
        ] {
            assert!(!api(m.clone(), p), "{m} {p}");
        }
    }

    #[test]
    fn the_hosts_token_goes_on() {
        let mut h = HeaderMap::new();
        let lent = Lent::new(Kind::Gemini, Secret::new("ya29.REAL".into()));
        GOOGLE.authorize(&mut h, &lent).unwrap();
        assert_eq!(h["authorization"], "Bearer ya29.REAL");
        assert!(h["authorization"].is_sensitive());
        assert!(GOOGLE.admit(Kind::Codex, &HeaderMap::new(), "box").is_err());
        assert!(GOOGLE.admit(Kind::Gemini, &HeaderMap::new(), "box").is_ok());
    }

    #[test]
    fn usage_is_the_last_chunks_metadata() {
        let mut u = Usage::default();
        for chunk in [
            r#"{"traceId":"t","response":{"candidates":[],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":1,"totalTokenCount":10}}}"#,
            r#"{"traceId":"t","response":{"candidates":[],"usageMetadata":{"promptTokenCount":9,"cachedContentTokenCount":4,"candidatesTokenCount":6,"thoughtsTokenCount":2,"totalTokenCount":17}}}"#,
        ] {
            GOOGLE.apply_usage_event(chunk.as_bytes(), &mut u);
        }
        assert_eq!(
            (u.input_tokens, u.cache_read_input_tokens, u.output_tokens),
            (5, 4, 8)
        );
        assert_eq!(u.total(), 17);
        assert!(GOOGLE.json_usage(br#"{"response":{}}"#).is_none());
        let body = GOOGLE.error_body(ErrorKind::Authentication, "no");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["status"], "UNAUTHENTICATED");
        assert_eq!(v["error"]["code"], 401);
        assert_eq!(
            GOOGLE.max_output_tokens(br#"{"request":{"generationConfig":{"maxOutputTokens":64}}}"#),
            Some(64)
        );
    }
}
