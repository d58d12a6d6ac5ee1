//! The refresher's bounded calls to the token and usage endpoints, on a client built by
//! [`crate::http`] (the same roots, extra CA and URL rule as the gateway: https anywhere,
//! plain http only to loopback). Every call has a total deadline and the response body a size cap: a slow
//! or huge answer is a transient error, never a hang or an allocation the peer controls.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request};
use zeroize::Zeroizing;

use crate::http::HttpError;

/// Token and usage answers are a few hundred bytes; anything near this is not one.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;
/// Claude Code gives its own token call 30 s; ours runs ahead of time, so it can give up sooner.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// How to build a [`HttpClient`].
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// PEM file with extra trusted CA certificates (`[oauth] extra_ca_file`).
    pub extra_ca_file: Option<PathBuf>,
    /// Deadline for the whole call: connect, TLS, request, response body.
    pub timeout: Duration,
    /// Largest response body accepted.
    pub max_body: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            extra_ca_file: None,
            timeout: DEFAULT_TIMEOUT,
            max_body: DEFAULT_MAX_BODY,
        }
    }
}

/// Transport failures; none carries a header or body, so none can carry a token. Cloneable
/// (the refresher hands one flight's error to every joiner), so the source is shared.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// The extra CA file, TLS, or the endpoint URL (the loopback rule) is unusable.
    #[error(transparent)]
    Setup(Arc<HttpError>),
    #[error("{url}: request could not be built")]
    BadRequest { url: String },
    #[error("{url}: request failed: {reason}")]
    Network { url: String, reason: String },
    #[error("{url}: no complete answer within {secs} s")]
    Timeout { url: String, secs: u64 },
    #[error("{url}: answer larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
}

impl From<HttpError> for TransportError {
    fn from(e: HttpError) -> Self {
        Self::Setup(Arc::new(e))
    }
}

/// A response: status and the (bounded, zeroized on drop) body.
pub struct Response {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// The shared outbound client with a deadline and a body cap per call.
#[derive(Clone)]
pub struct HttpClient {
    inner: crate::http::HttpClient,
    timeout: Duration,
    max_body: usize,
}

impl HttpClient {
    /// # Errors
    /// The extra CA file is unreadable or holds no certificate; TLS cannot be set up.
    pub fn new(config: &TransportConfig) -> Result<Self, TransportError> {
        Ok(Self {
            inner: crate::http::client(config.extra_ca_file.as_deref())?,
            timeout: config.timeout,
            max_body: config.max_body,
        })
    }

    /// Sends one request and reads the whole answer within the deadline.
    /// `body` moves in and is dropped as soon as hyper has written it.
    ///
    /// # Errors
    /// Bad or non-loopback plain-http URL, network failure, deadline passed, body too large.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Response, TransportError> {
        let uri = crate::http::parse_upstream(url)?;
        let mut req = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let body = Full::new(body.map(Bytes::from).unwrap_or_default())
            .map_err(|never| match never {})
            .boxed_unsync();
        let req = req.body(body).map_err(|_| TransportError::BadRequest {
            url: url.to_owned(),
        })?;
        let call = async {
            let resp = self
                .inner
                .request(req)
                .await
                .map_err(|e| TransportError::Network {
                    url: url.to_owned(),
                    reason: crate::http::describe(&e),
                })?;
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(hyper::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let collected = Limited::new(resp.into_body(), self.max_body)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        TransportError::TooLarge {
                            url: url.to_owned(),
                            limit: self.max_body,
                        }
                    } else {
                        TransportError::Network {
                            url: url.to_owned(),
                            reason: e.to_string(),
                        }
                    }
                })?;
            Ok(Response {
                status,
                retry_after,
                body: Zeroizing::new(collected.to_bytes().to_vec()),
            })
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| TransportError::Timeout {
                url: url.to_owned(),
                secs: self.timeout.as_secs().max(1),
            })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn plain_http_only_to_loopback_before_any_connection() {
        let client = HttpClient::new(&TransportConfig::default()).unwrap();
        let err = client
            .send(
                Method::POST,
                "http://api.anthropic.com/v1/oauth/token",
                &[],
                None,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, TransportError::Setup(e) if matches!(**e, HttpError::PlainHttpNotLoopback { .. })),
            "{err}"
        );
        assert!(err.to_string().contains("only to loopback"), "{err}");
    }

    #[test]
    fn extra_ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "no pem here").unwrap();
        let err = HttpClient::new(&TransportConfig {
            extra_ca_file: Some(p),
            ..TransportConfig::default()
        })
        .err()
        .unwrap();
        assert!(
            matches!(&err, TransportError::Setup(e) if matches!(**e, HttpError::ExtraCaCert { .. })),
            "{err}"
        );
    }
}
