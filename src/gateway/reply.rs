//! The gateway's own answers, shaped like the provider's API errors so its CLI shows them
//! (`provider::GatewayProvider::error_body`).

use crate::http::OutBody;
pub use crate::provider::ErrorKind;
use crate::provider::GatewayProvider;
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};

/// A refusal the gateway makes itself. `message` must never hold a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub kind: ErrorKind,
    pub message: String,
    pub retry_after_secs: Option<u64>,
}

impl Refusal {
    #[must_use]
    pub fn new(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> Self {
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

    /// The HTTP answer, in `provider`'s error shape.
    #[must_use]
    pub fn response(&self, provider: &dyn GatewayProvider) -> Response<OutBody> {
        let body = provider.error_body(self.kind, &self.message);
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
    async fn refusals_carry_status_retry_after_and_the_providers_body() {
        let r = Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::RateLimit,
            "slow \"down\"",
        )
        .retry_after(7);
        let resp = r.response(&crate::provider::anthropic::ANTHROPIC);
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
