//! Side-by-side benchmark of the Keyferry gateway against nginx, both in front of the same
//! fast loopback upstream (a tiny hyper server in this process), and of the upstream
//! reached directly.
//!
//! Reproduce (from the crate root): `cargo bench --bench gateway`.
//! Knobs: `KF_BENCH_ROUNDS` (interleaved rounds, default 30), `KF_BENCH_STREAMS` (idle
//! streams for the RSS figure, default 1000). `KF_BENCH_PROFILE=N` runs only the gateway,
//! under `KF_BENCH_WRAP` (see `profile.rs`), for instruction counts and context switches.
//!
//! Measures, per target: added latency p50/p99 of short `POST /v1/messages` (one
//! keep-alive connection, rounds interleaved across targets), time to the first SSE event,
//! SSE throughput (256 MiB in 16 KiB events), and the gateway's RSS with N idle open
//! streams. The gateway runs as a child process (this binary, `KF_BENCH_ROLE=gateway`) so
//! its RSS is its own; nginx runs with 2 workers on this 2-core class of machine. A second
//! gateway runs on a current-thread runtime (`keyferry (1 thread)`), to show what the
//! cross-thread wake-ups of the multi-thread runtime cost.

#[path = "child.rs"]
mod child;
#[path = "nginx.rs"]
mod nginx;
#[path = "profile.rs"]
mod profile;

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

pub const TOKEN: &str = "sk-ant-oat01-BENCHhostTOKEN-0000";
const DEADLINE: Duration = Duration::from_secs(60);

pub struct Target {
    pub name: &'static str,
    pub url: String,
    /// The Claude, Codex and Gemini grants' placeholders (unused by direct and nginx).
    pub placeholders: [String; 3],
}

/// What a request of `kind` is: its path and which placeholder it carries.
fn route(kind: &str) -> (&'static str, usize) {
    match kind {
        "sse-codex" => ("/backend-api/codex/responses", 1),
        "sse-gemini" => ("/v1internal:streamGenerateContent?alt=sse", 2),
        _ => ("/v1/messages?beta=true", 0),
    }
}

/// `/proc/loadavg`'s one-minute figure: a noisy machine shows in the report.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn main() -> ExitCode {
    if std::env::var("KF_BENCH_ROLE").as_deref() == Ok("gateway") {
        child::gateway_role();
        return ExitCode::SUCCESS;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    if let Ok(n) = std::env::var("KF_BENCH_PROFILE") {
        rt.block_on(profile::run(
            n.parse().expect("KF_BENCH_PROFILE: a request count"),
        ));
        return ExitCode::SUCCESS;
    }
    rt.block_on(run());
    ExitCode::SUCCESS
}

pub struct GatewayChild(Child);

impl GatewayChild {
    /// Closes its stdin (the gateway stops) and waits: a wrapper (valgrind, perf stat)
    /// then writes its report.
    pub fn finish(mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

impl Drop for GatewayChild {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            testkit::signal_group(self.0.id(), libc::SIGKILL);
            let _ = self.0.wait();
        }
    }
}

/// The gateway child on `runtime` (`multi` or `current`), run under `wrap` (a command and
/// its arguments, the gateway's own command line appended) when that is not empty.
pub fn start_gateway(
    upstream: &str,
    runtime: &str,
    wrap: &[String],
) -> (GatewayChild, String, [String; 3]) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = match wrap.split_first() {
        Some((bin, args)) => {
            let mut c = Command::new(bin);
            c.args(args).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    cmd.env("KF_BENCH_ROLE", "gateway")
        .env("KF_BENCH_GATEWAY_RT", runtime)
        .env("KF_BENCH_UPSTREAM", upstream)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    testkit::isolate(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut parts = line.split_whitespace().skip(1).map(str::to_owned);
    let url = parts.next().unwrap();
    let p = [(); 3].map(|()| parts.next().unwrap());
    (GatewayChild(child), url, p)
}

pub async fn connect(url: &str) -> SendRequest<Full<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(url.trim_start_matches("http://"))
        .await
        .unwrap();
    tcp.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

fn request(t: &Target, kind: &str) -> Request<Full<Bytes>> {
    let authority = t.url.trim_start_matches("http://").to_owned();
    let (path, which) = route(kind);
    Request::post(path)
        .header("host", authority)
        .header("authorization", format!("Bearer {}", t.placeholders[which]))
        .header("user-agent", "claude-cli/bench")
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .header("x-bench", kind)
        .body(Full::new(Bytes::from_static(
            br#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .unwrap()
}

/// Sends `kind` and returns (time to first body byte, time to the end, bytes).
pub async fn timed(
    s: &mut SendRequest<Full<Bytes>>,
    t: &Target,
    kind: &str,
) -> (Duration, Duration, usize) {
    let start = Instant::now();
    s.ready().await.unwrap();
    let resp = tokio::time::timeout(DEADLINE, s.send_request(request(t, kind)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", t.name);
    let mut body: Incoming = resp.into_body();
    let (mut first, mut n) = (None, 0);
    while let Some(f) = tokio::time::timeout(DEADLINE, body.frame()).await.unwrap() {
        if let Some(d) = f.unwrap().data_ref() {
            first.get_or_insert_with(|| start.elapsed());
            n += d.len();
        }
    }
    (first.unwrap_or_default(), start.elapsed(), n)
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e3
}

fn rss_kb(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Opens `n` streams that stay open after their first event; returns them (keep alive).
async fn hold_streams(t: &Target, n: usize) -> Vec<(SendRequest<Full<Bytes>>, Incoming)> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = connect(&t.url).await;
        let resp = tokio::time::timeout(DEADLINE, s.send_request(request(t, "hold")))
            .await
            .unwrap()
            .unwrap();
        let mut body = resp.into_body();
        tokio::time::timeout(DEADLINE, body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        out.push((s, body));
    }
    out
}

async fn run() {
    let rounds = env_usize("KF_BENCH_ROUNDS", 30);
    let streams = env_usize("KF_BENCH_STREAMS", 1000);
    let up = testkit::bench_upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let load_before = load_average();
    let (gw_child, gw_url, placeholders) = start_gateway(&format!("http://{up}"), "multi", &[]);
    let (_gw1_child, gw1_url, placeholders1) =
        start_gateway(&format!("http://{up}"), "current", &[]);
    let none = || [(); 3].map(|()| "none".to_owned());
    let ng = nginx::Nginx::start(dir.path(), up, TOKEN);
    let mut targets = vec![
        Target {
            name: "direct",
            url: format!("http://{up}"),
            placeholders: none(),
        },
        Target {
            name: "keyferry",
            url: gw_url,
            placeholders,
        },
    ];
    if let Some(n) = &ng {
        targets.push(Target {
            name: "nginx",
            url: n.url.clone(),
            placeholders: none(),
        });
    } else {
        eprintln!("nginx not found (apt-get install nginx-light): its column is left out");
    }
    targets.push(Target {
        name: "keyferry (1 thread)",
        url: gw1_url,
        placeholders: placeholders1,
    });
    let mut conns = Vec::new();
    for t in &targets {
        conns.push(connect(&t.url).await);
    }
    // Warm-up: connections, pools, caches.
    for (t, s) in targets.iter().zip(conns.iter_mut()) {
        for _ in 0..300 {
            timed(s, t, "short").await;
        }
    }
    let mut short = vec![Vec::new(); targets.len()];
    let mut ttfb = vec![Vec::new(); targets.len()];
    // The same short stream shaped as Codex's and Gemini's: their providers' metering.
    let mut ttfb_codex = vec![Vec::new(); targets.len()];
    let mut ttfb_gemini = vec![Vec::new(); targets.len()];
    // Added p50 per round (target's p50 minus direct's in the same round): the machine's
    // background load drifts between rounds, much less within one.
    let mut added_rounds = vec![Vec::new(); targets.len()];
    for _ in 0..rounds {
        let mut round_p50 = Vec::new();
        for (i, (t, s)) in targets.iter().zip(conns.iter_mut()).enumerate() {
            let mut these = Vec::with_capacity(300);
            for _ in 0..300 {
                these.push(timed(s, t, "short").await.1);
            }
            round_p50.push(pct(&mut these, 0.5));
            short[i].extend(these);
            for _ in 0..50 {
                ttfb[i].push(timed(s, t, "sse").await.0);
                ttfb_codex[i].push(timed(s, t, "sse-codex").await.0);
                ttfb_gemini[i].push(timed(s, t, "sse-gemini").await.0);
            }
        }
        for (i, p) in round_p50.iter().enumerate() {
            added_rounds[i].push(p - round_p50[0]);
        }
    }
    let mut mbps = vec![Vec::new(); targets.len()];
    for _ in 0..3 {
        for (i, (t, s)) in targets.iter().zip(conns.iter_mut()).enumerate() {
            let (_, total, n) = timed(s, t, "bulk").await;
            mbps[i].push(n as f64 / 1e6 / total.as_secs_f64());
        }
    }
    let gw_pid = gw_child.0.id();
    let rss_before = rss_kb(gw_pid);
    let held = hold_streams(&targets[1], streams).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_streams = rss_kb(gw_pid);
    drop(held);
    let ng_rss = if let (Some(n), Some(t)) = (&ng, targets.iter().find(|t| t.name == "nginx")) {
        let held = hold_streams(t, streams).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let kb: u64 = n.pids().iter().map(|p| rss_kb(*p)).sum();
        drop(held);
        Some(kb)
    } else {
        None
    };

    let p99_direct = pct(&mut short[0], 0.99);
    let load_after = load_average();
    let mut table =
        format!("load average (1 min): {load_before} at the start, {load_after} at the end\n\n");
    table.push_str("| target | short p50 (ms) | short p99 (ms) | added p50 (ms, median of rounds) | added p99 (ms) | first SSE event p50 (ms) | Codex SSE first event p50 (ms) | Gemini SSE first event p50 (ms) | SSE MB/s (median of 3) |\n|---|---|---|---|---|---|---|---|---|\n");
    let mut json = serde_json::Map::new();
    for (i, t) in targets.iter().enumerate() {
        let (p50, p99) = (pct(&mut short[i], 0.5), pct(&mut short[i], 0.99));
        let tf = pct(&mut ttfb[i], 0.5);
        let (tc, tg) = (pct(&mut ttfb_codex[i], 0.5), pct(&mut ttfb_gemini[i], 0.5));
        mbps[i].sort_by(f64::total_cmp);
        let m = mbps[i][1];
        added_rounds[i].sort_by(f64::total_cmp);
        let a50 = added_rounds[i][added_rounds[i].len() / 2];
        let a99 = p99 - p99_direct;
        let _ = writeln!(
            table,
            "| {} | {p50:.3} | {p99:.3} | {a50:.3} | {a99:.3} | {tf:.3} | {tc:.3} | {tg:.3} | {m:.0} |",
            t.name
        );
        json.insert(t.name.into(), serde_json::json!({"p50_ms": p50, "p99_ms": p99, "added_p50_ms": a50, "added_p99_ms": a99, "ttfb_p50_ms": tf, "codex_ttfb_p50_ms": tc, "gemini_ttfb_p50_ms": tg, "sse_mb_s": m}));
    }
    let _ = writeln!(
        table,
        "\nKeyferry gateway RSS: {:.1} MB idle, {:.1} MB with {streams} idle open streams",
        rss_before as f64 / 1024.0,
        rss_streams as f64 / 1024.0
    );
    if let Some(kb) = ng_rss {
        let _ = writeln!(
            table,
            "nginx RSS (master + workers) with {streams} idle open streams: {:.1} MB",
            kb as f64 / 1024.0
        );
    }
    json.insert("load_before".into(), load_before.into());
    json.insert("load_after".into(), load_after.into());
    json.insert(
        "gateway_rss_mb_idle".into(),
        (rss_before as f64 / 1024.0).into(),
    );
    json.insert(
        "gateway_rss_mb_streams".into(),
        (rss_streams as f64 / 1024.0).into(),
    );
    println!("{table}");
    println!("BENCH_JSON {}", serde_json::Value::Object(json));
}
