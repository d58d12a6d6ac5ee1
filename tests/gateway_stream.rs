//! Streaming through the gateway, attacked: events pass as they come, a client that leaves
//! cancels the upstream, usage is metered from answers cut anywhere, limits answer 429,
//! upstream errors pass unchanged, and oversized or slow-loris clients are cut off.

mod gw;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gw::upstream::{sse_events, Script, Upstream, STREAM_USAGE};
use gw::{call, error_type, messages, read_until, records, send_on, Gateway, WAIT};
use http_body_util::{BodyExt, Full, StreamBody};
use keyferry::gateway::{Limits, Usage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

fn usage(
    (input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens): (
        u64,
        u64,
        u64,
        u64,
    ),
) -> Usage {
    Usage {
        input_tokens,
        output_tokens,
        cache_creation_input_tokens,
        cache_read_input_tokens,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_event_arrives_before_upstream_finishes_and_usage_is_metered() {
    let gate = Arc::new(Notify::new());
    let up = Upstream::http(Script::Sse {
        piece: 5,
        gate: Some(gate.clone()),
    })
    .await;
    let gw = Gateway::start(&up.url, None, Limits::default()).await;
    let p = gw.grant("box", "claude");
    let (resp, _conn) = send_on(messages(&gw.url, p.expose(), true)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let first = read_until(&mut body, "\"output_tokens\":1}}}\n\n").await;
    assert!(
        !up.finished.load(Ordering::SeqCst),
        "upstream finished before the first event reached us"
    );
    assert_eq!(first, sse_events()[0]);
    gate.notify_one();
    let rest = tokio::time::timeout(WAIT, body.collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(
        format!("{first}{}", String::from_utf8_lossy(&rest)),
        sse_events().concat()
    );
    assert!(up.finished.load(Ordering::SeqCst));
    let rec = records(&gw.ctx, 1).await;
    assert_eq!(rec[0].usage, usage(STREAM_USAGE));
    assert!(rec[0].complete);
    let g = gw.ctx.grants().get("box").cloned().unwrap();
    assert_eq!((g.requests, g.tokens), (1, usage(STREAM_USAGE)));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_disconnect_cancels_the_upstream_and_shutdown_ends_every_task() {
    let gate = Arc::new(Notify::new());
    let up = Upstream::http(Script::Sse {
        piece: 64,
        gate: Some(gate),
    })
    .await;
    let gw = Gateway::start(&up.url, None, Limits::default()).await;
    let p = gw.grant("box", "claude");
    let (resp, conn) = send_on(messages(&gw.url, p.expose(), true)).await;
    let mut body = resp.into_body();
    read_until(&mut body, "message_start").await;
    let closed = up.closed_note.notified();
    drop(body);
    conn.abort();
    if !up.closed.load(Ordering::SeqCst) {
        tokio::time::timeout(WAIT, closed)
            .await
            .expect("upstream saw its connection close");
    }
    assert!(up.closed.load(Ordering::SeqCst) && !up.finished.load(Ordering::SeqCst));
    let rec = records(&gw.ctx, 1).await;
    assert!(!rec[0].complete);
    assert_eq!(rec[0].note.as_deref(), Some("client disconnected"));
    // Input tokens were counted from message_start even though the answer was cut.
    assert_eq!(rec[0].usage.input_tokens, 25);

    // A stream still open when the gateway stops does not keep it alive.
    let gate2 = Arc::new(Notify::new());
    let up2 = Upstream::http(Script::Sse {
        piece: 64,
        gate: Some(gate2),
    })
    .await;
    let gw2 = Gateway::start(&up2.url, None, Limits::default()).await;
    let p2 = gw2.grant("box", "claude");
    let (resp, _conn) = send_on(messages(&gw2.url, p2.expose(), true)).await;
    let mut body = resp.into_body();
    read_until(&mut body, "message_start").await;
    gw2.stop().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_before_the_answer_head_cancels_the_upstream_too() {
    let gate = Arc::new(Notify::new());
    let up = Upstream::http(Script::SlowHead { gate }).await;
    let gw = Gateway::start(&up.url, None, Limits::default()).await;
    let p = gw.grant("box", "claude");
    let req = messages(&gw.url, p.expose(), true);
    let client = tokio::spawn(async move { send_on(req).await });
    testkit::wait::until(WAIT, "the request to reach upstream", || {
        !up.seen().is_empty()
    })
    .await;
    let closed = up.closed_note.notified();
    client.abort();
    if !up.closed.load(Ordering::SeqCst) {
        tokio::time::timeout(WAIT, closed)
            .await
            .expect("upstream saw its request dropped");
    }
    assert!(!up.finished.load(Ordering::SeqCst));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_json_answer_is_metered_and_a_spent_budget_gets_429() {
    let up = Upstream::http(Script::Json).await;
    let gw = Gateway::start(&up.url, None, Limits::default()).await;
    let p = gw.grant_with("box", "claude", |g| g.daily_token_budget = Some(30));
    let (status, _, body) = call(messages(&gw.url, p.expose(), false)).await;
    assert_eq!(status, 200, "{body}");
    let rec = records(&gw.ctx, 1).await;
    assert_eq!(rec[0].usage, usage((11, 22, 3, 4)));
    let (status, headers, body) = call(messages(&gw.url, p.expose(), false)).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(error_type(&body), "rate_limit_error");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=86400).contains(&retry), "{retry}");
    assert_eq!(
        up.seen().len(),
        1,
        "the over-budget request reached upstream"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_gets_429_and_frees_its_slot() {
    let gate = Arc::new(Notify::new());
    let up = Upstream::http(Script::Sse {
        piece: 64,
        gate: Some(gate.clone()),
    })
    .await;
    let gw = Gateway::start(&up.url, None, Limits::default()).await;
    let p = gw.grant_with("box", "claude", |g| g.max_concurrent = Some(1));
    let (resp, _c) = send_on(messages(&gw.url, p.expose(), true)).await;
    let mut body = resp.into_body();
    read_until(&mut body, "message_start").await;
    let (status, headers, b) = call(messages(&gw.url, p.expose(), true)).await;
    assert_eq!((status, error_type(&b).as_str()), (429, "rate_limit_error"));
    assert_eq!(headers["retry-after"], "1");
    gate.notify_one();
    tokio::time::timeout(WAIT, body.collect())
        .await
        .unwrap()
        .unwrap();
    records(&gw.ctx, 2).await;
    gate.notify_one();
    let (status, _, _) = call(messages(&gw.url, p.expose(), false)).await;
    assert_eq!(status, 200, "the slot was not given back");
    assert_eq!(up.seen().len(), 2);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_pass_through_unchanged_minus_hop_by_hop() {
    let up = Upstream::http(Script::RateLimited).await;
    let gw = Gateway::start(&up.url, None, Limits::default()).await;
    let p = gw.grant("box", "claude");
    let (status, headers, body) = call(messages(&gw.url, p.expose(), false)).await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "17");
    assert_eq!(headers["anthropic-ratelimit-tokens-remaining"], "0");
    assert!(!headers.contains_key("x-upstream-private"));
    assert!(
        !headers.contains_key("x-keyferry-gateway"),
        "upstream's own 429, not ours"
    );
    assert_eq!(
        body,
        r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#
    );
    gw.stop().await;

    let up = Upstream::http(Script::StreamError).await;
    let gw = Gateway::start(&up.url, None, Limits::default()).await;
    let p = gw.grant("box", "claude");
    let (status, _, body) = call(messages(&gw.url, p.expose(), true)).await;
    assert_eq!(status, 200);
    assert!(
        body.starts_with("event: error\ndata: ") && body.contains("overloaded_error"),
        "{body}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_declared_or_streamed() {
    let up = Upstream::http(Script::Json).await;
    let limits = Limits {
        max_body_bytes: 1024,
        ..Limits::default()
    };
    let gw = Gateway::start(&up.url, None, limits).await;
    let p = gw.grant("box", "claude");
    let mut req = messages(&gw.url, p.expose(), false);
    *req.body_mut() = Full::new(Bytes::from(vec![b'x'; 2048]));
    let (status, _, body) = call(req).await;
    assert_eq!(
        (status, error_type(&body).as_str()),
        (413, "request_too_large")
    );
    assert!(up.seen().is_empty());

    // No content-length: the cap is enforced on the stream itself.
    let chunks = (0..8).map(|_| {
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from(vec![b'y'; 512])))
    });
    let req = messages(&gw.url, p.expose(), false)
        .map(|_| StreamBody::new(futures_util::stream::iter(chunks)));
    let (resp, _c) = send_on(req).await;
    let status = resp.status().as_u16();
    let body = tokio::time::timeout(WAIT, resp.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    // The gateway still serves.
    assert_eq!(call(messages(&gw.url, p.expose(), false)).await.0, 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_and_malformed_clients_are_cut_off_while_others_are_served() {
    let up = Upstream::http(Script::Json).await;
    let limits = Limits {
        header_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let gw = Gateway::start(&up.url, None, limits).await;
    let p = gw.grant("box", "claude");
    let addr = gw.url.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-a: ")
        .await
        .unwrap();
    assert_eq!(call(messages(&gw.url, p.expose(), false)).await.0, 200);
    let mut buf = Vec::new();
    // Closed (EOF or reset) within the deadline; a stalled header is never answered 200.
    let _closed = tokio::time::timeout(WAIT, slow.read_to_end(&mut buf))
        .await
        .expect("the gateway closes a stalled header");
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
    // A malformed request head is answered 400 (by hyper) and the gateway serves on.
    let mut junk = tokio::net::TcpStream::connect(&addr).await.unwrap();
    junk.write_all(b"\x00\x01 not http at all\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, junk.read_to_end(&mut buf))
        .await
        .expect("the gateway answers or closes a malformed request");
    assert!(
        String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 400"),
        "{buf:?}"
    );
    assert_eq!(call(messages(&gw.url, p.expose(), false)).await.0, 200);
    assert_eq!(up.seen().len(), 2);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_gets_its_stream_metered_too() {
    // HTTP/2 connections keep hyper-util's server and a clock per request (`clock.rs`).
    let up = Upstream::http(Script::Sse {
        piece: 64,
        gate: None,
    })
    .await;
    let gw = Gateway::start(&up.url, None, Limits::default()).await;
    let p = gw.grant("box", "claude");
    let req = messages(&gw.url, p.expose(), true);
    let tcp = tokio::net::TcpStream::connect(req.uri().authority().unwrap().as_str())
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let _conn = tokio::spawn(conn);
    let resp = tokio::time::timeout(WAIT, sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = tokio::time::timeout(WAIT, resp.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(String::from_utf8_lossy(&body), sse_events().concat());
    let rec = records(&gw.ctx, 1).await;
    assert_eq!(rec[0].usage, usage(STREAM_USAGE));
    assert!(rec[0].complete);
    gw.stop().await;
}
