//! The gateway benchmark's upstream: the fastest loopback stand-in for the Anthropic API
//! that every measured target (direct, Keyferry's gateway, nginx) stands in front of. No
//! recording, no scripts beyond what `x-bench` asks for: `short` (JSON, the default),
//! `sse` (a short stream), `sse-codex` and `sse-gemini` (the same, shaped as the Responses
//! API's and Code Assist's streams), `bulk` (256 MiB of SSE), `hold` (the first event,
//! then nothing).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// SSE payload streamed by `x-bench: bulk`.
pub const BULK_BYTES: usize = 256 << 20;
const BULK_EVENT: usize = 16 << 10;
pub const SHORT: &str = r#"{"id":"msg_b","type":"message","role":"assistant","content":[{"type":"text","text":"ok"}],"usage":{"input_tokens":3,"output_tokens":1}}"#;

fn sse_start() -> Bytes {
    Bytes::from_static(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n")
}

type Body = BoxBody<Bytes, Infallible>;

async fn handle(req: Request<Incoming>, bulk: Arc<Bytes>) -> Result<Response<Body>, Infallible> {
    let kind = req
        .headers()
        .get("x-bench")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("short")
        .to_owned();
    let _ = req.into_body().collect().await;
    let sse = |body: Body| {
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(body)
            .unwrap()
    };
    Ok(match kind.as_str() {
        "sse" => {
            let tail = Bytes::from_static(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":5}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
            let frames = [sse_start(), tail].map(|b| Ok::<_, Infallible>(Frame::data(b)));
            sse(StreamBody::new(futures_util::stream::iter(frames)).boxed())
        }
        "sse-codex" => {
            let frames = [
                Bytes::from_static(b"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"r\"}}\n\n"),
                Bytes::from_static(b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"r\",\"usage\":{\"input_tokens\":3,\"output_tokens\":5,\"total_tokens\":8}}}\n\n"),
            ]
            .map(|b| Ok::<_, Infallible>(Frame::data(b)));
            sse(StreamBody::new(futures_util::stream::iter(frames)).boxed())
        }
        "sse-gemini" => {
            let frames = [
                Bytes::from_static(b"data: {\"response\":{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"o\"}]}}]}}\r\n\r\n"),
                Bytes::from_static(b"data: {\"response\":{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"k\"}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":3,\"candidatesTokenCount\":5}}}\r\n\r\n"),
            ]
            .map(|b| Ok::<_, Infallible>(Frame::data(b)));
            sse(StreamBody::new(futures_util::stream::iter(frames)).boxed())
        }
        "bulk" => {
            let n = BULK_BYTES / bulk.len();
            let frames = std::iter::once(sse_start())
                .chain((0..n).map(move |_| (*bulk).clone()))
                .map(|b| Ok::<_, Infallible>(Frame::data(b)));
            sse(StreamBody::new(futures_util::stream::iter(frames)).boxed())
        }
        "hold" => {
            // The first event, then nothing until the client goes away.
            let first = futures_util::stream::iter([Ok::<_, Infallible>(Frame::data(sse_start()))]);
            let stream = futures_util::StreamExt::chain(first, futures_util::stream::pending());
            sse(StreamBody::new(stream).boxed())
        }
        _ => Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(SHORT.as_bytes())).boxed())
            .unwrap(),
    })
}

/// Serves on 127.0.0.1:0 on the current runtime; returns the address.
#[must_use]
pub async fn start() -> SocketAddr {
    start_counting().await.0
}

/// [`start`], with the count of connections accepted so far (for a pool's reuse).
#[must_use]
pub async fn start_counting() -> (SocketAddr, Arc<AtomicUsize>) {
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let text = format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"delta\":{{\"text\":\"{}\"}}}}\n\n", "x".repeat(BULK_EVENT - 100));
    let bulk = Arc::new(Bytes::from(text));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let _ = tcp.set_nodelay(true);
            let bulk = Arc::clone(&bulk);
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(req, Arc::clone(&bulk)));
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, accepted)
}
