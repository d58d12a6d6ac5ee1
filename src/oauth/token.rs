//! The token call: trade a refresh token for a new login at a provider's endpoint, and sort
//! the failures into permanent (the login is dead) and transient (back off, retry). What the
//! request and answer look like, and which refusals are permanent, is the provider's
//! ([`super::login::LoginProvider`]); the status classes and their reasons are shared here.

use std::time::Duration;

use hyper::Method;

use super::login::{LoginProvider, Refreshed, Refusal};
use super::transport::{HttpClient, TransportError};
use crate::domain::ErrorCode;
use crate::secret::Secret;

/// Anthropic's endpoint (kept here for callers of the single-provider API).
pub use super::login::claude::{CLAUDE_CLIENT_ID, TOKEN_URL as DEFAULT_TOKEN_URL};

/// Why a refresh failed. Never carries a token or a response body.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RefreshError {
    /// The login is dead: only a new login helps (`hint` says which). Retrying would only
    /// repeat it.
    #[error("the token endpoint rejected the refresh token ({code}, HTTP {status}); {hint}")]
    Permanent {
        code: String,
        status: u16,
        hint: &'static str,
    },
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

/// Calls `provider`'s token endpoint once with `refresh_token` from `document`.
///
/// # Errors
/// [`RefreshError::Permanent`] for a dead refresh token, [`RefreshError::Transient`] otherwise.
pub async fn refresh(
    client: &HttpClient,
    provider: &dyn LoginProvider,
    token_url: &str,
    refresh_token: &Secret,
    document: &Secret,
) -> Result<Refreshed, RefreshError> {
    // Moves into hyper's `Bytes`, which cannot be zeroized; it lives only until written.
    let request = provider.token_request(refresh_token, document);
    let transient = |reason, retry_after| RefreshError::Transient {
        reason,
        retry_after,
    };
    let resp = client
        .send(
            Method::POST,
            token_url,
            &[
                ("content-type", request.content_type),
                ("accept", "application/json"),
            ],
            Some(request.body),
        )
        .await
        .map_err(|e| transient(Transient::Transport(e), None))?;
    match resp.status {
        200 => provider
            .parse_answer(&resp.body)
            .map_err(|what| transient(Transient::Malformed(what), None)),
        400..=403 => match provider.classify_refusal(resp.status, &resp.body) {
            Refusal::Permanent(code) => Err(RefreshError::Permanent {
                code,
                status: resp.status,
                hint: provider.relogin_hint(),
            }),
            Refusal::Refused(code) => Err(transient(
                Transient::Refused {
                    status: resp.status,
                    code,
                },
                resp.retry_after,
            )),
        },
        status => Err(transient(Transient::Status(status), resp.retry_after)),
    }
}
