//! A loopback stand-in for the Anthropic API (and the Codex and Gemini calls the gateway
//! forwards, answered by path) that the test owns: plain http or TLS (a
//! test CA made with rcgen, h2 and http/1.1 by ALPN), scripted answers, and a record of
//! every request it received. [`Upstream`] for async tests (the gateway's); [`FakeApi`],
//! the same server on a runtime of its own, for tests that drive the real binaries.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::sync::{mpsc, Notify};

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// One request as the upstream saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// How the upstream answers `POST /v1/messages`.
#[derive(Clone)]
pub enum Script {
    /// A JSON message with usage 11 in / 22 out / 3 cache-creation / 4 cache-read.
    Json,
    /// SSE, each event cut into pieces of `piece` bytes sent separately; after the first
    /// event it waits for `gate` (if any), noting a closed connection in `closed`.
    Sse {
        piece: usize,
        gate: Option<Arc<Notify>>,
    },
    /// 429 with `retry-after` and rate-limit headers.
    RateLimited,
    /// A 200 stream carrying `event: error`.
    StreamError,
    /// As the real API: SSE when the request says `"stream":true`, else JSON.
    Auto,
    /// No answer head until `gate`; a dropped handler (its connection closed) is noted in
    /// `closed`.
    SlowHead { gate: Arc<Notify> },
}

/// Notes in `closed` that the handler was dropped before it finished.
struct DropNote(Option<(Arc<AtomicBool>, Arc<Notify>)>);

impl Drop for DropNote {
    fn drop(&mut self) {
        if let Some((flag, note)) = self.0.take() {
            flag.store(true, Ordering::SeqCst);
            note.notify_waiters();
        }
    }
}

pub const STREAM_USAGE: (u64, u64, u64, u64) = (25, 42, 7, 300);

/// The text of every answer (JSON or streamed).
pub const REPLY: &str = "pong-from-upstream";

pub fn sse_events() -> Vec<String> {
    let ev = |name: &str, data: serde_json::Value| format!("event: {name}\ndata: {data}\n\n");
    vec![
        ev(
            "message_start",
            serde_json::json!({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-test","usage":{"input_tokens":25,"cache_creation_input_tokens":7,"cache_read_input_tokens":300,"output_tokens":1}}}),
        ),
        ev(
            "content_block_start",
            serde_json::json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
        ),
        ev("ping", serde_json::json!({"type":"ping"})),
        ev(
            "content_block_delta",
            serde_json::json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":REPLY}}),
        ),
        ev(
            "content_block_stop",
            serde_json::json!({"type":"content_block_stop","index":0}),
        ),
        ev(
            "message_delta",
            serde_json::json!({"type":"message_delta","delta":{"stop_reason":null},"usage":{"output_tokens":12}}),
        ),
        ev(
            "message_delta",
            serde_json::json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":42}}),
        ),
        ev("message_stop", serde_json::json!({"type":"message_stop"})),
    ]
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub url: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// The SSE answer's connection was closed under it (client went away).
    pub closed: Arc<AtomicBool>,
    pub closed_note: Arc<Notify>,
    /// The SSE answer was written to its end.
    pub finished: Arc<AtomicBool>,
    /// PEM of the CA that signed a TLS upstream's certificate.
    pub ca_pem: Option<String>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct State {
    script: Script,
    seen: Arc<Mutex<Vec<Seen>>>,
    closed: Arc<AtomicBool>,
    closed_note: Arc<Notify>,
    finished: Arc<AtomicBool>,
}

impl Upstream {
    pub async fn http(script: Script) -> Self {
        Self::start(script, false).await
    }

    pub async fn tls(script: Script) -> Self {
        Self::start(script, true).await
    }

    async fn start(script: Script, tls: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = State {
            script,
            seen: Arc::default(),
            closed: Arc::default(),
            closed_note: Arc::default(),
            finished: Arc::default(),
        };
        let (acceptor, ca_pem) = if tls {
            let (a, pem) = tls_acceptor();
            (Some(a), Some(pem))
        } else {
            (None, None)
        };
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(st.clone(), req));
                    let b = auto::Builder::new(TokioExecutor::new());
                    if let Some(acc) = acceptor {
                        if let Ok(tls) = acc.accept(tcp).await {
                            let _ = b.serve_connection(TokioIo::new(tls), svc).await;
                        }
                    } else {
                        let _ = b.serve_connection(TokioIo::new(tcp), svc).await;
                    }
                });
            }
        });
        let scheme = if tls { "https" } else { "http" };
        let host = if tls { "localhost" } else { "127.0.0.1" };
        Self {
            addr,
            url: format!("{scheme}://{host}:{}", addr.port()),
            seen: state.seen,
            closed: state.closed,
            closed_note: state.closed_note,
            finished: state.finished,
            ca_pem,
            task,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Writes the CA to `dir/ca.pem` for `extra_ca_file`.
    pub fn ca_file(&self, dir: &std::path::Path) -> PathBuf {
        let p = dir.join("ca.pem");
        std::fs::write(&p, self.ca_pem.as_ref().expect("a TLS upstream")).unwrap();
        p
    }
}

fn tls_acceptor() -> (tokio_rustls::TlsAcceptor, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "keyferry test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca_cert, &ca_key)
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        ca_cert.pem(),
    )
}

fn full(status: u16, ctype: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .body(Full::new(body.into()).boxed())
        .unwrap()
}

async fn handle(st: State, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    st.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        version: parts.version,
        headers: parts.headers,
        body,
    });
    if let Some(answer) = other_provider(parts.uri.path()) {
        return Ok(answer);
    }
    if parts.uri.path() != "/v1/messages" {
        return Ok(full(200, "application/json", r#"{"input_tokens":5}"#));
    }
    let wants_stream = String::from_utf8_lossy(&st.seen.lock().unwrap().last().unwrap().body)
        .contains("\"stream\":true");
    let script = match st.script.clone() {
        Script::Auto if wants_stream => Script::Sse {
            piece: 64,
            gate: None,
        },
        Script::Auto => Script::Json,
        other => other,
    };
    Ok(match script {
        Script::Json | Script::Auto => full(
            200,
            "application/json",
            r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-test","content":[{"type":"text","text":"pong-from-upstream"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":11,"output_tokens":22,"cache_creation_input_tokens":3,"cache_read_input_tokens":4}}"#,
        ),
        Script::RateLimited => Response::builder()
            .status(429)
            .header("content-type", "application/json")
            .header("retry-after", "17")
            .header("anthropic-ratelimit-tokens-remaining", "0")
            .header("connection", "x-upstream-private")
            .header("x-upstream-private", "1")
            .body(Full::new(Bytes::from_static(br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#)).boxed())
            .unwrap(),
        Script::StreamError => full(
            200,
            "text/event-stream",
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
        ),
        Script::Sse { piece, gate } => sse(st, piece, gate),
        Script::SlowHead { gate } => {
            let mut note = DropNote(Some((st.closed.clone(), st.closed_note.clone())));
            gate.notified().await;
            note.0 = None;
            st.finished.store(true, Ordering::SeqCst);
            full(200, "application/json", "{}")
        }
    })
}

/// Usage of the Codex answer: 11 in (3 of them cached), 5 out.
pub const CODEX_USAGE: (u64, u64, u64) = (11, 3, 5);
/// Usage of the Gemini answer: 9 prompt (4 cached), 6 candidates + 2 thoughts.
pub const GEMINI_USAGE: (u64, u64, u64, u64) = (9, 4, 6, 2);

/// The Responses API stream Codex reads (`codex-api/src/sse/responses.rs`): the text in an
/// `output_item.done`, usage in `response.completed`.
#[must_use]
pub fn codex_events() -> Vec<String> {
    let (input, cached, output) = CODEX_USAGE;
    let ev = |name: &str, data: serde_json::Value| format!("event: {name}\ndata: {data}\n\n");
    vec![
        ev(
            "response.created",
            serde_json::json!({"type":"response.created","response":{"id":"resp_1"}}),
        ),
        ev(
            "response.output_item.done",
            serde_json::json!({"type":"response.output_item.done","item":{"type":"message","role":"assistant","id":"msg_1","content":[{"type":"output_text","text":REPLY}]}}),
        ),
        ev(
            "response.completed",
            serde_json::json!({"type":"response.completed","response":{"id":"resp_1","usage":{"input_tokens":input,"input_tokens_details":{"cached_tokens":cached},"output_tokens":output,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":input + output}}}),
        ),
    ]
}

/// Code Assist's stream Gemini CLI reads (`code_assist/server.ts`): data lines only, the
/// answer inside `response`, a finish reason so the CLI accepts it.
#[must_use]
pub fn gemini_events() -> Vec<String> {
    let (prompt, cached, candidates, thoughts) = GEMINI_USAGE;
    let chunk = serde_json::json!({"traceId":"trace-1","response":{"candidates":[{"content":{"role":"model","parts":[{"text":REPLY}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":prompt,"cachedContentTokenCount":cached,"candidatesTokenCount":candidates,"thoughtsTokenCount":thoughts,"totalTokenCount":prompt + candidates + thoughts},"modelVersion":"gemini-test"}});
    vec![format!("data: {chunk}\r\n\r\n")]
}

/// The answers of the Codex and Gemini APIs, by path; `None` for Anthropic's.
fn other_provider(path: &str) -> Option<Response<Body>> {
    let sse = |events: Vec<String>| full(200, "text/event-stream", events.concat());
    Some(match path {
        "/backend-api/codex/responses" => sse(codex_events()),
        "/v1internal:streamGenerateContent" => sse(gemini_events()),
        "/v1internal:loadCodeAssist" => full(
            200,
            "application/json",
            r#"{"currentTier":{"id":"standard-tier","name":"Standard"},"allowedTiers":[{"id":"standard-tier","name":"Standard","isDefault":true}],"cloudaicompanionProject":"fake-project"}"#,
        ),
        p if p.starts_with("/v1internal") => full(200, "application/json", "{}"),
        _ => return None,
    })
}

fn sse(st: State, piece: usize, gate: Option<Arc<Notify>>) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    tokio::spawn(async move {
        for (i, event) in sse_events().into_iter().enumerate() {
            for chunk in event.as_bytes().chunks(piece.max(1)) {
                if tx
                    .send(Ok(Frame::data(Bytes::copy_from_slice(chunk))))
                    .await
                    .is_err()
                {
                    st.closed.store(true, Ordering::SeqCst);
                    st.closed_note.notify_waiters();
                    return;
                }
            }
            if i == 0 {
                if let Some(gate) = &gate {
                    tokio::select! {
                        () = gate.notified() => {}
                        () = tx.closed() => {
                            st.closed.store(true, Ordering::SeqCst);
                            st.closed_note.notify_waiters();
                            return;
                        }
                    }
                }
            }
            tokio::task::yield_now().await;
        }
        st.finished.store(true, Ordering::SeqCst);
        // Keep the sender a moment so the end of stream is the body's, not a drop.
        tokio::time::sleep(Duration::from_millis(1)).await;
    });
    let body = StreamBody::new(tokio_stream_from(rx)).boxed();
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .body(body)
        .unwrap()
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<Result<Frame<Bytes>, Infallible>>,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// [`Upstream`] answering as the real API does ([`Script::Auto`]), on a runtime thread of
/// its own, for blocking tests: the real `claude` and the real agent talk to it. Stopped
/// on drop.
pub struct FakeApi {
    pub url: String,
    /// PEM of the CA that signed a TLS fake's certificate ([`FakeApi::start_tls`]).
    pub ca_pem: Option<String>,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeApi {
    /// # Panics
    /// The runtime or the listener cannot start.
    #[must_use]
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// The same over TLS on `https://localhost:PORT`, its certificate signed by a fresh CA
    /// ([`Self::ca_pem`]): for clients that insist on https (Codex's ChatGPT login).
    ///
    /// # Panics
    /// The runtime or the listener cannot start.
    #[must_use]
    pub fn start_tls() -> Self {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Self {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime for the fake API");
            rt.block_on(async move {
                let up = Upstream::start(Script::Auto, tls).await;
                let _ = ready_tx.send((up.url.clone(), up.ca_pem.clone(), Arc::clone(&up.seen)));
                let _ = stopped.await;
                drop(up);
            });
        });
        let (url, ca_pem, seen) = ready_rx
            .recv_timeout(crate::STARTUP_TIMEOUT)
            .expect("the fake API started");
        Self {
            url,
            ca_pem,
            seen,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Every request so far.
    #[must_use]
    pub fn seen(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Bearer tokens of the `/v1/messages` calls so far.
    #[must_use]
    pub fn bearers(&self) -> Vec<String> {
        self.bearers_at("/v1/messages")
    }

    /// Bearer tokens of the calls whose path starts with `prefix`.
    #[must_use]
    pub fn bearers_at(&self, prefix: &str) -> Vec<String> {
        self.seen()
            .iter()
            .filter(|s| s.uri.starts_with(prefix))
            .filter_map(|s| {
                s.headers
                    .get("authorization")?
                    .to_str()
                    .ok()?
                    .strip_prefix("Bearer ")
                    .map(str::to_owned)
            })
            .collect()
    }

    /// [`Self::bearers`] once there are `n` of them, or when `within` has passed.
    #[must_use]
    pub fn wait_bearers(&self, n: usize, within: Duration) -> Vec<String> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline && self.bearers().len() < n {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.bearers()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
