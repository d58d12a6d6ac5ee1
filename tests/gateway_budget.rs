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

/// Two requests pipelined on one connection, as a sandbox may send them: hyper reads the
/// second in the same poll that wrote the first answer, before the gateway's put-off work
/// (metering, the record, releasing the reservation) would otherwise have run. The second
/// must see the first's usage, not its reservation, and the first's in-flight slot free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_request_sees_the_answer_before_it_recorded_and_its_slot_free() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::http(Script::Json).await;
    let gw = Gateway::start(&up.url, None, Limits::default()).await;
    let body =
        r#"{"model":"claude-test","max_tokens":100,"messages":[{"role":"user","content":"ping"}]}"#;
    let estimate = 100 + body.len() as u64 / 4;
    let json_usage = 11 + 22 + 3 + 4;
    // Room for one estimate plus the first's usage, not for two estimates.
    let budget = estimate + json_usage + 10;
    assert!(budget < 2 * estimate);
    let p = gw.grant_with("pipe", "claude", |g| {
        g.daily_token_budget = Some(budget);
        g.max_concurrent = Some(1);
    });
    let request = |close: bool| {
        format!(
            "POST /v1/messages?beta=true HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer {}\r\n\
             user-agent: {}\r\nx-app: cli\r\nanthropic-version: 2023-06-01\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n{}\r\n{body}",
            p.expose(),
            gw::CLAUDE_UA,
            body.len(),
            if close { "connection: close\r\n" } else { "" },
        )
    };
    let mut tcp = tokio::net::TcpStream::connect(gw.url.trim_start_matches("http://"))
        .await
        .unwrap();
    // Both in one write, so both are in the gateway's buffer at once.
    tcp.write_all(format!("{}{}", request(false), request(true)).as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut got))
        .await
        .expect("both answers within the deadline")
        .unwrap();
    let got = String::from_utf8_lossy(&got);
    let statuses: Vec<&str> = got
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &got[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "200"], "{got}");
    let recs = gw::records(&gw.ctx, 2).await;
    assert_eq!(
        recs.iter().map(|r| r.usage.total()).sum::<u64>(),
        2 * json_usage,
        "{recs:?}"
    );
    gw.stop().await;
}
