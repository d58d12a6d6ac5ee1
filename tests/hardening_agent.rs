//! The agent as an attacker with the user's uid would try it: answering approvals from socat,
//! guessing the lock passphrase, being served an expired token; and a pending approval that
//! must not stall its own connection.

#![cfg(target_os = "linux")]

mod common;
mod kf;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use keyferry::client::ClientError;
use keyferry::domain::Decision;
use keyferry::protocol::{Event, VERSION};
use kf::{text, Home};

const TOKEN: &str = "sk-ant-oat01-HARDtokenAAAAbbbbCCCCdddd-1111";
const CODEX: &str = "sk-proj-CODEXkeyAAAAbbbbCCCC-9999";

/// A home with a claude token, and codex under `ask`; `approvers` listed in config.
fn home(approvers: &[&str]) -> Home {
    let h = Home::new();
    h.write(".config/cf/claude-token", &format!("{TOKEN}\n"), 0o600);
    h.write(
        ".codex/auth.json",
        &format!("{{\"OPENAI_API_KEY\":\"{CODEX}\"}}"),
        0o600,
    );
    let list: Vec<String> = approvers.iter().map(|a| format!("{a:?}")).collect();
    h.write(
        ".config/keyferry/config.toml",
        &format!(
            "[policy]\napprovers = [{}]\n[policy.codex]\nmode = \"ask\"\n[agent]\napproval_timeout_secs = 20\n",
            list.join(", ")
        ),
        0o600,
    );
    h
}

/// This test binary: listed as an approver where a test must answer approvals.
fn me() -> String {
    std::env::current_exe().unwrap().display().to_string()
}

/// socat as a raw client: sends `lines`, waits up to 2 s for the replies.
fn socat(sock: &std::path::Path, lines: &str) -> String {
    let mut cmd = Command::new("socat");
    cmd.args(["-t", "2", "-", &format!("UNIX-CONNECT:{}", sock.display())]);
    text(
        &common::run_with_timeout(&mut cmd, Some(lines.as_bytes()), Duration::from_secs(20)).stdout,
    )
}

/// An approver connection of this test binary, its reads bounded.
fn approver(agent: &kf::AgentProc) -> keyferry::client::Client {
    let mut c = agent.client();
    c.approvals().unwrap();
    c.set_timeout(Some(Duration::from_secs(10)));
    c
}

/// The id of the next approval request, within an overall deadline.
fn wait_approval(c: &mut keyferry::client::Client) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "no approval event");
        if let Event::Approval { approval } = c.next_event().expect("an event") {
            return approval.request;
        }
    }
}

#[test]
fn socat_cannot_register_as_an_approver() {
    let h = home(&[]);
    let agent = h.start_agent();
    let out = socat(
        &agent.sock,
        &format!("{{\"op\":\"hello\",\"version\":{VERSION}}}\n{{\"op\":\"approvals\",\"id\":2}}\n{{\"op\":\"approve\",\"request\":1,\"decision\":\"allow_once\",\"id\":3}}\n"),
    );
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[1]["error"]["code"], "not_an_approver", "{out}");
    assert!(
        lines[1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("[policy] approvers"),
        "{out}"
    );
    assert_eq!(lines[2]["error"]["code"], "not_an_approver", "{out}");
    let (log, _) = kf::ok(&h.run(&["log", "--json"], None, &[]));
    assert!(
        log.contains("\"op\":\"approvals\"") && log.contains("/usr/bin/socat"),
        "{log}"
    );
}

#[test]
fn a_pending_approval_does_not_stall_its_own_connection() {
    let h = home(&[&me()]);
    let agent = h.start_agent();
    let mut approver = approver(&agent);
    let s = UnixStream::connect(&agent.sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut read = || {
        let mut line = String::new();
        r.read_line(&mut line).expect("a reply before the deadline");
        serde_json::from_str::<serde_json::Value>(&line).unwrap()
    };
    writeln!(w, "{{\"op\":\"hello\",\"version\":{VERSION},\"id\":1}}").unwrap();
    assert_eq!(read()["id"], 1);
    writeln!(w, "{{\"op\":\"get\",\"name\":\"codex\",\"id\":2}}").unwrap();
    let request = wait_approval(&mut approver);
    // The get waits on the approver; the same connection still answers status at once.
    writeln!(w, "{{\"op\":\"status\",\"id\":3}}").unwrap();
    let status = read();
    assert_eq!(status["id"], 3, "{status}");
    assert_eq!(status["ok"], true);
    approver.approve(request, Decision::AllowOnce).unwrap();
    let got = read();
    assert_eq!(got["id"], 2, "{got}");
    assert_eq!(got["result"]["token"], CODEX);
}

#[test]
fn a_client_that_stops_sending_still_gets_its_pending_answer() {
    let h = home(&[&me()]);
    let agent = h.start_agent();
    let mut approver = approver(&agent);
    let s = UnixStream::connect(&agent.sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = s.try_clone().unwrap();
    writeln!(w, "{{\"op\":\"hello\",\"version\":{VERSION},\"id\":1}}").unwrap();
    writeln!(w, "{{\"op\":\"get\",\"name\":\"codex\",\"id\":2}}").unwrap();
    // Half-close, as `printf … | socat` does: the answer must still come.
    w.shutdown(std::net::Shutdown::Write).unwrap();
    let request = wait_approval(&mut approver);
    approver.approve(request, Decision::AllowOnce).unwrap();
    let replies: Vec<serde_json::Value> = BufReader::new(s)
        .lines()
        .map(|l| serde_json::from_str(&l.expect("a line before the deadline")).unwrap())
        .collect();
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert_eq!(replies[1]["id"], 2);
    assert_eq!(replies[1]["result"]["token"], CODEX);
}

#[test]
fn an_approver_cannot_answer_its_own_request() {
    let h = home(&[&me()]);
    let agent = h.start_agent();
    let mut c = approver(&agent);
    // A second connection of the same process asks; only the first may answer it.
    let mut asker = agent.client();
    let waiting = std::thread::spawn(move || asker.get("codex"));
    let request = wait_approval(&mut c);
    c.approve(request, Decision::Deny).unwrap();
    let refused = waiting.join().unwrap();
    assert!(
        matches!(&refused, Err(ClientError::Refused(e)) if e.code == "denied"),
        "{refused:?}"
    );
}

#[test]
fn passphrase_guesses_are_slowed_and_the_right_one_still_unlocks() {
    let h = home(&[]);
    let agent = h.start_agent();
    let mut c = agent.client();
    c.set_locked(true, Some(keyferry::Secret::new("correct horse".into())))
        .unwrap();
    let mut waits = Vec::new();
    for _ in 0..3 {
        let e = c
            .set_locked(false, Some(keyferry::Secret::new("battery staple".into())))
            .unwrap_err();
        let ClientError::Refused(body) = e else {
            panic!("{e:?}")
        };
        assert_eq!(body.code, "bad_passphrase");
        let ms: u64 = body
            .message
            .split("heard in ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no delay in {:?}", body.message));
        waits.push(ms);
    }
    assert_eq!(waits, [250, 500, 1000], "each wrong guess doubles the wait");
    assert!(c.status().unwrap().locked);
    assert!(c.get("claude").is_err());
    c.set_locked(false, Some(keyferry::Secret::new("correct horse".into())))
        .unwrap();
    assert_eq!(c.get("claude").unwrap().token.0.expose(), TOKEN);
}

#[test]
fn an_expired_token_is_refused_with_the_fix() {
    let h = Home::new();
    // Claude Code's own login, expired an hour ago (with no cf token to shadow it).
    let past_ms = (time::OffsetDateTime::now_utc().unix_timestamp() - 3600) * 1000;
    h.write(
        ".claude/.credentials.json",
        &format!(
            r#"{{"claudeAiOauth":{{"accessToken":"{TOKEN}","refreshToken":"sk-ant-ort01-R","expiresAt":{past_ms},"scopes":["user:inference"],"subscriptionType":"max"}}}}"#
        ),
        0o600,
    );
    let _agent = h.start_agent();
    let out = h.run(&["--require-agent", "get"], None, &[]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("expired"), "{err}");
    assert!(err.contains("claude /login"), "{err}");
    kf::assert_no_secret(&(text(&out.stdout) + &err), &[TOKEN]);
}
