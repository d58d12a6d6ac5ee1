use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body::Body as _;
use http_body_util::{BodyExt, Full};

use super::*;

fn request(kind: &str) -> Request<OutBody> {
    let mut req = Request::new(
        Full::new(Bytes::from_static(b"{}"))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = Uri::from_static("/v1/messages");
    req.headers_mut()
        .insert("x-bench", HeaderValue::from_str(kind).unwrap());
    req
}

/// One exchange as `MeteredBody` runs it: the head, then the body with the lease driven,
/// then the lease released. Returns the body's length.
async fn exchange(pool: &Arc<Pool>, kind: &str) -> usize {
    let mut idle = IdleTimer::new(Duration::from_secs(5));
    let Ok((resp, mut lease)) = send(pool, request(kind), &mut idle).await else {
        panic!("no answer")
    };
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut n = 0;
    loop {
        let frame =
            poll_fn(|cx| lease.poll_with(cx, |icx| Pin::new(&mut body).poll_frame(icx))).await;
        match frame {
            Some(f) => n += f.unwrap().data_ref().map_or(0, Bytes::len),
            None => break,
        }
    }
    lease.release_now();
    n
}

#[tokio::test]
async fn one_connection_serves_request_after_request() {
    let (addr, accepted) = testkit::bench_upstream::start_counting().await;
    let pool = Pool::for_base(&format!("http://{addr}").parse().unwrap()).unwrap();
    for kind in ["short", "sse", "short", "sse-gemini"] {
        assert!(exchange(&pool, kind).await > 0, "{kind}");
    }
    assert_eq!(accepted.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_lease_dropped_mid_answer_closes_its_connection() {
    let (addr, accepted) = testkit::bench_upstream::start_counting().await;
    let pool = Pool::for_base(&format!("http://{addr}").parse().unwrap()).unwrap();
    let mut idle = IdleTimer::new(Duration::from_secs(5));
    let Ok((resp, lease)) = send(&pool, request("hold"), &mut idle).await else {
        panic!("no answer")
    };
    drop((resp, lease));
    assert_eq!(
        exchange(&pool, "short").await,
        testkit::bench_upstream::SHORT.len()
    );
    assert_eq!(accepted.load(Ordering::Relaxed), 2);
}

#[test]
fn origin_form_keeps_the_prefix_and_shares_a_bare_path() {
    let pq = PathAndQuery::from_static("/v1/messages?beta=true");
    let bare: Uri = "http://127.0.0.1:9".parse().unwrap();
    assert_eq!(
        origin_form(&bare, Some(&pq)).unwrap(),
        "/v1/messages?beta=true"
    );
    let prefixed: Uri = "http://127.0.0.1:9/anthropic/".parse().unwrap();
    assert_eq!(
        origin_form(&prefixed, Some(&pq)).unwrap(),
        "/anthropic/v1/messages?beta=true"
    );
    assert!(Pool::for_base(&"https://api.anthropic.com".parse().unwrap()).is_none());
}
