//! A hostile peer on a gateway listener, from where it sits (a container on the bridge, a
//! user of a remote): silent connections and requests with no valid placeholder, as many as
//! it likes. The agent audits them as one entry per peer per window in the refused peers'
//! own file — the counts add up exactly — and the user's own log holds only the request
//! that opened a grant.

#![cfg(target_os = "linux")]

mod common;
mod kf;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use keyferry::domain::{Access, Op};
use kf::fake_api::FakeApi;
use kf::{ok, Home};
use testkit::wait_some;

const SETUP: &str = "sk-ant-oat01-REFUSEDsetupAAAAbbbbCCCC-5151";
const SILENT: u64 = 40;
const WRONG: u64 = 30;

fn post(addr: &str, bearer: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = r#"{"model":"m","max_tokens":1,"messages":[]}"#;
    write!(
        s,
        "POST /v1/messages HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {bearer}\r\nx-app: cli\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn records(path: &std::path::Path) -> Vec<Access> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// `refused N from PEER in S s: …` → N, for the loopback peer's entries.
fn refused_from_loopback(recs: &[Access]) -> Vec<u64> {
    recs.iter()
        .filter(|a| a.op == Op::Gateway)
        .filter_map(|a| {
            let rest = a.outcome.as_str().strip_prefix("refused ")?;
            let (n, rest) = rest.split_once(' ')?;
            rest.starts_with("from 127.0.0.1 in ")
                .then(|| n.parse().unwrap())
        })
        .collect()
}

#[test]
fn junk_is_audited_once_per_peer_per_window_and_the_counts_add_up() {
    let api = FakeApi::start();
    let h = Home::new();
    h.write(
        ".config/keyferry/config.toml",
        &format!(
            "[gateway]\nlisten = [\"127.0.0.1:0\"]\nunix_socket = false\nupstream = \"{}\"\n\
             first_byte_timeout_secs = 1\nrefusal_audit_secs = 1\n",
            api.url
        ),
        0o600,
    );
    ok(&h.run(&["setup"], Some(SETUP), &[]));
    let _agent = h.start_agent();
    let (addr, placeholder) = h.grant_addr("box");

    // Silent connections, held until the gateway closes them.
    let silent: Vec<TcpStream> = (0..SILENT)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    for _ in 0..WRONG {
        let reply = post(&addr, "kfg_not-a-grant-at-all");
        assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
    }
    let good = post(&addr, &placeholder);
    assert!(good.starts_with("HTTP/1.1 200"), "{good}");
    for mut s in silent {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 1];
        // The gateway closes it (EOF) or resets it: either way it is gone.
        assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)));
    }

    let state = h.path(".local/state/keyferry");
    let counts = wait_some(
        Duration::from_secs(20),
        "every refusal summed in the refused peers' audit",
        || {
            let c = refused_from_loopback(&records(&state.join("audit-refused.jsonl")));
            (c.iter().sum::<u64>() == SILENT + WRONG).then_some(c)
        },
    );
    // Aggregated: a handful of entries (one per window that saw refusals), not 70.
    assert!(counts.len() <= 8, "{counts:?}");
    let all = records(&state.join("audit-refused.jsonl"));
    assert!(
        all.iter().any(|a| a.outcome.as_str().contains("× 401")),
        "{all:?}"
    );
    assert!(
        all.iter().any(|a| a
            .outcome
            .as_str()
            .contains("silent past the first-byte deadline")),
        "{all:?}"
    );
    // The user's own log: the request that opened the grant, on its own; no junk.
    let own = records(&state.join("audit.jsonl"));
    let gateway: Vec<&Access> = own.iter().filter(|a| a.op == Op::Gateway).collect();
    assert_eq!(gateway.len(), 1, "{gateway:?}");
    assert_eq!(gateway[0].credential.as_deref(), Some("box"));
    assert!(
        gateway[0]
            .outcome
            .as_str()
            .starts_with("200 POST /v1/messages"),
        "{gateway:?}"
    );
    // And `keyferry log` shows the summaries with the user's entries.
    let (log, _) = ok(&h.run(&["log", "-n", "50"], None, &[]));
    assert!(
        log.contains("refused") && log.contains("from 127.0.0.1"),
        "{log}"
    );
}

/// Re-issuing a grant says so, and the old placeholder is told why it no longer works.
#[test]
fn a_reissued_grant_says_replaced_and_the_old_placeholder_hears_why() {
    let api = FakeApi::start();
    let h = Home::with_gateway(&api.url, SETUP);
    let _agent = h.start_agent();
    let placeholder = |env: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix("ANTHROPIC_AUTH_TOKEN="))
            .unwrap()
            .to_owned()
    };
    let (env1, err1) = ok(&h.run(&["grant", "box", "--ttl", "1h"], None, &[]));
    assert!(!err1.contains("replaced"), "{err1}");
    let (env2, err2) = ok(&h.run(&["grant", "box", "--ttl", "1h"], None, &[]));
    assert!(err2.contains("replaced grant box"), "{err2}");
    let base = env2
        .lines()
        .find_map(|l| l.strip_prefix("ANTHROPIC_BASE_URL=http://"))
        .unwrap()
        .to_owned();
    let old = post(&base, &placeholder(&env1));
    assert!(old.starts_with("HTTP/1.1 401"), "{old}");
    assert!(old.contains("replaced by a newer grant"), "{old}");
    let new = post(&base, &placeholder(&env2));
    assert!(new.starts_with("HTTP/1.1 200"), "{new}");
    // After `revoke`, the same place says revoked (another grant keeps the port open).
    ok(&h.run(&["grant", "keep", "--ttl", "1h"], None, &[]));
    ok(&h.run(&["revoke", "box"], None, &[]));
    let gone = post(&base, &placeholder(&env2));
    assert!(gone.contains("has been revoked"), "{gone}");
}
