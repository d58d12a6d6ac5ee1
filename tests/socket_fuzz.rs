//! A live-socket fuzzer against the real `keyferry agent`: random bytes, random and deeply
//! nested JSON, valid requests with hostile field values, and connection churn, from a
//! seeded PRNG (`KF_SOCKET_FUZZ_SEED` replays a run). Throughout, a well-formed client keeps
//! being served the stored token, the agent's RSS stays bounded, and no reply to a hostile
//! input carries the stored token or a secret the hostile input held.

// Real Secret Service and /proc: Linux only.
#![cfg(target_os = "linux")]

mod common;
mod kf;

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use keyferry::client::Client;
use keyferry::protocol::{Request, Status, Token, MAX_LINE, VERSION};
use kf::{ok, AgentProc, Home};

const TOKEN: &str = "sk-ant-oat01-SOCKETfuzzSTOREDtokenQQQQrrrr-7777";
/// How long one hostile exchange may take before the agent counts as stuck.
const EXCHANGE: Duration = Duration::from_secs(10);
/// The agent's resident set must stay below this. Idle it uses ~10–20 MiB; the one thing
/// a client can make it buffer is a request line (at most `MAX_LINE`, 64 KiB, per
/// connection), and this test keeps at most a few dozen connections open at once, so
/// 64 MiB leaves room for the allocator while still catching a per-request or
/// per-connection leak over the thousands of inputs sent here.
const RSS_LIMIT_KIB: u64 = 64 * 1024;
/// Every secret a hostile request carries contains this, so one search finds any echo.
const HOSTILE: &str = "HOSTILEsecretZZ";

/// xorshift64*: tiny, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next().to_le_bytes()[0]).collect()
    }
}

fn seed() -> u64 {
    std::env::var("KF_SOCKET_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6b65_7966_6572_7279)
        | 1
}

/// Writes `payload` on a fresh connection, half-closes, and reads every reply until the
/// agent closes. Fails if the agent keeps the connection past [`EXCHANGE`].
fn exchange(sock: &Path, payload: &[u8]) -> String {
    let mut s = UnixStream::connect(sock).expect("connect to the agent");
    s.set_read_timeout(Some(EXCHANGE)).unwrap();
    s.set_write_timeout(Some(EXCHANGE)).unwrap();
    // The agent may close first (a line over the limit); what it said before counts.
    let _ = s.write_all(payload);
    let _ = s.shutdown(Shutdown::Write);
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!(
                    "the agent kept a hostile connection open for {EXCHANGE:?}; payload starts {:?}",
                    String::from_utf8_lossy(&payload[..payload.len().min(200)])
                )
            }
            // A close with our bytes unread resets the connection: the replies are in.
            Err(_) => break,
        }
    }
    String::from_utf8(out).expect("replies are UTF-8")
}

fn hello() -> String {
    format!("{{\"op\":\"hello\",\"version\":{VERSION}}}\n")
}

/// Every reply line is a JSON object with `ok`, or an event; none leaks a secret.
#[track_caller]
fn check_replies(replies: &str, extra_secret: Option<&str>) {
    assert!(
        !replies.contains(&TOKEN[13..TOKEN.len() - 6]),
        "a hostile input got the stored token back: {}",
        &replies[..replies.len().min(500)]
    );
    assert!(
        !replies.contains(HOSTILE),
        "a hostile input's secret was echoed: {}",
        &replies[..replies.len().min(500)]
    );
    if let Some(s) = extra_secret {
        assert!(!replies.contains(s), "echoed {s:?}");
    }
    for line in replies.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a reply line is not JSON ({e}): {line:.300}"));
        assert!(
            v.get("ok").is_some_and(serde_json::Value::is_boolean) || v.get("event").is_some(),
            "not a reply: {line:.300}"
        );
    }
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("agent alive");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// The well-formed client: handshake, status, get of the stored token. Returns the RSS.
#[track_caller]
fn still_served(agent: &AgentProc, phase: &str) -> u64 {
    let mut c = Client::connect(&agent.sock)
        .unwrap_or_else(|e| panic!("after {phase}: no handshake: {e}\n{}", agent.log_text()));
    let status: Status = c
        .call(Request::Status {
            usage: false,
            usage_of: None,
        })
        .unwrap_or_else(|e| panic!("after {phase}: status failed: {e}"));
    assert!(!status.locked, "after {phase}: the agent is locked");
    let t: Token = c
        .call(Request::Get {
            name: "claude".into(),
        })
        .unwrap_or_else(|e| panic!("after {phase}: get failed: {e}"));
    assert_eq!(t.token.0.expose(), TOKEN, "after {phase}");
    let rss = rss_kib(agent.pid());
    assert!(
        rss < RSS_LIMIT_KIB,
        "after {phase}: agent RSS {rss} KiB is over {RSS_LIMIT_KIB} KiB"
    );
    rss
}

/// A random JSON value; strings carry escapes, NULs, lone surrogates and long runs.
fn json_value(rng: &mut Rng, depth: usize) -> String {
    let leaf = depth == 0 || rng.below(3) == 0;
    match if leaf { rng.below(5) } else { 5 + rng.below(2) } {
        0 => (*rng.pick(&["null", "true", "false"])).to_owned(),
        1 => (*rng.pick(&[
            "0",
            "-1",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775809",
            "1e400",
            "-0.0",
            "4294967296",
            "1.5",
        ]))
        .to_owned(),
        2 => format!("{}", rng.next()),
        3 | 4 => json_string(rng),
        5 => {
            let n = rng.below(5);
            let items: Vec<String> = (0..n).map(|_| json_value(rng, depth - 1)).collect();
            format!("[{}]", items.join(","))
        }
        _ => json_object(rng, depth - 1),
    }
}

fn json_string(rng: &mut Rng) -> String {
    let parts = [
        "claude", "codex", "nope", "\\u0000", "\\ud800", "\\\"", "../../", "/tmp", "é", "\\n",
        "%s%n", "A",
    ];
    let n = rng.below(6);
    let mut s: String = (0..n).map(|_| *rng.pick(&parts)).collect();
    if rng.below(10) == 0 {
        s.push_str(&"x".repeat(rng.below(4000)));
    }
    // "claude" alone would be a legitimate get of the stored token.
    if s == "claude" {
        s.push('2');
    }
    format!("\"{s}\"")
}

/// Ops that cannot change what the well-formed client is served (no lock, clear, store or
/// snapshot: those get their own hostile requests below with safe targets).
const OPS: &[&str] = &[
    "hello",
    "status",
    "get",
    "watch",
    "forget",
    "unlock",
    "settings",
    "approvals",
    "approve",
    "launch_missiles",
];
const KEYS: &[&str] = &[
    "op",
    "id",
    "name",
    "path",
    "version",
    "client",
    "request",
    "decision",
    "notifications",
    "notify_on_access",
    "expiry_thresholds",
    "include_refresh_token",
    "",
];

fn json_object(rng: &mut Rng, depth: usize) -> String {
    let mut fields = Vec::new();
    if rng.below(4) != 0 {
        fields.push(format!("\"op\":\"{}\"", rng.pick(OPS)));
    }
    for _ in 0..rng.below(4) {
        let key = *rng.pick(KEYS);
        if key == "op" {
            continue;
        }
        let value = if key == "expiry_thresholds" {
            // Keep settings from tripping the expiry warnings into floods.
            (*rng.pick(&[
                "[\"9223372036854775807d\"]",
                "[\"-1d\"]",
                "[\"\"]",
                "5",
                "[\"14d\",\"1h\"]",
            ]))
            .to_owned()
        } else {
            json_value(rng, depth)
        };
        fields.push(format!("\"{key}\":{value}"));
    }
    format!("{{{}}}", fields.join(","))
}

/// Valid requests with hostile field values, each with whether the agent must refuse it;
/// each carries a secret marked [`HOSTILE`] where the request has a secret field.
fn hostile_requests(home: &Path) -> Vec<(String, bool)> {
    let h = home.display();
    let big = "A".repeat(MAX_LINE - 100);
    let secret = |prefix: &str| format!("{prefix}{HOSTILE}-0123456789abcdef");
    let json = |v: serde_json::Value| v.to_string();
    use serde_json::json;
    vec![
        // Names: huge, NUL, traversal, look-alikes, wrong types.
        (json(json!({"op":"get","name": big, "id": 1})), true),
        (json(json!({"op":"get","name":"claude\u{0}","id":2})), true),
        (json(json!({"op":"get","name":"\u{0}","id":3})), true),
        (
            json(json!({"op":"get","name":"../../../../etc/shadow"})),
            true,
        ),
        (json(json!({"op":"get","name":"ｃｌａｕｄｅ"})), true),
        (r#"{"op":"get","name":5}"#.to_owned(), true),
        (r#"{"op":"get","name":null}"#.to_owned(), true),
        (r#"{"op":"get","name":["claude"]}"#.to_owned(), true),
        (r#"{"op":"get","name":{"claude":1}}"#.to_owned(), true),
        (r#"{"op":"get"}"#.to_owned(), true),
        // Versions and ids of the wrong shape.
        (r#"{"op":"hello","version":-1}"#.to_owned(), true),
        (r#"{"op":"hello","version":4294967296}"#.to_owned(), true),
        (r#"{"op":"hello","version":"1"}"#.to_owned(), true),
        (r#"{"op":"status","id":-1}"#.to_owned(), true),
        (r#"{"op":"status","id":1e30}"#.to_owned(), true),
        (r#"{"op":"status","id":"x"}"#.to_owned(), true),
        (
            r#"{"op":"status","id":18446744073709551616}"#.to_owned(),
            true,
        ),
        // Stores the agent must refuse, each carrying a secret it must not echo.
        (
            json(json!({"op":"store","name":"nope","token": secret("sk-ant-oat01-")})),
            true,
        ),
        (
            json(json!({"op":"store","name":"claude","token": secret("sk-ant-ort01-")})),
            true,
        ),
        (
            json(json!({"op":"store","name":"claude","token": secret("ghp_")})),
            true,
        ),
        (
            json(
                json!({"op":"store","name":"claude","token": format!("sk-ant-oat01-{HOSTILE} with spaces")}),
            ),
            true,
        ),
        (
            json(
                json!({"op":"store","name":"claude","token": format!("{{\"claudeAiOauth\":{{\"accessToken\":5,\"x\":\"{}\"}}}}", secret("sk-ant-oat01-"))}),
            ),
            true,
        ),
        (
            json(
                json!({"op":"store","name":"claude","token": format!("{{\"claudeAiOauth\":{{\"accessToken\":\"{}\"", secret("sk-ant-oat01-"))}),
            ),
            true,
        ),
        (
            json(
                json!({"op":"store","name":"claude","token": format!("sk-ant-ort01-{HOSTILE}{}", "r".repeat(MAX_LINE - 200))}),
            ),
            true,
        ),
        (
            json(
                json!({"op":"store","name":"claude","token": format!("sk-ant-oat01-{HOSTILE}\u{0}nul")}),
            ),
            true,
        ),
        (
            json(json!({"op":"store","name":"codex","token": secret("sk-proj-")})),
            true,
        ),
        (
            r#"{"op":"store","name":"claude","token":42}"#.to_owned(),
            true,
        ),
        (
            r#"{"op":"store","name":"claude","token":["sk-ant-oat01-x"]}"#.to_owned(),
            true,
        ),
        // Passphrases for an agent that is not locked.
        (json(json!({"op":"unlock","passphrase": secret("")})), false),
        (r#"{"op":"unlock","passphrase":7}"#.to_owned(), true),
        // Snapshot paths: traversal (kept inside this test's directory), NUL, relative,
        // a directory, too long, wrong types.
        (
            json(
                json!({"op":"snapshot","name":"claude","path": format!("{h}/sbx/../../snap-traversal.json")}),
            ),
            false,
        ),
        (
            json(
                json!({"op":"snapshot","name":"claude","path": format!("{h}/sbx\u{0}/../x.json")}),
            ),
            true,
        ),
        (
            json(
                json!({"op":"snapshot","name":"claude","path":"../../../../../tmp/kf-relative.json"}),
            ),
            true,
        ),
        (
            json(json!({"op":"snapshot","name":"claude","path": format!("{h}")})),
            true,
        ),
        (
            json(
                json!({"op":"snapshot","name":"claude","path": format!("{h}/{}", "d".repeat(5000))}),
            ),
            true,
        ),
        (
            json(
                json!({"op":"snapshot","name":"claude","path": format!("{h}/missing-dir/deeper/x.json")}),
            ),
            false,
        ),
        (
            json(json!({"op":"snapshot","name":"nope","path": format!("{h}/nope.json")})),
            true,
        ),
        (
            json(
                json!({"op":"snapshot","name":"claude","path": format!("{h}/s.json"),"include_refresh_token":"yes"}),
            ),
            true,
        ),
        (
            r#"{"op":"snapshot","name":"claude","path":42}"#.to_owned(),
            true,
        ),
        (
            json(json!({"op":"forget","path": format!("{h}/../../../etc/passwd")})),
            false,
        ),
        (json(json!({"op":"forget","path":"\u{0}"})), false),
        // Approvals and settings out of range.
        (
            r#"{"op":"approve","request":-1,"decision":"allow_once"}"#.to_owned(),
            true,
        ),
        (
            r#"{"op":"approve","request":"x","decision":"maybe"}"#.to_owned(),
            true,
        ),
        (
            r#"{"op":"approve","request":18446744073709551615,"decision":"always_allow"}"#
                .to_owned(),
            true,
        ),
        (
            r#"{"op":"settings","expiry_thresholds":["9223372036854775807d"]}"#.to_owned(),
            true,
        ),
        (
            r#"{"op":"settings","expiry_thresholds":["-1d","",null]}"#.to_owned(),
            true,
        ),
        (
            r#"{"op":"settings","notifications":"off"}"#.to_owned(),
            true,
        ),
        // Unknown fields and ops.
        (r#"{"op":"status","verbose":true}"#.to_owned(), true),
        (r#"{"op":"format_disk","path":"/"}"#.to_owned(), true),
    ]
}

#[test]
#[allow(clippy::too_many_lines)]
fn the_agent_survives_hostile_clients_and_keeps_serving() {
    let seed = seed();
    eprintln!("socket fuzz seed: {seed} (KF_SOCKET_FUZZ_SEED replays it)");
    let mut rng = Rng(seed);
    let h = Home::new();
    h.write(".config/keyferry/config.toml", "", 0o600);
    ok(&h.run(&["setup"], Some(TOKEN), &[]));
    let agent = h.start_agent();
    let sock = agent.sock.clone();
    let mut peak = still_served(&agent, "start");

    // 1. Random bytes, with and without a handshake first.
    for i in 0..300 {
        let mut payload = if i % 2 == 0 {
            hello().into_bytes()
        } else {
            Vec::new()
        };
        let n = 1 + rng.below(4096);
        payload.extend(rng.bytes(n));
        if rng.below(2) == 0 {
            payload.push(b'\n');
        }
        let replies = exchange(&sock, &payload);
        // Invalid UTF-8 closes the connection without a reply; the rest must be replies.
        check_replies(&replies, None);
        if i % 100 == 99 {
            peak = peak.max(still_served(&agent, "random bytes"));
        }
    }

    // 2. Deeply nested JSON: over the line limit, under it (serde's recursion limit),
    //    and inside an otherwise valid request.
    let deep = [
        "[".repeat(100_000),
        "[".repeat(MAX_LINE - 10),
        "{\"a\":".repeat(10_000),
        format!("{}{}", "[".repeat(20_000), "]".repeat(20_000)),
        format!(
            "{{\"op\":\"get\",\"name\":{}1{}}}",
            "[".repeat(30_000),
            "]".repeat(30_000)
        ),
        format!(
            "{{\"op\":\"status\",\"id\":{}}}",
            "{\"id\":".repeat(10_000) + "1" + &"}".repeat(10_000)
        ),
    ];
    for d in &deep {
        let replies = exchange(&sock, format!("{}{d}\n{d}\n", hello()).as_bytes());
        check_replies(&replies, None);
        assert!(
            replies.contains("bad_request") || replies.contains("line_too_long"),
            "no refusal for nested input: {replies:.300}"
        );
    }
    peak = peak.max(still_served(&agent, "deep nesting"));

    // 3. Random JSON, several lines per connection.
    for i in 0..800 {
        let mut payload = if rng.below(5) == 0 {
            String::new()
        } else {
            hello()
        };
        for _ in 0..1 + rng.below(4) {
            let depth = rng.below(6);
            payload.push_str(&json_object(&mut rng, depth));
            payload.push('\n');
        }
        check_replies(&exchange(&sock, payload.as_bytes()), None);
        if i % 200 == 199 {
            peak = peak.max(still_served(&agent, "random JSON"));
        }
    }

    // 4. Valid requests with hostile values, one connection each and all on one.
    let requests = hostile_requests(&h.home);
    for (r, must_refuse) in &requests {
        let replies = exchange(&sock, format!("{}{r}\n", hello()).as_bytes());
        check_replies(&replies, None);
        let lines: Vec<&str> = replies.lines().collect();
        assert_eq!(
            lines.len(),
            2,
            "one reply per line for {r:.200}: {replies:.500}"
        );
        let reply: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert!(
            !must_refuse || reply["ok"] == false,
            "not refused: {r:.200} -> {replies:.500}"
        );
    }
    let mut all = hello();
    for (r, _) in &requests {
        all.push_str(r);
        all.push('\n');
    }
    // Longer than one line allows in total, fine per line: each line gets its reply.
    let replies = exchange(&sock, all.as_bytes());
    check_replies(&replies, None);
    assert_eq!(
        replies.lines().count(),
        requests.len() + 1,
        "{replies:.500}"
    );
    peak = peak.max(still_served(&agent, "hostile requests"));

    // 5. Connection churn from four threads while the well-formed client is served.
    let churners: Vec<_> = (0..4u64)
        .map(|t| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(seed ^ (t + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                for _ in 0..200 {
                    let mut s = UnixStream::connect(&sock).expect("connect during churn");
                    s.set_write_timeout(Some(EXCHANGE)).unwrap();
                    match rng.below(4) {
                        0 => {}
                        1 => {
                            let _ = s.write_all(b"{\"op\":\"hel");
                        }
                        2 => {
                            let _ = s.write_all(hello().as_bytes());
                        }
                        _ => {
                            let _ = s.write_all(&vec![b'['; MAX_LINE + 1]);
                        }
                    }
                    drop(s);
                }
            })
        })
        .collect();
    for _ in 0..20 {
        peak = peak.max(still_served(&agent, "churn (during)"));
    }
    for c in churners {
        c.join().expect("a churn thread failed");
    }
    peak = peak.max(still_served(&agent, "churn"));

    // Nothing written outside this test's directory by the traversal attempts.
    assert!(!Path::new("/tmp/kf-relative.json").exists());
    let log = agent.log_text();
    assert!(!log.contains("panicked"), "the agent panicked:\n{log}");
    kf::assert_no_secret(&log, &[TOKEN]);
    assert!(
        !log.contains(HOSTILE),
        "a hostile secret reached the log:\n{log}"
    );
    eprintln!("socket fuzz: agent peak RSS {peak} KiB (limit {RSS_LIMIT_KIB} KiB)");
}
