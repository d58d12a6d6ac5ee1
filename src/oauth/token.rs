//! The OAuth token call: trade a refresh token for a new access token, and classify failures.
//!
//! Endpoint facts (re-check per Claude Code version):
//! - `POST /v1/oauth/token`, JSON `{"grant_type":"refresh_token","refresh_token":…,
//!   "client_id":"9d1c250a-e61b-44d9-88ed-5944d1962f5e","scope":"…"}`; the answer has
//!   `access_token`, `refresh_token` (may be omitted: the old one stays valid), `expires_in`
//!   (seconds), `scope` (space separated). Sources: Dev-Jahn/ccbroker
//!   docs/design/v0.4-token-lifecycle.md (CC10: "refresh response may omit refresh_token and the
//!   old one is kept"; F1: a refresh revokes the previous access token), and the installed
//!   Claude Code 2.1.197 itself (`Bte()` in its bundle: same body, `scope` = the stored scopes
//!   joined by spaces, `client_id` = the stored `clientId` when present, `refresh_token:c=e`
//!   default, `expiresAt = now + expires_in*1000`).
//! - Host: `https://platform.claude.com/v1/oauth/token`, where the installed Claude Code
//!   2.1.197 posts (the string is in its binary, twice, and no other token URL is): Keyferry's
//!   default is what the CLI it refreshes for uses. `[oauth] token_url` changes it (the
//!   console host sits behind a browser challenge for non-browser clients, DESIGN.md).
//! - Failure classes: Claude Code treats a 400/401 whose `error` (a string, or `error.type`) is
//!   `invalid_grant` as a dead refresh token, and 400 `invalid_client`, `invalid_scope`,
//!   `unauthorized_client` as expected permanent failures (`Cxe()`/`m2r()` in the bundle).
//!   Refresh races that end in `invalid_grant`: anthropics/claude-code #24317, #25609, #43392.

use std::time::Duration;

use hyper::Method;
use serde::{Deserialize, Serialize};

use super::transport::{HttpClient, TransportError};
use crate::domain::ErrorCode;
use crate::secret::Secret;

pub const CLAUDE_CLIENT_ID: &str = "9d1c250a-e61b-44d9-88ed-5944d1962f5e";
pub const DEFAULT_TOKEN_URL: &str = "https://platform.claude.com/v1/oauth/token";

/// `error` codes after which retrying the same refresh token cannot succeed.
const PERMANENT_CODES: [&str; 4] = [
    "invalid_grant",
    "invalid_client",
    "invalid_scope",
    "unauthorized_client",
];

/// What to ask for besides the refresh token (from the stored login).
#[derive(Debug, Clone, Default)]
pub struct Grant {
    /// The stored `clientId`, or [`CLAUDE_CLIENT_ID`] when `None`.
    pub client_id: Option<String>,
    /// The stored scopes; omitted from the request when empty.
    pub scopes: Vec<String>,
}

/// A successful refresh.
#[derive(Debug)]
pub struct Refreshed {
    pub access_token: Secret,
    /// `None` when the server omitted it: the old refresh token stays in use.
    pub refresh_token: Option<Secret>,
    pub expires_in: Duration,
    /// `None` when the server did not say: the stored scopes stay.
    pub scopes: Option<Vec<String>>,
}

/// Why a refresh failed. Never carries a token or a response body.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RefreshError {
    /// The login is dead: only a new `claude /login` helps. Retrying would only repeat it.
    #[error("the token endpoint rejected the refresh token ({code}, HTTP {status}); run `claude /login`")]
    Permanent { code: String, status: u16 },
    /// Worth retrying later with backoff; the login is not known to be dead.
    #[error("refresh failed for now: {reason}")]
    Transient {
        reason: Transient,
        retry_after: Option<Duration>,
    },
}

/// The transient causes, each with the reason it is not permanent.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Transient {
    /// Connect, TLS, timeout or oversized answer: the server may never have seen the call.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// 429 and 5xx are the server saying "later".
    #[error("token endpoint answered HTTP {0}")]
    Status(u16),
    /// Another 4xx without a known permanent code (e.g. a proxy or a browser challenge page):
    /// nothing proves the refresh token dead, and marking a live login dead logs the user out.
    #[error("token endpoint refused the call (HTTP {status}{})", code.as_ref().map(|c| format!(", {c}")).unwrap_or_default())]
    Refused { status: u16, code: Option<String> },
    /// A 200 that is not JSON or has no `access_token`: the server may or may not have rotated.
    /// If it did, the next try gets a definitive `invalid_grant`; if not, it succeeds. Either way
    /// one more call settles it, while declaring the login dead now could be wrong.
    #[error("token endpoint answered 200 without a usable token ({0})")]
    Malformed(&'static str),
}

impl RefreshError {
    #[must_use]
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Permanent { .. })
    }

    /// Stable code for events, audit entries and `{code, message}` replies.
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Permanent { .. } => ErrorCode::RefreshRejected,
            Self::Transient {
                reason: Transient::Transport(TransportError::Timeout { .. }),
                ..
            } => ErrorCode::RefreshTimeout,
            Self::Transient {
                reason:
                    Transient::Malformed(_) | Transient::Transport(TransportError::TooLarge { .. }),
                ..
            } => ErrorCode::RefreshBadAnswer,
            Self::Transient { .. } => ErrorCode::RefreshUnavailable,
        }
    }
}

#[derive(Serialize)]
struct Request<'a> {
    grant_type: &'static str,
    refresh_token: &'a str,
    client_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
}

#[derive(Deserialize)]
struct Answer {
    access_token: Option<String>,
    refresh_token: Option<String>,
    expires_in: Option<u64>,
    scope: Option<String>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: Option<ErrorField>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorField {
    Code(String),
    Typed { r#type: Option<String> },
}

/// Calls the token endpoint once.
///
/// # Errors
/// [`RefreshError::Permanent`] for a dead refresh token, [`RefreshError::Transient`] otherwise.
pub async fn refresh(
    client: &HttpClient,
    token_url: &str,
    refresh_token: &Secret,
    grant: &Grant,
) -> Result<Refreshed, RefreshError> {
    // Moves into hyper's `Bytes`, which cannot be zeroized; it lives only until written.
    let body = serde_json::to_vec(&Request {
        grant_type: "refresh_token",
        refresh_token: refresh_token.expose(),
        client_id: grant.client_id.as_deref().unwrap_or(CLAUDE_CLIENT_ID),
        scope: (!grant.scopes.is_empty()).then(|| grant.scopes.join(" ")),
    })
    .expect("serialising plain strings cannot fail");
    let transient = |reason, retry_after| RefreshError::Transient {
        reason,
        retry_after,
    };
    let resp = client
        .send(
            Method::POST,
            token_url,
            &[
                ("content-type", "application/json"),
                ("accept", "application/json"),
            ],
            Some(body),
        )
        .await
        .map_err(|e| transient(Transient::Transport(e), None))?;
    match resp.status {
        200 => parse_answer(&resp.body).map_err(|what| transient(Transient::Malformed(what), None)),
        400..=403 => {
            let code = error_code(&resp.body);
            match code {
                Some(c) if PERMANENT_CODES.contains(&c.as_str()) => Err(RefreshError::Permanent {
                    code: c,
                    status: resp.status,
                }),
                code => Err(transient(
                    Transient::Refused {
                        status: resp.status,
                        code,
                    },
                    resp.retry_after,
                )),
            }
        }
        status => Err(transient(Transient::Status(status), resp.retry_after)),
    }
}

fn parse_answer(body: &[u8]) -> Result<Refreshed, &'static str> {
    let answer: Answer = serde_json::from_slice(body).map_err(|_| "not a JSON token answer")?;
    let access = answer
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or("no access_token")?;
    let expires_in = answer.expires_in.ok_or("no expires_in")?;
    if expires_in == 0 {
        return Err("expires_in is 0");
    }
    Ok(Refreshed {
        access_token: Secret::new(access),
        refresh_token: answer
            .refresh_token
            .filter(|t| !t.is_empty())
            .map(Secret::new),
        expires_in: Duration::from_secs(expires_in),
        scopes: answer
            .scope
            .map(|s| s.split_whitespace().map(str::to_owned).collect()),
    })
}

/// The OAuth `error` code, only when it looks like one (so no echoed text leaks into errors).
fn error_code(body: &[u8]) -> Option<String> {
    let parsed: ErrorAnswer = serde_json::from_slice(body).ok()?;
    let code = match parsed.error? {
        ErrorField::Code(c) => c,
        ErrorField::Typed { r#type } => r#type?,
    };
    (code.len() <= 64 && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')).then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_without_refresh_token_keeps_the_old_one() {
        let r = parse_answer(br#"{"access_token":"sk-ant-oat01-N","expires_in":28800}"#).unwrap();
        assert!(r.refresh_token.is_none());
        assert!(r.scopes.is_none());
        assert_eq!(r.expires_in, Duration::from_secs(28800));
        let r = parse_answer(
            br#"{"access_token":"a","refresh_token":"r","expires_in":5,"scope":"user:inference user:profile"}"#,
        )
        .unwrap();
        assert_eq!(r.refresh_token.unwrap().expose(), "r");
        assert_eq!(r.scopes.unwrap(), ["user:inference", "user:profile"]);
    }

    #[test]
    fn unusable_answers_are_named() {
        assert_eq!(
            parse_answer(b"<html>").err(),
            Some("not a JSON token answer")
        );
        assert_eq!(
            parse_answer(br#"{"expires_in":5}"#).err(),
            Some("no access_token")
        );
        assert_eq!(
            parse_answer(br#"{"access_token":"a"}"#).err(),
            Some("no expires_in")
        );
    }

    #[test]
    fn error_codes_in_both_shapes_and_nothing_else() {
        assert_eq!(
            error_code(br#"{"error":"invalid_grant"}"#).as_deref(),
            Some("invalid_grant")
        );
        assert_eq!(
            error_code(br#"{"error":{"type":"invalid_grant","message":"x"}}"#).as_deref(),
            Some("invalid_grant")
        );
        assert_eq!(error_code(br#"{"error":"sk-ant-ort01-ECHOED"}"#), None);
        assert_eq!(error_code(b"<html>challenge</html>"), None);
    }
}
