//! The gateway's own answers, shaped like the Anthropic API's errors so Claude Code shows
//! them: `{"type":"error","error":{"type":…,"message":…}}`.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use serde::Serialize;

use crate::http::OutBody;

/// The Anthropic error types the gateway answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    InvalidRequest,
    Authentication,
    Permission,
    NotFound,
    RequestTooLarge,
    RateLimit,
    Api,
}

impl ErrorType {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request_error",
            Self::Authentication => "authentication_error",
            Self::Permission => "permission_error",
            Self::NotFound => "not_found_error",
            Self::RequestTooLarge => "request_too_large",
            Self::RateLimit => "rate_limit_error",
            Self::Api => "api_error",
        }
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

/// A refusal the gateway makes itself. `message` must never hold a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub kind: ErrorType,
    pub message: String,
    pub retry_after_secs: Option<u64>,
}

impl Refusal {
    #[must_use]
    pub fn new(status: StatusCode, kind: ErrorType, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    #[must_use]
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// The HTTP answer.
    #[must_use]
    pub fn response(&self) -> Response<OutBody> {
        let body = serde_json::to_vec(&Envelope {
            r#type: "error",
            error: Inner {
                r#type: self.kind.as_str(),
                message: &self.message,
            },
        })
        .unwrap_or_default();
        let mut resp = Response::new(full(body));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert("x-keyferry-gateway", HeaderValue::from_static("refused"));
        if let Some(s) = self.retry_after_secs {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

/// A fixed body.
#[must_use]
pub fn full(bytes: impl Into<Bytes>) -> OutBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// No body.
#[must_use]
pub fn empty() -> OutBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refusals_are_anthropic_shaped() {
        let r = Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorType::RateLimit,
            "slow \"down\"",
        )
        .retry_after(7);
        let resp = r.response();
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["retry-after"], "7");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"error","error":{"type":"rate_limit_error","message":"slow \"down\""}})
        );
    }
}
