//! The restricted socket (gpg-agent's extra socket), locally and forwarded over `ssh -R` to a
//! real sshd as a second Unix user: `get` of the listed credentials is answered, everything
//! else (store, clear, lock, snapshot, settings, approvals, watch, other credentials, junk,
//! a 10 MiB line) is refused and audited, and the agent serves its own socket throughout.

#![cfg(target_os = "linux")]

mod common;
mod kf;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use keyferry::protocol::VERSION;
use kf::{ok, text, Home};

const TOKEN: &str = "sk-ant-oat01-REMOTEtokenAAAAbbbbCCCC-1111";
const CODEX: &str = "sk-proj-CODEXkeyNEVERremoteDDDD-9999";

fn home() -> (Home, std::path::PathBuf) {
    let h = Home::new();
    h.write(".config/cf/claude-token", &format!("{TOKEN}\n"), 0o600);
    h.write(
        ".codex/auth.json",
        &format!("{{\"OPENAI_API_KEY\":\"{CODEX}\"}}"),
        0o600,
    );
    let restricted = h.path("run-remote/agent.sock");
    h.write(
        ".config/keyferry/config.toml",
        &format!(
            "[agent]\nrestricted_socket = \"{}\"\nrestricted_credentials = [\"claude\"]\n[gateway]\nlisten = []\nunix_socket = false\n",
            restricted.display()
        ),
        0o600,
    );
    (h, restricted)
}

/// Sends `lines` on one connection and reads one reply per line.
fn exchange(sock: &std::path::Path, lines: &[String]) -> Vec<serde_json::Value> {
    let s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    lines
        .iter()
        .map(|l| {
            writeln!(w, "{l}").unwrap();
            let mut reply = String::new();
            r.read_line(&mut reply)
                .expect("a reply before the deadline");
            serde_json::from_str(&reply).unwrap()
        })
        .collect()
}

fn hello() -> String {
    format!("{{\"op\":\"hello\",\"version\":{VERSION}}}")
}

#[test]
fn the_restricted_socket_serves_get_and_refuses_everything_else() {
    let (h, restricted) = home();
    let agent = h.start_agent();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&restricted).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let mut lines = vec![
        hello(),
        r#"{"op":"get","name":"claude"}"#.to_owned(),
        r#"{"op":"status"}"#.to_owned(),
    ];
    let refused = [
        r#"{"op":"get","name":"codex"}"#,
        r#"{"op":"store","name":"claude","token":"sk-ant-oat01-EVIL"}"#,
        r#"{"op":"clear","name":"claude"}"#,
        r#"{"op":"lock"}"#,
        r#"{"op":"snapshot","name":"claude","path":"/tmp/x.json"}"#,
        r#"{"op":"settings","notifications":false}"#,
        r#"{"op":"approvals"}"#,
        r#"{"op":"watch"}"#,
        r#"{"op":"grant","name":"g","credential":"claude","ttl_secs":60}"#,
    ];
    lines.extend(refused.iter().map(|s| (*s).to_owned()));
    lines.push("not json at all".to_owned());
    let replies = exchange(&restricted, &lines);
    assert_eq!(replies[1]["result"]["token"], TOKEN);
    let names: Vec<&str> = replies[2]["result"]["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["claude"]);
    for (i, line) in refused.iter().enumerate() {
        assert_eq!(
            replies[3 + i]["error"]["code"],
            "forbidden_op",
            "{line}: {}",
            replies[3 + i]
        );
    }
    assert_eq!(replies.last().unwrap()["error"]["code"], "bad_request");
    let all = serde_json::to_string(&replies).unwrap();
    assert!(!all.contains(CODEX));
    // A 10 MiB line closes that connection only.
    let mut s = UnixStream::connect(&restricted).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(&vec![b'x'; 10 << 20]);
    // The agent still serves both sockets, and kept the store untouched.
    assert_eq!(
        agent.client().get("claude").unwrap().token.0.expose(),
        TOKEN
    );
    assert_eq!(
        exchange(
            &restricted,
            &[hello(), r#"{"op":"get","name":"claude"}"#.into()]
        )[1]["result"]["token"],
        TOKEN
    );
    let (log, _) = ok(&h.run(&["log", "--json", "-n", "500"], None, &[]));
    assert!(log.contains("\"op\":\"remote-get\""), "{log}");
    assert!(
        log.contains("\"op\":\"remote-store\"") && log.contains("forbidden_op"),
        "{log}"
    );
    assert!(!log.contains("EVIL"));
}

#[test]
fn forwarded_over_ssh_the_remote_gets_only_what_the_socket_serves() {
    common::require_root("sshd, and a second Unix user created with useradd");
    let user = "kfother";
    kf::ensure_user(user);
    let sshd = kf::sshd::Sshd::start(user);
    let (h, restricted) = home();
    let _agent = h.start_agent();
    let remote = format!("/tmp/kf-forward-{}.sock", std::process::id());
    let script = format!(
        "printf '%s\\n' '{}' '{{\"op\":\"get\",\"name\":\"claude\"}}' '{{\"op\":\"store\",\"name\":\"claude\",\"token\":\"x\"}}' '{{\"op\":\"settings\"}}' '{{\"op\":\"approvals\"}}' '{{\"op\":\"snapshot\",\"name\":\"claude\",\"path\":\"/tmp/s\"}}' | socat -t 3 - UNIX-CONNECT:{remote}; rm -f {remote}",
        hello()
    );
    let mut cmd = Command::new("ssh");
    cmd.args(["-o", "ExitOnForwardFailure=yes", "-R"])
        .arg(format!("{remote}:{}", restricted.display()))
        .args(sshd.args(user))
        .arg(&script);
    let out = common::run_with_timeout(&mut cmd, None, Duration::from_secs(60));
    let stdout = text(&out.stdout);
    let replies: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(replies.len(), 6, "{stdout}\n{}", text(&out.stderr));
    assert_eq!(replies[1]["result"]["token"], TOKEN);
    for r in &replies[2..] {
        assert_eq!(r["error"]["code"], "forbidden_op", "{r}");
    }
}
