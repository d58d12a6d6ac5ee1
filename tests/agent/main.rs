//! The real `keyferry agent` binary, one scenario per test: serving over the socket
//! ([`socket`]), hostile clients ([`hostile`]), allowlist, lock and snapshots ([`policy`]),
//! approvals ([`approvals`]), live watching ([`watch`]), settings, expiry, restarts and
//! install ([`lifecycle`]), and a real second Unix user ([`users`], needs root).

// Real Secret Service, keyutils and /proc: these run on Linux only.
#![cfg(target_os = "linux")]

#[path = "../common/mod.rs"]
mod common;
#[path = "../kf/mod.rs"]
mod kf;

mod approvals;
mod hostile;
mod lifecycle;
mod policy;
mod socket;
mod users;
mod watch;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Output};
use std::time::Duration;

use keyferry::client::{Client, ClientError};
use keyferry::protocol::{Event, Request, Token};
use kf::Home;

const TOKEN: &str = "sk-ant-oat01-AGENTtokenAAAAbbbbCCCCdddd-1111";
const TOKEN2: &str = "sk-ant-oat01-ROTATEDtokenEEEEffffGGGG-2222";
const CODEX_KEY: &str = "sk-proj-CODEXkeyAAAAbbbbCCCC-9999";
/// The overall deadline of every wait in these tests.
const WAIT: Duration = Duration::from_secs(10);
/// How long one CLI call may run (it may wait on an approval).
const CLI_WAIT: Duration = Duration::from_secs(40);

/// A home whose `claude` comes from the cf token file.
fn home_with_token(config: &str) -> Home {
    let h = Home::new();
    h.write(".config/cf/claude-token", &format!("{TOKEN}\n"), 0o600);
    h.write(".config/keyferry/config.toml", config, 0o600);
    h
}

/// [`home_with_token`] plus a codex API key file. This test binary is listed as the one
/// approver: a headless agent takes approvers only from `[policy] approvers`.
fn home_with_codex(config: &str) -> Home {
    let me = std::env::current_exe().unwrap();
    let h = home_with_token(&format!(
        "[policy]\napprovers = [{:?}]\n{config}",
        me.display().to_string()
    ));
    h.write(
        ".codex/auth.json",
        &format!(r#"{{"OPENAI_API_KEY":"{CODEX_KEY}"}}"#),
        0o600,
    );
    h
}

fn get(c: &mut Client) -> Result<String, ClientError> {
    c.call::<Token>(Request::Get {
        name: "claude".into(),
    })
    .map(|t| t.token.0.expose().to_owned())
}

/// Runs `cmd` on another thread (bounded by [`CLI_WAIT`]), for a client that waits on an
/// approval while the test answers it.
fn run_in_background(mut cmd: Command) -> std::thread::JoinHandle<Output> {
    std::thread::spawn(move || common::run_with_timeout(&mut cmd, None, CLI_WAIT))
}

/// A raw protocol session, as a socat or bash client would have.
struct Raw {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Raw {
    fn connect(sock: &std::path::Path) -> Self {
        let s = UnixStream::connect(sock).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        Self {
            writer: s.try_clone().unwrap(),
            reader: BufReader::new(s),
        }
    }

    fn send(&mut self, line: &str) -> serde_json::Value {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
        self.recv()
    }

    /// The next line (each read bounded by [`WAIT`]).
    fn recv(&mut self) -> serde_json::Value {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or(serde_json::Value::Null)
    }
}

/// Waits for an event matching `pred`, for at most [`WAIT`] overall (unrelated events
/// arriving do not extend it).
fn wait_event(c: &mut Client, pred: impl Fn(&Event) -> bool) -> Event {
    let deadline = common::Deadline::after(WAIT);
    loop {
        c.set_timeout(Some(deadline.remaining("a matching event")));
        let e = c.next_event().expect("event before the deadline");
        if pred(&e) {
            return e;
        }
    }
}

/// Waits for the next approval request an approver connection is told about.
fn wait_approval(approver: &mut Client) -> keyferry::domain::ApprovalRequest {
    match wait_event(approver, |e| matches!(e, Event::Approval { .. })) {
        Event::Approval { approval } => approval,
        other => panic!("not an approval: {other:?}"),
    }
}
