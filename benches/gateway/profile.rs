//! Profile mode (`KF_BENCH_PROFILE=N`): one gateway child behind a wrapper, `N` requests of
//! one kind on one keep-alive connection after a warm-up, then a clean stop so the wrapper
//! reports. Wall-clock figures on a shared 2-core machine drift with the load; instruction
//! counts and context switches do not, so before/after comparisons use these.
//!
//! `KF_BENCH_WRAP`: the wrapper's command line, split on white space (e.g.
//! `valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p` or
//! `perf stat -e task-clock,context-switches`). `KF_BENCH_KIND`: `short` (default), `sse`,
//! `sse-codex`, `sse-gemini`. `KF_BENCH_GATEWAY_RT`: `multi` (default) or `current`.
//! `KF_BENCH_TARGET=nginx` profiles the peer instead (one nginx process, no master, so the
//! wrapper measures the worker), for the same figures side by side.
//! Per request: run twice with different `N` and divide the difference of the totals by
//! the difference of the counts (start-up and warm-up cancel out).

use super::{connect, start_gateway, timed, Target};

const WARM_UP: usize = 200;

pub async fn run(n: usize) {
    let wrap: Vec<String> = std::env::var("KF_BENCH_WRAP")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let kind = std::env::var("KF_BENCH_KIND").unwrap_or_else(|_| "short".into());
    let runtime = std::env::var("KF_BENCH_GATEWAY_RT").unwrap_or_else(|_| "multi".into());
    let (up, accepted) = testkit::bench_upstream::start_counting().await;
    let peer = std::env::var("KF_BENCH_TARGET").as_deref() == Ok("nginx");
    let dir = tempfile::tempdir().unwrap();
    let (child, nginx, t) = if peer {
        let ng = super::nginx::Nginx::start_under(dir.path(), up, super::TOKEN, &wrap)
            .expect("nginx is not installed (apt-get install nginx-light)");
        let t = Target {
            name: "nginx",
            url: ng.url.clone(),
            placeholders: Default::default(),
        };
        (None, Some(ng), t)
    } else {
        let (child, url, placeholders) = start_gateway(&format!("http://{up}"), &runtime, &wrap);
        let t = Target {
            name: "keyferry",
            url,
            placeholders,
        };
        (Some(child), None, t)
    };
    let mut s = connect(&t.url).await;
    for _ in 0..WARM_UP {
        timed(&mut s, &t, &kind).await;
    }
    for _ in 0..n {
        timed(&mut s, &t, &kind).await;
    }
    drop(s);
    if let Some(child) = child {
        child.finish();
    }
    drop(nginx);
    // The pool's reuse: one keep-alive client connection should need one upstream one.
    let conns = accepted.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "PROFILE done: {n} {kind} requests (after {WARM_UP} of warm-up) on {conns} upstream connection(s)"
    );
}
