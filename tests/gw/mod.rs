//! Shared harness for the gateway tests: an in-process gateway on loopback with the
//! in-memory context, a test-owned upstream, and a plain HTTP/1.1 client.

#![allow(dead_code)]

/// The one fake Anthropic API, testkit's.
pub use testkit::fake_api as upstream;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use keyferry::credential::Kind;
use keyferry::gateway::{self, Limits, ListenSpec, Listener, MemoryContext, NewGrant};
use keyferry::Secret;
use tokio::sync::oneshot;

pub const OAUTH: &str = "sk-ant-oat01-GATEWAYhostTOKENaaaaBBBB-1111";
pub const OAUTH_B: &str = "sk-ant-oat01-GATEWAYrerolledTOKENcccc-2222";
pub const API_KEY: &str = "sk-ant-api03-GATEWAYhostKEYdddd-3333";
pub const CLAUDE_UA: &str = "claude-cli/2.1.197 (external, sdk-cli)";
/// Every wait in these tests ends by this deadline.
pub const WAIT: Duration = Duration::from_secs(20);

pub struct Gateway {
    pub url: String,
    pub socket: Option<PathBuf>,
    pub ctx: Arc<MemoryContext>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// A gateway in front of `upstream_url`, one OAuth credential `claude` holding
    /// [`OAUTH`], listening on 127.0.0.1:0 and a Unix socket.
    pub async fn start(upstream_url: &str, extra_ca: Option<&Path>, limits: Limits) -> Self {
        let up = keyferry::http::Upstream::new(upstream_url, extra_ca).unwrap();
        let ctx = Arc::new(MemoryContext::new(up));
        ctx.set_token("claude", Kind::ClaudeOauth, Secret::new(OAUTH.into()));
        ctx.set_token("key", Kind::ApiKey, Secret::new(API_KEY.into()));
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("run/gateway.sock");
        let tcp = Listener::bind(&"127.0.0.1:0".parse().unwrap(), false)
            .await
            .unwrap();
        let unix = Listener::bind(&ListenSpec::Unix(sock.clone()), false)
            .await
            .unwrap();
        let url = tcp.base_url();
        let (tx, rx) = oneshot::channel();
        let c: Arc<dyn gateway::GatewayContext> = ctx.clone();
        let task = tokio::spawn(gateway::run(vec![tcp, unix], c, limits, async {
            let _ = rx.await;
        }));
        Self {
            url,
            socket: Some(sock),
            ctx,
            stop: Some(tx),
            task: Some(task),
            _dir: dir,
        }
    }

    pub fn grant(&self, name: &str, credential: &str) -> Secret {
        self.grant_with(name, credential, |_| {})
    }

    pub fn grant_with(
        &self,
        name: &str,
        credential: &str,
        f: impl FnOnce(&mut NewGrant),
    ) -> Secret {
        let mut spec = NewGrant {
            name: name.into(),
            credential: credential.into(),
            ttl: Duration::from_secs(3600),
            max_concurrent: None,
            daily_token_budget: None,
        };
        f(&mut spec);
        self.ctx.grant(spec).unwrap()
    }

    /// Stops the gateway and waits for every task to end (bounded).
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(WAIT, self.task.take().unwrap())
            .await
            .expect("the gateway stops within the deadline")
            .unwrap();
    }
}

/// A Messages request as Claude Code sends it.
pub fn messages(url: &str, placeholder: &str, stream: bool) -> Request<Full<Bytes>> {
    let body = format!(
        r#"{{"model":"claude-test","max_tokens":16,"stream":{stream},"messages":[{{"role":"user","content":"ping"}}]}}"#
    );
    Request::post(format!("{url}/v1/messages?beta=true"))
        .header("authorization", format!("Bearer {placeholder}"))
        .header("user-agent", CLAUDE_UA)
        .header("x-app", "cli")
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "claude-code-20250219")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// Sends one request on a fresh HTTP/1.1 connection; the connection lives as long as the
/// returned answer's body is read.
pub async fn send(req: Request<Full<Bytes>>) -> Response<Incoming> {
    send_on(req).await.0
}

/// Like [`send`], also returning the connection's task: aborting it closes the socket.
pub async fn send_on<B>(req: Request<B>) -> (Response<Incoming>, tokio::task::JoinHandle<()>)
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let authority = req.uri().authority().unwrap().to_string();
    let tcp = tokio::net::TcpStream::connect(authority).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = tokio::time::timeout(WAIT, sender.send_request(req))
        .await
        .expect("an answer in time")
        .unwrap();
    (resp, task)
}

/// Reads frames until `needle` has arrived; returns everything read so far.
pub async fn read_until(body: &mut Incoming, needle: &str) -> String {
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains(needle) {
        let frame = tokio::time::timeout(WAIT, body.frame())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{needle:?} did not arrive; got {:?}",
                    String::from_utf8_lossy(&got)
                )
            })
            .expect("the stream ended early")
            .unwrap();
        if let Some(d) = frame.data_ref() {
            got.extend_from_slice(d);
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Sends and reads the whole answer.
pub async fn call(req: Request<Full<Bytes>>) -> (u16, http::HeaderMap, String) {
    let resp = send(req).await;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = tokio::time::timeout(WAIT, resp.into_body().collect())
        .await
        .expect("body in time")
        .unwrap()
        .to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// The Anthropic error type of a refusal body.
pub fn error_type(body: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("JSON error body: {body}"));
    assert_eq!(v["type"], "error", "{body}");
    v["error"]["type"].as_str().unwrap().to_owned()
}

/// Waits (bounded) until the context holds `n` records.
pub async fn records(ctx: &MemoryContext, n: usize) -> Vec<keyferry::gateway::RequestRecord> {
    let what = format!("{n} records");
    testkit::wait::until_some(WAIT, &what, || {
        let r = ctx.records();
        (r.len() >= n).then_some(r)
    })
    .await
}
