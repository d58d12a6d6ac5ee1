//! A loopback stand-in for the OAuth token endpoints of Anthropic (`POST /v1/oauth/token`,
//! JSON), OpenAI's ChatGPT login (`POST /oauth/token`, JSON, Codex's answer shape) and
//! Google (`POST /token`, a form), plus Anthropic's usage endpoint, over plain http or TLS
//! with a test CA (rcgen). Each path answers with its provider's [`Script`]. Counts token
//! calls, records every refresh token it is sent, and answers as the test sets: rotating
//! tokens, an OAuth error, or a broken answer.

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

/// Whose token endpoint a call reached, by its path; it decides the request's format and
/// the answer's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Script {
    /// `/v1/oauth/token`: JSON in, `{access_token, refresh_token, expires_in, scope}` out.
    Claude,
    /// `/oauth/token`: JSON in, `{id_token, access_token, refresh_token}` out, the tokens
    /// JWTs (the access token's `exp` 10 days ahead, as ChatGPT's are).
    Codex,
    /// `/token`: a form in, `{access_token, expires_in, scope, token_type, id_token}` out;
    /// the refresh token does not rotate, so it is never returned.
    Gemini,
}

impl Script {
    fn of(request_line: &str) -> Option<Self> {
        let path = request_line.strip_prefix("POST ")?.split(' ').next()?;
        match path {
            "/v1/oauth/token" => Some(Self::Claude),
            "/oauth/token" => Some(Self::Codex),
            "/token" => Some(Self::Gemini),
            _ => None,
        }
    }
}

#[derive(Default)]
pub struct Seen {
    pub refresh_tokens: Vec<String>,
    /// Each token call's body as JSON (a form's pairs as an object of strings).
    pub token_bodies: Vec<serde_json::Value>,
    pub content_types: Vec<Option<String>>,
    pub scripts: Vec<Script>,
    pub usage_auth: Vec<(Option<String>, Option<String>)>,
    /// Codex's `/wham/usage` calls: `authorization` and `chatgpt-account-id`.
    pub codex_usage: Vec<(Option<String>, Option<String>)>,
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
/// The signature part of every JWT the Codex script hands out, numbered by call.
pub const CODEX_SIG_PREFIX: &str = "FAKEnewCODEXsig-";
pub const CODEX_REFRESH_PREFIX: &str = "rt_FAKEnewCODEXrefresh-";
/// ChatGPT access tokens live about 10 days.
pub const CODEX_LIFETIME_SECS: i64 = 10 * 24 * 3600;
/// When the fake's Codex windows reset (2026-12-01T11:00Z, 2026-12-05T08:00Z).
pub const CODEX_RESET_5H: i64 = 1_796_122_800;
pub const CODEX_RESET_WEEK: i64 = 1_796_457_600;
pub const GEMINI_ACCESS_PREFIX: &str = "ya29.FAKEnewGEMINIaccess-";

impl FakeOauth {
    pub fn token_url(&self) -> String {
        format!("{}/v1/oauth/token", self.base)
    }

    /// Where Codex posts (`REFRESH_TOKEN_URL`'s path).
    pub fn codex_token_url(&self) -> String {
        format!("{}/oauth/token", self.base)
    }

    /// Where google-auth-library posts (`https://oauth2.googleapis.com/token`'s path).
    pub fn gemini_token_url(&self) -> String {
        format!("{}/token", self.base)
    }

    pub fn usage_url(&self) -> String {
        format!("{}/api/oauth/usage", self.base)
    }

    /// Codex's subscription figures (`https://chatgpt.com/backend-api/wham/usage`'s path).
    pub fn codex_usage_url(&self) -> String {
        format!("{}/backend-api/wham/usage", self.base)
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
    let (status, reply) = if let Some(script) = Script::of(&request) {
        let req = request_body(&body, header("content-type").as_deref());
        let n = {
            let mut seen = seen.lock().unwrap();
            seen.refresh_tokens
                .push(req["refresh_token"].as_str().unwrap_or("").to_owned());
            seen.token_bodies.push(req);
            seen.content_types.push(header("content-type"));
            seen.scripts.push(script);
            seen.refresh_tokens.len()
        };
        std::thread::sleep(*delay.lock().unwrap());
        let answer = answer.lock().unwrap().clone();
        if let Answer::Slow(d) = &answer {
            std::thread::sleep(*d);
        }
        match answer {
            Answer::Rotate => (200, rotated(script, n, true)),
            Answer::AccessOnly | Answer::Slow(_) => (200, rotated(script, n, false)),
            Answer::Raw(status, body) => (status, body),
            Answer::Huge => (
                200,
                format!(r#"{{"access_token":"{}"}}"#, "x".repeat(200 * 1024)),
            ),
        }
    } else if request.starts_with("GET /api/oauth/usage") {
        seen.lock()
            .unwrap()
            .usage_auth
            .push((header("authorization"), header("anthropic-beta")));
        (200, r#"{"five_hour":{"utilization":37.0,"resets_at":"2026-12-01T11:00:00.000000+00:00"},"seven_day":{"utilization":12.5,"resets_at":"2026-12-05T08:00:00+00:00"},"seven_day_opus":null}"#.to_owned())
    } else if request.starts_with("GET /backend-api/wham/usage") {
        seen.lock()
            .unwrap()
            .codex_usage
            .push((header("authorization"), header("chatgpt-account-id")));
        (
            200,
            format!(
                r#"{{"plan_type":"pro","rate_limit":{{"allowed":true,"limit_reached":false,"primary_window":{{"used_percent":23.5,"limit_window_seconds":18000,"reset_after_seconds":600,"reset_at":{CODEX_RESET_5H}}},"secondary_window":{{"used_percent":4.0,"limit_window_seconds":604800,"reset_after_seconds":9000,"reset_at":{CODEX_RESET_WEEK}}}}},"credits":null}}"#
            ),
        )
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

/// A token call's body as JSON: JSON as is, a form as an object of its (decoded) pairs.
fn request_body(body: &[u8], content_type: Option<&str>) -> serde_json::Value {
    if content_type.is_some_and(|c| c.starts_with("application/x-www-form-urlencoded")) {
        let text = String::from_utf8_lossy(body);
        let pairs = text
            .split('&')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (unform(k), serde_json::Value::String(unform(v))))
            .collect();
        return serde_json::Value::Object(pairs);
    }
    serde_json::from_slice(body).unwrap_or_default()
}

/// Decodes one `x-www-form-urlencoded` component (`+` is a space, `%XX` a byte).
fn unform(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Call `n`'s new login in `script`'s shape; `rotate`: with a new refresh token (never for
/// Google, whose refresh tokens do not rotate).
fn rotated(script: Script, n: usize, rotate: bool) -> String {
    match script {
        Script::Claude if rotate => format!(
            r#"{{"access_token":"{ACCESS_PREFIX}{n}","refresh_token":"{REFRESH_PREFIX}{n}","expires_in":28800,"scope":"user:inference user:profile","token_type":"Bearer"}}"#
        ),
        Script::Claude => format!(r#"{{"access_token":"{ACCESS_PREFIX}{n}","expires_in":28800}}"#),
        Script::Codex => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
            let sig = format!("{CODEX_SIG_PREFIX}{n}");
            let access = crate::logins::codex_access_jwt(now + CODEX_LIFETIME_SECS, &sig);
            let id = crate::logins::codex_id_jwt("acct-fake", &sig);
            let mut v = serde_json::json!({"id_token": id, "access_token": access});
            if rotate {
                v["refresh_token"] = format!("{CODEX_REFRESH_PREFIX}{n}").into();
            }
            v.to_string()
        }
        Script::Gemini => format!(
            r#"{{"access_token":"{GEMINI_ACCESS_PREFIX}{n}","expires_in":3599,"scope":"https://www.googleapis.com/auth/cloud-platform openid","token_type":"Bearer","id_token":"fake.gemini.id-{n}"}}"#
        ),
    }
}
