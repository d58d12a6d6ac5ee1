//! A loopback stand-in for Anthropic's OAuth token and usage endpoints, over plain http or TLS
//! with a test CA (rcgen). Counts token calls, records every refresh token it is sent, and
//! answers as the test sets: rotating tokens, an OAuth error, or a broken answer.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug)]
pub enum Answer {
    /// New access and refresh tokens numbered by call, `expires_in` 8 h.
    Rotate,
    /// New access token only (the server keeps the refresh token).
    AccessOnly,
    /// This status and body.
    Raw(u16, String),
    /// 200 with a body bigger than any client cap.
    Huge,
    /// 200, but only after this long.
    Slow(Duration),
}

#[derive(Default)]
pub struct Seen {
    pub refresh_tokens: Vec<String>,
    pub token_bodies: Vec<serde_json::Value>,
    pub usage_auth: Vec<(Option<String>, Option<String>)>,
}

pub struct FakeOauth {
    pub base: String,
    pub seen: Arc<Mutex<Seen>>,
    pub answer: Arc<Mutex<Answer>>,
    /// Delay before every token answer, so concurrent triggers overlap.
    pub delay: Arc<Mutex<Duration>>,
    stop: Arc<AtomicBool>,
}

pub const ACCESS_PREFIX: &str = "sk-ant-oat01-FAKEnewACCESS-";
pub const REFRESH_PREFIX: &str = "sk-ant-ort01-FAKEnewREFRESH-";

impl FakeOauth {
    pub fn token_url(&self) -> String {
        format!("{}/v1/oauth/token", self.base)
    }

    pub fn usage_url(&self) -> String {
        format!("{}/api/oauth/usage", self.base)
    }

    pub fn token_calls(&self) -> usize {
        self.seen.lock().unwrap().refresh_tokens.len()
    }

    pub fn refresh_tokens(&self) -> Vec<String> {
        self.seen.lock().unwrap().refresh_tokens.clone()
    }

    pub fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    /// Plain http on 127.0.0.1.
    pub fn plain() -> Self {
        Self::start(None)
    }

    /// TLS on 127.0.0.1 with a fresh CA; its PEM is written to `ca_pem`.
    pub fn tls(ca_pem: &Path) -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "keyferry test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        std::fs::write(ca_pem, ca.pem()).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
        Self::start(Some(Arc::new(config)))
    }

    fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let base = if tls.is_some() {
            format!("https://localhost:{port}")
        } else {
            format!("http://127.0.0.1:{port}")
        };
        let me = Self {
            base,
            seen: Arc::default(),
            answer: Arc::new(Mutex::new(Answer::Rotate)),
            delay: Arc::default(),
            stop: Arc::default(),
        };
        let (seen, answer, delay, stop) = (
            Arc::clone(&me.seen),
            Arc::clone(&me.answer),
            Arc::clone(&me.delay),
            Arc::clone(&me.stop),
        );
        std::thread::spawn(move || {
            // Bounded: ends when the test drops the server.
            while !stop.load(Ordering::SeqCst) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let (seen, answer, delay, tls) = (
                    Arc::clone(&seen),
                    Arc::clone(&answer),
                    Arc::clone(&delay),
                    tls.clone(),
                );
                std::thread::spawn(move || match tls {
                    None => serve(stream, &seen, &answer, &delay),
                    Some(cfg) => {
                        let conn = rustls::ServerConnection::new(cfg).unwrap();
                        serve(
                            rustls::StreamOwned::new(conn, stream),
                            &seen,
                            &answer,
                            &delay,
                        );
                    }
                });
            }
        });
        me
    }
}

impl Drop for FakeOauth {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve<S: Read + Write>(
    mut s: S,
    seen: &Mutex<Seen>,
    answer: &Mutex<Answer>,
    delay: &Mutex<Duration>,
) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let request = lines.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let len: usize = header("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    if s.read_exact(&mut body).is_err() {
        return;
    }
    let (status, reply) = if request.starts_with("POST /v1/oauth/token") {
        let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let n = {
            let mut seen = seen.lock().unwrap();
            seen.refresh_tokens
                .push(req["refresh_token"].as_str().unwrap_or("").to_owned());
            seen.token_bodies.push(req);
            seen.refresh_tokens.len()
        };
        std::thread::sleep(*delay.lock().unwrap());
        let answer = answer.lock().unwrap().clone();
        match answer {
            Answer::Rotate => (
                200,
                format!(
                    r#"{{"access_token":"{ACCESS_PREFIX}{n}","refresh_token":"{REFRESH_PREFIX}{n}","expires_in":28800,"scope":"user:inference user:profile","token_type":"Bearer"}}"#
                ),
            ),
            Answer::AccessOnly => (
                200,
                format!(r#"{{"access_token":"{ACCESS_PREFIX}{n}","expires_in":28800}}"#),
            ),
            Answer::Raw(status, body) => (status, body),
            Answer::Huge => (
                200,
                format!(r#"{{"access_token":"{}"}}"#, "x".repeat(200 * 1024)),
            ),
            Answer::Slow(d) => {
                std::thread::sleep(d);
                (
                    200,
                    format!(r#"{{"access_token":"{ACCESS_PREFIX}{n}","expires_in":28800}}"#),
                )
            }
        }
    } else if request.starts_with("GET /api/oauth/usage") {
        seen.lock()
            .unwrap()
            .usage_auth
            .push((header("authorization"), header("anthropic-beta")));
        (200, r#"{"five_hour":{"utilization":37.0,"resets_at":"2026-12-01T11:00:00.000000+00:00"},"seven_day":{"utilization":12.5,"resets_at":"2026-12-05T08:00:00+00:00"},"seven_day_opus":null}"#.to_owned())
    } else {
        (404, "{}".to_owned())
    };
    let _ = write!(
        s,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
        reply.len()
    );
    let _ = s.flush();
}
