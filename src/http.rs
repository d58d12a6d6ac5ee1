//! The one outbound HTTP client (rustls, Mozilla roots plus an optional extra CA, HTTP/1.1
//! and HTTP/2 by ALPN) and the upstream URL rule: https anywhere, plain http only to loopback.

use std::error::Error as StdError;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// Any error a body passing through may carry.
pub type BoxError = Box<dyn StdError + Send + Sync>;
/// The request body type the client sends (streamed, never buffered).
pub type OutBody = UnsyncBoxBody<Bytes, BoxError>;
/// The shared client: one connection pool per process.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, OutBody>;

/// What can go wrong building the client or parsing an upstream.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("upstream {url:?} is not a valid absolute URL: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("upstream {url:?}: scheme must be https (plain http only to loopback)")]
    Scheme { url: String },
    #[error(
        "upstream {url:?}: plain http is allowed only to loopback (127.0.0.0/8, ::1, localhost); \
         use https for {host}"
    )]
    PlainHttpNotLoopback { url: String, host: String },
    #[error("upstream {url:?} must not carry credentials, a query or a fragment")]
    Extra { url: String },
    #[error("extra CA file {}: cannot read: {source}", path.display())]
    ExtraCaRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("extra CA file {}: no usable PEM certificate: {reason}", path.display())]
    ExtraCaCert { path: PathBuf, reason: String },
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
}

/// Where requests go and the client that takes them there.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// Scheme, authority and an optional path prefix (no trailing slash).
    pub base: Uri,
    pub client: HttpClient,
    /// For a plain-http (loopback) base: the gateway's own HTTP/1.1 connections, each
    /// driven by the request using it (`gateway::h1`); `None` for https.
    pub h1: Option<Arc<crate::gateway::h1::Pool>>,
}

impl Upstream {
    /// Parses `url` under the loopback rule and builds a client trusting `extra_ca` too.
    ///
    /// # Errors
    /// The URL breaks the rule, or the CA file is unreadable or holds no certificate.
    pub fn new(url: &str, extra_ca: Option<&Path>) -> Result<Self, HttpError> {
        let base = parse_upstream(url)?;
        Ok(Self {
            h1: crate::gateway::h1::Pool::for_base(&base),
            base,
            client: client(extra_ca)?,
        })
    }

    /// The upstream URI for an incoming path-and-query (the base's path prefix kept).
    ///
    /// # Errors
    /// The joined URI is invalid (cannot happen for a path hyper already parsed).
    pub fn join(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        let prefix = self.base.path().trim_end_matches('/');
        let mut parts = self.base.clone().into_parts();
        parts.path_and_query = Some(format!("{prefix}{path_and_query}").parse()?);
        Ok(Uri::from_parts(parts)?)
    }
}

/// Parses an upstream base URL: https to any host, http only to a loopback host.
///
/// # Errors
/// [`HttpError`] naming the rule that was broken.
pub fn parse_upstream(url: &str) -> Result<Uri, HttpError> {
    let invalid = |reason: String| HttpError::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    let uri: Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| invalid(e.to_string()))?;
    let host = uri
        .host()
        .ok_or_else(|| invalid("no host".into()))?
        .to_owned();
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    if authority.contains('@') || uri.query().is_some() || url.contains('#') {
        // Never echo a password given in the URL.
        let shown = match authority.rsplit_once('@') {
            Some((_, host)) => url.replacen(authority, &format!("…@{host}"), 1),
            None => url.to_owned(),
        };
        return Err(HttpError::Extra { url: shown });
    }
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if is_loopback(&host) => {}
        Some("http") => {
            return Err(HttpError::PlainHttpNotLoopback {
                url: url.to_owned(),
                host,
            })
        }
        _ => {
            return Err(HttpError::Scheme {
                url: url.to_owned(),
            })
        }
    }
    Ok(uri)
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The rustls configuration: Mozilla roots plus every certificate in `extra_ca`, with
/// ALPN offering h2 and http/1.1.
///
/// # Errors
/// The CA file is unreadable or holds no certificate rustls accepts.
pub fn tls_config(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, HttpError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        for cert in read_pem_certs(path)? {
            roots.add(cert).map_err(|e| HttpError::ExtraCaCert {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A CA bundle is public, but bounded all the same: a wrong path to a huge file fails fast.
const MAX_CA_FILE: u64 = 4 << 20;

fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, HttpError> {
    use std::io::Read;
    let read_err = |source| HttpError::ExtraCaRead {
        path: path.to_owned(),
        source,
    };
    let mut pem = Vec::new();
    std::fs::File::open(path)
        .map_err(read_err)?
        .take(MAX_CA_FILE)
        .read_to_end(&mut pem)
        .map_err(read_err)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| HttpError::ExtraCaCert {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(HttpError::ExtraCaCert {
            path: path.to_owned(),
            reason: "the file holds no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// Builds the pooled client: TCP_NODELAY, HTTP/1.1 or HTTP/2 as ALPN decides.
///
/// # Errors
/// See [`tls_config`].
pub fn client(extra_ca: Option<&Path>) -> Result<HttpClient, HttpError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(30)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(extra_ca)?)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(https))
}

/// A client error as one line: every cause in the chain, so a TLS failure names itself
/// ("invalid peer certificate: UnknownIssuer"). Connect errors carry no header or body.
#[must_use]
pub fn describe(err: &(dyn StdError + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_anywhere_http_only_to_loopback() {
        for ok in [
            "https://api.anthropic.com",
            "https://proxy.corp.example/anthropic",
            "http://127.0.0.1:8080",
            "http://127.9.9.9",
            "http://[::1]:9",
            "http://localhost:1",
        ] {
            assert!(parse_upstream(ok).is_ok(), "{ok}");
        }
        let e = parse_upstream("http://10.0.0.1:80").unwrap_err();
        assert!(matches!(e, HttpError::PlainHttpNotLoopback { .. }), "{e}");
        assert!(e.to_string().contains("only to loopback"), "{e}");
        assert!(matches!(
            parse_upstream("http://localhost.evil.example").unwrap_err(),
            HttpError::PlainHttpNotLoopback { .. }
        ));
        assert!(matches!(
            parse_upstream("ftp://127.0.0.1").unwrap_err(),
            HttpError::Scheme { .. }
        ));
        let e = parse_upstream("https://user:pw@example.com").unwrap_err();
        assert!(matches!(e, HttpError::Extra { .. }), "{e}");
        assert!(!e.to_string().contains("pw"), "{e}");
        // The refresher's endpoints: a path on loopback http, a path on https.
        assert!(parse_upstream("http://127.0.0.1:9/v1/oauth/token").is_ok());
        assert!(parse_upstream("https://api.anthropic.com/api/oauth/usage").is_ok());
        assert!(matches!(
            parse_upstream("/v1/messages").unwrap_err(),
            HttpError::InvalidUrl { .. }
        ));
    }

    #[test]
    fn join_keeps_prefix_and_query() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _g = rt.enter();
        let up = Upstream::new("https://proxy.example/anthropic/", None).unwrap();
        assert_eq!(
            up.join("/v1/messages?beta=true").unwrap().to_string(),
            "https://proxy.example/anthropic/v1/messages?beta=true"
        );
    }

    #[test]
    fn extra_ca_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "not a pem").unwrap();
        assert!(matches!(
            tls_config(Some(&p)).unwrap_err(),
            HttpError::ExtraCaCert { .. }
        ));
        let missing = dir.path().join("missing.pem");
        let e = tls_config(Some(&missing)).unwrap_err();
        assert!(e.to_string().contains("missing.pem"), "{e}");
    }
}
