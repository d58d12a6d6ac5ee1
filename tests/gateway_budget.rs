//! A daily token budget holds under concurrency, tried as a sandbox that wants more than
//! its share: 20 streamed requests at once never get more admitted, or more metered, than
//! the same 20 one after another.
//!
//! The rule shown: a request reserves `max_tokens` + body/4 at admission; one is admitted
//! when what is left today, less what is reserved in flight, covers it (or nothing is in
//! flight and any budget is left). So the day's metered total stays within the budget plus
//! one request's usage.

mod gw;

use std::sync::Arc;

use bytes::Bytes;
use gw::upstream::{Script, Upstream, STREAM_USAGE};
use gw::{Gateway, WAIT};
use http::Request;
use http_body_util::{BodyExt, Full};
use keyferry::gateway::Limits;
use tokio::sync::Notify;

const BUDGET: u64 = 2000;
/// What one streamed answer of the fake upstream meters (input, output and cache tokens).
const ONE: u64 = STREAM_USAGE.0 + STREAM_USAGE.1 + STREAM_USAGE.2 + STREAM_USAGE.3;

/// A streamed Messages request whose `max_tokens` covers what the fake upstream reports.
fn streamed(url: &str, placeholder: &str) -> Request<Full<Bytes>> {
    let body = r#"{"model":"claude-test","max_tokens":400,"stream":true,"messages":[{"role":"user","content":"ping"}]}"#;
    Request::post(format!("{url}/v1/messages?beta=true"))
        .header("authorization", format!("Bearer {placeholder}"))
        .header("user-agent", gw::CLAUDE_UA)
        .header("x-app", "cli")
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// Admitted requests and the tokens metered against the grant once all have ended.
async fn spent(gw: &Gateway, admitted: usize) -> (usize, u64) {
    let recs = gw::records(&gw.ctx, 20).await;
    let ok: Vec<_> = recs.iter().filter(|r| r.status == 200).collect();
    assert_eq!(ok.len(), admitted, "{recs:?}");
    assert!(
        recs.iter().all(|r| r.status == 200 || r.status == 429),
        "{recs:?}"
    );
    (admitted, ok.iter().map(|r| r.usage.total()).sum())
}

async fn sequential() -> (usize, u64) {
    let up = Upstream::http(Script::Sse {
        piece: 64,
        gate: None,
    })
    .await;
    let gw = Gateway::start(&up.url, None, Limits::default()).await;
    let p = gw.grant_with("seq", "claude", |g| g.daily_token_budget = Some(BUDGET));
    let mut admitted = 0;
    for _ in 0..20 {
        let resp = gw::send(streamed(&gw.url, p.expose())).await;
        let status = resp.status().as_u16();
        tokio::time::timeout(WAIT, resp.into_body().collect())
            .await
            .expect("the answer ends in time")
            .unwrap();
        if status == 200 {
            admitted += 1;
        }
    }
    let out = spent(&gw, admitted).await;
    gw.stop().await;
    out
}

async fn parallel() -> (usize, u64) {
    // Every admitted answer is held after its first event until all 20 were decided, so
    // none of them has ended (and been metered) when the others arrive.
    let gate = Arc::new(Notify::new());
    let up = Upstream::http(Script::Sse {
        piece: 64,
        gate: Some(gate.clone()),
    })
    .await;
    let gw = Gateway::start(&up.url, None, Limits::default()).await;
    let p = gw.grant_with("par", "claude", |g| g.daily_token_budget = Some(BUDGET));
    let mut heads = Vec::new();
    for _ in 0..20 {
        let req = streamed(&gw.url, p.expose());
        heads.push(tokio::spawn(async move {
            let (resp, conn) = gw::send_on(req).await;
            let status = resp.status().as_u16();
            let mut body = resp.into_body();
            if status == 200 {
                gw::read_until(&mut body, "message_start").await;
            }
            (status, body, conn)
        }));
    }
    let mut held = Vec::new();
    for h in heads {
        held.push(h.await.unwrap());
    }
    let admitted = held.iter().filter(|(s, _, _)| *s == 200).count();
    let ends = held.into_iter().map(|(_, body, conn)| {
        tokio::spawn(async move {
            let _ = body.collect().await;
            drop(conn);
        })
    });
    let ends: Vec<_> = ends.collect();
    // Release the held answers (a waiter may register late: keep notifying until done).
    testkit::wait::until(WAIT, "the held answers to end", || {
        gate.notify_waiters();
        ends.iter().all(tokio::task::JoinHandle::is_finished)
    })
    .await;
    let out = spent(&gw, admitted).await;
    gw.stop().await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_requests_never_pass_more_of_a_budget_than_sequential_ones() {
    let (seq_n, seq_tokens) = sequential().await;
    let (par_n, par_tokens) = parallel().await;
    assert!(seq_n >= 1 && par_n >= 1, "seq {seq_n}, par {par_n}");
    assert!(
        par_n <= seq_n,
        "{par_n} parallel requests admitted against {seq_n} sequential ones"
    );
    assert!(
        seq_tokens <= BUDGET + ONE,
        "sequential metered {seq_tokens}"
    );
    assert!(
        par_tokens <= BUDGET + ONE,
        "parallel metered {par_tokens} against a budget of {BUDGET}"
    );
}
