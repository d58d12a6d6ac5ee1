//! The gateway cannot be stalled, tried as the attacker on the bridge would: silent
//! connections that never send a byte. A lone one is closed by the first-byte deadline;
//! 1100 of them against the real agent under `ulimit -n 1024` fill only the gateway's
//! capped share of descriptors, so `get`, `status` and a real request keep working. Nor
//! by its upstream: no answer head, or an answer that stops, is cut at the idle deadline.

#![cfg(target_os = "linux")]

mod common;
mod gw;
mod kf;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use keyferry::gateway::Limits;
use kf::fake_api::{FakeApi, REPLY};
use kf::{ok, Home};

const SETUP: &str = "sk-ant-oat01-STALLsetupAAAAbbbbCCCC-1111";

/// Whether the peer closed `s` before `within` ran out (a read returns 0 or an error).
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_silent_connection_is_closed_within_its_deadline() {
    let up = gw::upstream::Upstream::http(gw::upstream::Script::Json).await;
    let limits = Limits {
        first_byte_timeout: Duration::from_secs(1),
        max_connections: 2,
        ..Limits::default()
    };
    let g = gw::Gateway::start(&up.url, None, limits).await;
    let addr = g.url.strip_prefix("http://").unwrap().to_owned();
    let placeholder = g.grant("g", "claude");
    let url = g.url.clone();
    tokio::task::spawn_blocking(move || {
        // Both permits taken by silence: each is closed once its deadline passes…
        let mut a = TcpStream::connect(&addr).unwrap();
        let mut b = TcpStream::connect(&addr).unwrap();
        assert!(
            closed_within(&mut a, gw::WAIT),
            "a silent connection stays open"
        );
        assert!(
            closed_within(&mut b, gw::WAIT),
            "a silent connection stays open"
        );
        // …and half an HTTP/2 preface is silence too.
        let mut c = TcpStream::connect(&addr).unwrap();
        c.write_all(b"PRI * HT").unwrap();
        assert!(
            closed_within(&mut c, gw::WAIT),
            "a partial preface stays open"
        );
    })
    .await
    .unwrap();
    // A real client is still served afterwards.
    let (status, _, body) = gw::call(gw::messages(&url, placeholder.expose(), false)).await;
    assert_eq!(status, 200, "{body}");
    g.stop().await;
}

fn raw_post(addr: &str, placeholder: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = r#"{"model":"x","max_tokens":1,"messages":[]}"#;
    write!(
        s,
        "POST /v1/messages?beta=true HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {placeholder}\r\nuser-agent: claude-cli/2 (external, cli)\r\nx-app: cli\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn a_thousand_silent_connections_under_ulimit_1024_starve_nothing() {
    // The attacker's own limit is not the agent's: raise it so the flood is real.
    let mine = keyferry::sys::raise_nofile_limit().unwrap();
    assert!(mine >= 1300, "the test needs 1300 descriptors, has {mine}");
    let api = FakeApi::start();
    let h = Home::new();
    h.write(
        ".config/keyferry/config.toml",
        &format!(
            "[gateway]\nlisten = [\"127.0.0.1:0\"]\nunix_socket = false\nupstream = \"{}\"\nfirst_byte_timeout_secs = 2\n",
            api.url
        ),
        0o600,
    );
    ok(&h.run(&["setup"], Some(SETUP), &[]));
    // Soft and hard limit both 1024: the agent cannot raise its way out.
    let agent = h.start_agent_under(&["prlimit", "--nofile=1024:1024", "--"]);
    let (addr, placeholder) = h.grant_addr("flooded");

    // The flood: past the gateway's cap and the kernel's backlog, a connect waits for the
    // first-byte deadline to free a slot, so it runs on its own thread while the user works.
    let opened = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let flood = {
        let (opened, sa) = (opened.clone(), addr.parse().unwrap());
        std::thread::spawn(move || {
            let mut silent = Vec::new();
            for i in 0..1100 {
                match TcpStream::connect_timeout(&sa, Duration::from_secs(60)) {
                    Ok(s) => silent.push(s),
                    Err(e) => panic!("silent connection {i}: {e}"),
                }
                opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            silent
        })
    };
    common::wait_for("300 silent connections", Duration::from_secs(60), || {
        let n = opened.load(std::sync::atomic::Ordering::Relaxed);
        if n >= 300 {
            Ok(())
        } else {
            Err(format!("{n} open"))
        }
    })
    .unwrap();
    // While the gateway is full of silence: the socket and every source still work.
    let (token, _) = ok(&h.run(&["get", "claude"], None, &[]));
    assert_eq!(token.trim(), SETUP);
    let (status, _) = ok(&h.run(&["status"], None, &[]));
    assert!(!status.to_lowercase().contains("unreadable"), "{status}");
    let silent = flood.join().unwrap();
    assert_eq!(silent.len(), 1100);
    let (token, _) = ok(&h.run(&["get", "claude"], None, &[]));
    assert_eq!(token.trim(), SETUP);
    // A real request waits its turn behind the capped silent ones and is served: never a
    // 502 from a starved source.
    let answer = raw_post(&addr, &placeholder);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(REPLY), "{answer}");
    drop(silent);
    let log = agent.log_text();
    assert!(!log.contains("Too many open files"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_or_stalled_upstream_is_cut_off_at_the_idle_deadline() {
    use gw::upstream::{Script, Upstream};
    let limits = Limits {
        idle_timeout: Duration::from_millis(400),
        ..Limits::default()
    };
    // No answer head ever: a 504 after the deadline, and the connection is closed.
    let never = Arc::new(tokio::sync::Notify::new());
    let up = Upstream::http(Script::SlowHead {
        gate: Arc::clone(&never),
    })
    .await;
    let g = gw::Gateway::start(&up.url, None, limits).await;
    let p = g.grant("box", "claude");
    let started = Instant::now();
    let (resp, _conn) = gw::send_on(gw::messages(&g.url, p.expose(), true)).await;
    assert_eq!(resp.status(), 504);
    assert!(started.elapsed() >= limits.idle_timeout);
    testkit::wait::until(gw::WAIT, "upstream to see its request dropped", || {
        up.closed.load(std::sync::atomic::Ordering::SeqCst)
    })
    .await;
    g.stop().await;

    // The head and the first event, then nothing: the answer ends in an error, recorded.
    let up = Upstream::http(Script::Sse {
        piece: 4096,
        gate: Some(never),
    })
    .await;
    let g = gw::Gateway::start(&up.url, None, limits).await;
    let p = g.grant("box", "claude");
    let (resp, _conn) = gw::send_on(gw::messages(&g.url, p.expose(), true)).await;
    assert_eq!(resp.status(), 200);
    let cut = tokio::time::timeout(gw::WAIT, resp.into_body().collect()).await;
    assert!(cut.expect("cut within the wait").is_err());
    let rec = gw::records(&g.ctx, 1).await;
    assert!(!rec[0].complete);
    let note = rec[0].note.as_deref().unwrap_or_default();
    assert!(note.contains("upstream idle"), "{note}");
    g.stop().await;
}
