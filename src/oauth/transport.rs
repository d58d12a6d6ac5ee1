//! The refresher's outbound HTTPS client: small bounded calls to the token and usage endpoints.
//!
//! hyper 1 + hyper-util's legacy pooled client over hyper-rustls (webpki roots, plus an
//! optional extra CA PEM for corporate proxies and tests). Plain `http` is allowed only to a
//! loopback host, every call has a total deadline and the response body a size cap: a slow
//! or huge answer is a transient error, never a hang or an allocation the peer controls.
//! Self-contained so the integrator can fold it into the gateway's shared `src/http.rs`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use zeroize::Zeroizing;

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

/// Transport failures; none carries a header or body, so none can carry a token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    #[error("extra CA file {path}: {reason}")]
    Ca { path: String, reason: String },
    #[error("TLS setup failed: {0}")]
    Tls(#[source] rustls::Error),
    #[error("{url}: not a usable endpoint URL ({reason})")]
    BadUrl { url: String, reason: &'static str },
    #[error("{url}: plain http is only allowed to a loopback address; use https")]
    PlainHttpNotLoopback { url: String },
    #[error("{url}: request failed: {reason}")]
    Network { url: String, reason: String },
    #[error("{url}: no complete answer within {secs} s")]
    Timeout { url: String, secs: u64 },
    #[error("{url}: answer larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
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

/// A pooled HTTPS client for small JSON calls.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    max_body: usize,
}

impl HttpClient {
    /// # Errors
    /// The extra CA file is unreadable or holds no certificate; TLS cannot be set up.
    pub fn new(config: &TransportConfig) -> Result<Self, TransportError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = &config.extra_ca_file {
            for cert in read_pem(path)? {
                roots.add(cert).map_err(|e| TransportError::Ca {
                    path: crate::paths::display(path),
                    reason: e.to_string(),
                })?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(TransportError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Self {
            inner,
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
        let uri = check_url(url)?;
        let mut req = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let body = body.map(Bytes::from).unwrap_or_default();
        let req = req
            .body(Full::new(body))
            .map_err(|_| TransportError::BadUrl {
                url: url.to_owned(),
                reason: "request could not be built",
            })?;
        let call = async {
            let resp = self
                .inner
                .request(req)
                .await
                .map_err(|e| TransportError::Network {
                    url: url.to_owned(),
                    reason: error_chain(&e),
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

/// Parses the URL and allows plain http only to a loopback host.
///
/// # Errors
/// Unparsable URL, unknown scheme, no host, or plain http to a non-loopback host.
pub fn check_url(url: &str) -> Result<Uri, TransportError> {
    let bad = |reason| TransportError::BadUrl {
        url: url.to_owned(),
        reason,
    };
    let uri: Uri = url.parse().map_err(|_| bad("unparsable"))?;
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if is_loopback(host) => Ok(uri),
        Some("http") => Err(TransportError::PlainHttpNotLoopback {
            url: url.to_owned(),
        }),
        _ => Err(bad("scheme must be https")),
    }
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn read_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let ca_err = |reason: String| TransportError::Ca {
        path: crate::paths::display(path),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| ca_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ca_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(ca_err("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// hyper-util's error hides the cause (refused, TLS) one or two `source`s down.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback() {
        for ok in [
            "https://api.anthropic.com/v1/oauth/token",
            "http://127.0.0.1:8080/v1/oauth/token",
            "http://[::1]:9/x",
            "http://localhost:9/x",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        assert!(matches!(
            check_url("http://api.anthropic.com/v1/oauth/token"),
            Err(TransportError::PlainHttpNotLoopback { .. })
        ));
        assert!(matches!(
            check_url("http://10.0.0.1/x"),
            Err(TransportError::PlainHttpNotLoopback { .. })
        ));
        assert!(matches!(
            check_url("ftp://127.0.0.1/x"),
            Err(TransportError::BadUrl { .. })
        ));
        assert!(matches!(
            check_url("not a url"),
            Err(TransportError::BadUrl { .. })
        ));
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
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
    }
}
