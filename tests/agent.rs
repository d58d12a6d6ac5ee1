//! The real `keyferry agent` binary: serving over the socket, permission checks with a real
//! second Unix user, policy, lock, hostile clients, live watching, restarts, versions.

// Real Secret Service, keyutils and /proc: these run on Linux only.
#![cfg(target_os = "linux")]

mod common;
mod kf;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use keyferry::client::{Client, ClientError};
use keyferry::domain::Decision;
use keyferry::protocol::{Event, Request, Token, VERSION};
use kf::notifications::NotificationServer;
use kf::{ok, text, Home};

const TOKEN: &str = "sk-ant-oat01-AGENTtokenAAAAbbbbCCCCdddd-1111";
const TOKEN2: &str = "sk-ant-oat01-ROTATEDtokenEEEEffffGGGG-2222";
const WAIT: Duration = Duration::from_secs(10);

/// A home whose `claude` comes from the cf token file.
fn home_with_token(config: &str) -> Home {
    let h = Home::new();
    h.write(".config/cf/claude-token", &format!("{TOKEN}\n"), 0o600);
    h.write(".config/keyferry/config.toml", config, 0o600);
    h
}

fn get(c: &mut Client) -> Result<String, ClientError> {
    c.call::<Token>(Request::Get {
        name: "claude".into(),
    })
    .map(|t| t.token.0.expose().to_owned())
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
    fn recv(&mut self) -> serde_json::Value {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or(serde_json::Value::Null)
    }
}

/// Waits (bounded) for an event matching `pred`.
fn wait_event(c: &mut Client, pred: impl Fn(&Event) -> bool) -> Event {
    c.set_timeout(Some(WAIT));
    loop {
        let e = c.next_event().expect("event before the timeout");
        if pred(&e) {
            return e;
        }
    }
}

#[test]
fn serves_over_the_socket_with_the_cli_falling_back_without_it() {
    let h = home_with_token("");
    // No agent: --require-agent fails with exit 5, the default falls back to the sources.
    let out = h.run(&["--require-agent", "get"], None, &[]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no keyferry agent is running"));
    assert_eq!(ok(&h.run(&["get"], None, &[])).0.trim(), TOKEN);

    let agent = h.start_agent();
    // The socket directory is private and the socket 0600.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&agent.sock), 0o600);
    assert_eq!(mode(agent.sock.parent().unwrap()), 0o700);
    assert_eq!(
        ok(&h.run(&["--require-agent", "get"], None, &[])).0.trim(),
        TOKEN
    );
    let (status, _) = ok(&h.run(&["--require-agent", "status", "claude"], None, &[]));
    assert!(
        status.starts_with("claude: source=file:~/.config/cf/claude-token kind=setup-token"),
        "{status}"
    );
    // A raw client speaks the documented protocol.
    let mut raw = Raw::connect(&agent.sock);
    let hello = raw.send(&format!(r#"{{"op":"hello","version":{VERSION}}}"#));
    assert_eq!(hello["ok"], true);
    assert_eq!(hello["result"]["pid"], agent.pid());
    let reply = raw.send(r#"{"op":"get","name":"claude","id":42}"#);
    assert_eq!(reply["id"], 42);
    assert_eq!(reply["result"]["token"], TOKEN);
    assert_eq!(reply["result"]["env_var"], "CLAUDE_CODE_OAUTH_TOKEN");
    let status = raw.send(r#"{"op":"status"}"#);
    assert!(
        !status.to_string().contains(&TOKEN[13..30]),
        "status carries no secret"
    );
    // Setup through the agent stores in the real Secret Service and is served at once.
    let (_, err) = ok(&h.run(&["--require-agent", "setup"], Some(TOKEN2), &[]));
    assert!(err.contains("through the agent"), "{err}");
    assert_eq!(
        ok(&h.run(&["--require-agent", "get"], None, &[])).0.trim(),
        TOKEN2
    );
    let lookup = h.ss.secret_tool(
        &["lookup", "service", "cf-claude-token", "username", kf::USER],
        None,
    );
    assert_eq!(text(&lookup.stdout).trim(), TOKEN2);
    // The environment override still wins over the agent, as in cfauth.
    let envkey = "sk-ant-api03-OVERRIDEhhhhIIIIjjjj-3333";
    assert_eq!(
        ok(&h.run(&["get"], None, &[("CF_CLAUDE_API_KEY", envkey)]))
            .0
            .trim(),
        envkey
    );
    ok(&h.run(&["--require-agent", "clear"], None, &[]));
    assert_eq!(
        ok(&h.run(&["--require-agent", "get"], None, &[])).0.trim(),
        TOKEN
    );
    // The audit log holds who asked, and never a token.
    let (log, _) = ok(&h.run(&["log", "-n", "50", "--json"], None, &[]));
    assert!(
        log.contains("\"op\":\"get\"") && log.contains("allowed") && !log.contains("/socat"),
        "{log}"
    );
    assert!(
        log.contains(env!("CARGO_BIN_EXE_keyferry")),
        "the client's executable is recorded: {log}"
    );
    assert!(
        !log.contains(&TOKEN[13..30]) && !log.contains(&TOKEN2[13..30]),
        "{log}"
    );
}

#[test]
fn version_mismatch_is_reported_both_ways() {
    let h = home_with_token("");
    let agent = h.start_agent();
    for v in [0, VERSION + 1, u32::MAX] {
        match Client::connect_as(&agent.sock, v) {
            Err(ClientError::Refused(e)) => {
                assert_eq!(e.code, "version_mismatch");
                assert!(
                    e.message.contains(&format!("protocol {v}")),
                    "{}",
                    e.message
                );
            }
            Ok(_) => panic!("version {v} was accepted"),
            Err(other) => panic!("{other}"),
        }
    }
    let mut c = Client::connect_as(&agent.sock, VERSION).unwrap();
    assert_eq!(c.hello.version, VERSION);
    assert_eq!(get(&mut c).unwrap(), TOKEN);
    let mut raw = Raw::connect(&agent.sock);
    assert_eq!(
        raw.send(r#"{"op":"get","name":"claude"}"#)["error"]["code"],
        "handshake_required"
    );
}

#[test]
fn hostile_clients_never_disturb_the_others() {
    let h = home_with_token("[agent]\nidle_timeout_secs = 1\n");
    let agent = h.start_agent();
    // Fresh connections: a kept one would idle out (1 s) while the flood runs.
    let good = || get(&mut agent.client()).unwrap();
    // Malformed JSON and unknown ops get {code,message}; the connection lives on.
    let mut raw = Raw::connect(&agent.sock);
    raw.send(&format!(r#"{{"op":"hello","version":{VERSION}}}"#));
    assert_eq!(raw.send("{not json")["error"]["code"], "bad_request");
    assert_eq!(
        raw.send(r#"{"op":"format_disk"}"#)["error"]["code"],
        "bad_request"
    );
    assert_eq!(
        raw.send(r#"{"op":"get","name":"claude"}"#)["result"]["token"],
        TOKEN
    );
    // A 10 MiB line is refused and that connection closed.
    let big = UnixStream::connect(&agent.sock).unwrap();
    big.set_read_timeout(Some(WAIT)).unwrap();
    let mut writer = big.try_clone().unwrap();
    let flood = std::thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..10 {
            if writer.write_all(&chunk).is_err() {
                return;
            }
        }
        let _ = writer.write_all(b"\n");
    });
    let mut reply = String::new();
    let _ = BufReader::new(&big).read_line(&mut reply);
    assert!(reply.contains("line_too_long"), "{reply}");
    flood.join().unwrap();
    assert_eq!(good(), TOKEN);
    // A client that connects and never writes is dropped after the idle timeout.
    let mut silent = UnixStream::connect(&agent.sock).unwrap();
    silent.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(good(), TOKEN, "served while the silent client waits");
    let mut buf = String::new();
    silent.read_to_string(&mut buf).unwrap();
    assert!(buf.contains("idle_timeout"), "{buf}");
    // 1,000 concurrent clients, each served.
    raise_fd_limit();
    let sock = agent.sock.clone();
    let handles: Vec<_> = (0..1000)
        .map(|_| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(&sock).map_err(|e| e.to_string())?;
                get(&mut c).map_err(|e| e.to_string())
            })
        })
        .collect();
    let results: Vec<Result<String, String>> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    let failures: Vec<_> = results
        .iter()
        .filter(|r| r.as_deref() != Ok(TOKEN))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of 1000 failed, e.g. {:?}",
        failures.len(),
        failures.first()
    );
    assert_eq!(good(), TOKEN);
}

fn raise_fd_limit() {
    // SAFETY: plain rlimit syscalls on our own process.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max.min(65_536);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

#[test]
fn allowlist_lock_and_approvals() {
    let h = home_with_token(
        "[policy.claude]\nallow_exe = [\"/usr/bin/socat\"]\n\
         [policy.codex]\nmode = \"ask\"\n\
         [agent]\napproval_timeout_secs = 20\n",
    );
    h.write(
        ".codex/auth.json",
        r#"{"OPENAI_API_KEY":"sk-proj-CODEXkeyAAAAbbbbCCCC-9999"}"#,
        0o600,
    );
    let agent = h.start_agent();
    // The keyferry CLI is not on the allowlist: refused with the fix, exit 6, audited.
    let out = h.run(&["--require-agent", "get"], None, &[]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("allow_exe under [policy.claude]"), "{err}");
    assert!(err.contains(env!("CARGO_BIN_EXE_keyferry")), "{err}");
    // socat is listed.
    let out = Command::new("socat")
        .args(["-", &format!("UNIX-CONNECT:{}", agent.sock.display())])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(
                format!("{{\"op\":\"hello\",\"version\":{VERSION}}}\n{{\"op\":\"get\",\"name\":\"claude\"}}\n").as_bytes(),
            )?;
            child.wait_with_output()
        })
        .expect("socat (Debian package socat) runs");
    assert!(text(&out.stdout).contains(TOKEN), "{}", text(&out.stdout));
    let (log, _) = ok(&h.run(&["log", "--json"], None, &[]));
    assert!(
        log.contains("not_allowed") && log.contains("/usr/bin/socat"),
        "{log}"
    );

    // Lock refuses every get, even the allowed client; unlock restores. Passphrases hold.
    ok(&h.run(&["lock"], None, &[]));
    let out = h.run(&["--require-agent", "get", "codex"], None, &[]);
    assert_eq!(out.status.code(), Some(6));
    assert!(text(&out.stderr).contains("keyferry unlock"));
    ok(&h.run(&["unlock"], None, &[]));
    ok(&h.run(&["lock", "--passphrase"], Some("hunter2"), &[]));
    let out = h.run(&["unlock"], Some("wrong"), &[]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    assert_eq!(
        agent
            .client()
            .call::<serde_json::Value>(Request::Status {})
            .unwrap()["locked"],
        true
    );
    ok(&h.run(&["unlock"], Some("hunter2"), &[]));

    // `ask` without an approver: refused at once, saying how to allow it.
    let out = h.run(&["--require-agent", "get", "codex"], None, &[]);
    assert_eq!(out.status.code(), Some(6));
    assert!(
        text(&out.stderr).contains("no approver is connected"),
        "{}",
        text(&out.stderr)
    );
    // With an approver: Allow once serves the waiting client, Deny refuses it.
    let mut approver = agent.client();
    let _: serde_json::Value = approver.call(Request::Approvals {}).unwrap();
    // The waiting client is another process: an approver may not answer its own request.
    for (decision, expect_ok) in [(Decision::AllowOnce, true), (Decision::Deny, false)] {
        let mut cmd = h.kf();
        cmd.args(["--require-agent", "get", "codex"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let waiting = std::thread::spawn(move || cmd.output().unwrap());
        let Event::Approval { approval } =
            wait_event(&mut approver, |e| matches!(e, Event::Approval { .. }))
        else {
            unreachable!()
        };
        assert_eq!(approval.credential, "codex");
        assert_eq!(
            approval.peer.exe.as_deref(),
            Some(env!("CARGO_BIN_EXE_keyferry")),
            "{:?}",
            approval.peer
        );
        let _: serde_json::Value = approver
            .call(Request::Approve {
                request: approval.request,
                decision,
            })
            .unwrap();
        let out = waiting.join().unwrap();
        assert_eq!(
            out.status.success(),
            expect_ok,
            "{decision:?}: {}",
            text(&out.stderr)
        );
        if expect_ok {
            assert_eq!(
                text(&out.stdout).trim(),
                "sk-proj-CODEXkeyAAAAbbbbCCCC-9999"
            );
        } else {
            assert_eq!(out.status.code(), Some(6));
            assert!(
                text(&out.stderr).contains("denied by the approver"),
                "{}",
                text(&out.stderr)
            );
        }
    }
}

#[test]
fn snapshots_and_approvals_cannot_sidestep_the_lock_or_policy() {
    let h = home_with_token(
        "[policy.claude]\nallow_exe = [\"/usr/bin/socat\"]\n[policy.codex]\nmode = \"ask\"\n\
         [agent]\napproval_timeout_secs = 30\nidle_timeout_secs = 2\n",
    );
    h.write(
        ".codex/auth.json",
        r#"{"OPENAI_API_KEY":"sk-proj-CODEXkeyAAAAbbbbCCCC-9999"}"#,
        0o600,
    );
    let agent = h.start_agent();
    let snap = |name: &str| {
        agent.client().call::<serde_json::Value>(Request::Snapshot {
            name: name.into(),
            path: h.path(&format!("snap-{name}.json")).display().to_string(),
            include_refresh_token: false,
        })
    };
    // A snapshot writes the token to a file: the allowlist applies as to `get`.
    assert!(matches!(snap("claude"), Err(ClientError::Refused(ref e)) if e.code == "not_allowed"));
    assert!(!h.path("snap-claude.json").exists());
    // Locked: no snapshot either, and a bare second `lock` keeps the passphrase.
    ok(&h.run(&["lock", "--passphrase"], Some("hunter2"), &[]));
    ok(&h.run(&["lock"], None, &[]));
    assert!(matches!(snap("codex"), Err(ClientError::Refused(ref e)) if e.code == "agent_locked"));
    assert_eq!(h.run(&["unlock"], Some(""), &[]).status.code(), Some(6));
    ok(&h.run(&["unlock"], Some("hunter2"), &[]));
    // Answering needs an approver connection, and a client cannot approve its own request.
    let mut approver = agent.client();
    let _: serde_json::Value = approver.call(Request::Approvals {}).unwrap();
    let mut requester = agent.client();
    // The waiting client: another process (socat), which asks again after the long wait.
    let script = format!(
        "{{ printf '%s\\n' '{{\"op\":\"hello\",\"version\":{VERSION}}}' '{{\"op\":\"get\",\"name\":\"codex\"}}'; sleep 4; printf '%s\\n' '{{\"op\":\"status\"}}'; sleep 0.5; }} | socat -t 5 - UNIX-CONNECT:{}",
        agent.sock.display()
    );
    let waiting =
        std::thread::spawn(move || Command::new("sh").arg("-c").arg(script).output().unwrap());
    let Event::Approval { approval } =
        wait_event(&mut approver, |e| matches!(e, Event::Approval { .. }))
    else {
        unreachable!()
    };
    let stranger = requester.call::<serde_json::Value>(Request::Approve {
        request: approval.request,
        decision: Decision::AllowOnce,
    });
    assert!(
        matches!(stranger, Err(ClientError::Refused(ref e)) if e.code == "not_an_approver"),
        "{stranger:?}"
    );
    // Answer after more than the idle timeout (2 s); the client asks again 1 s later.
    std::thread::sleep(Duration::from_millis(3000));
    let _: serde_json::Value = approver
        .call(Request::Approve {
            request: approval.request,
            decision: Decision::AllowOnce,
        })
        .unwrap();
    let out = text(&waiting.join().unwrap().stdout);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines[1]["result"]["token"], "sk-proj-CODEXkeyAAAAbbbbCCCC-9999",
        "{out}"
    );
    // The idle clock restarts after the reply, so the request after the long wait is served.
    assert_eq!(
        lines.get(2).map(|l| l["ok"].clone()),
        Some(serde_json::Value::Bool(true)),
        "{out}"
    );
    // When the last approver leaves, a waiting request is denied at once.
    let mut cmd = h.kf();
    cmd.args(["--require-agent", "get", "codex"])
        .stderr(std::process::Stdio::piped());
    let waiting = std::thread::spawn(move || cmd.output().unwrap());
    wait_event(&mut approver, |e| matches!(e, Event::Approval { .. }));
    drop(approver);
    let out = waiting.join().unwrap();
    assert_eq!(out.status.code(), Some(6));
    assert!(
        text(&out.stderr).contains("went away"),
        "{}",
        text(&out.stderr)
    );
    // A failed store of an unknown name leaves no phantom credential behind.
    let mut fresh = agent.client();
    let stored = fresh.call::<serde_json::Value>(Request::Store {
        name: "nope".into(),
        token: keyferry::protocol::WireSecret(keyferry::Secret::new(TOKEN.into())),
    });
    assert!(
        matches!(stored, Err(ClientError::Refused(ref e)) if e.code == "config"),
        "{stored:?}"
    );
    let st: keyferry::protocol::Status = fresh.call(Request::Status {}).unwrap();
    assert!(
        st.credentials.iter().all(|c| c.name != "nope"),
        "{:?}",
        st.credentials
    );
}

#[test]
fn file_and_keychain_changes_reach_watchers() {
    let h = home_with_token("[agent]\npoll_interval_secs = 1\n");
    let agent = h.start_agent();
    let mut watcher = agent.client();
    let _: serde_json::Value = watcher.call(Request::Watch {}).unwrap();
    // Atomic rename over the watched file (what editors and Claude Code do).
    let tmp = h.write(
        ".config/cf/.claude-token.new",
        &format!("{TOKEN2}\n"),
        0o600,
    );
    std::fs::rename(&tmp, h.path(".config/cf/claude-token")).unwrap();
    let fp2 = keyferry::credential::fingerprint(TOKEN2);
    wait_event(
        &mut watcher,
        |e| matches!(e, Event::Changed { status } if status.inspection.as_ref().is_some_and(|i| i.fingerprint == fp2)),
    );
    assert_eq!(get(&mut agent.client()).unwrap(), TOKEN2);
    // A keychain item written by another program is picked up by polling its stamp.
    let third = "sk-ant-oat01-KEYCHAINwrittenKKKKllll-4444";
    let out = h.ss.secret_tool(
        &[
            "store",
            "--label",
            "x",
            "service",
            "cf-claude-token",
            "username",
            kf::USER,
        ],
        Some(third),
    );
    assert!(out.status.success());
    let fp3 = keyferry::credential::fingerprint(third);
    wait_event(&mut watcher, |e| {
        matches!(e, Event::Changed { status } if status.source.as_deref() == Some("keychain:cf-claude-token")
            && status.inspection.as_ref().is_some_and(|i| i.fingerprint == fp3))
    });
    assert_eq!(get(&mut agent.client()).unwrap(), third);
    // Events carry no secrets.
    let mut raw = Raw::connect(&agent.sock);
    raw.send(&format!(r#"{{"op":"hello","version":{VERSION}}}"#));
    raw.send(r#"{"op":"watch"}"#);
    std::fs::write(h.path(".config/cf/claude-token"), format!("{TOKEN}\n")).unwrap();
    let _ = h.ss.secret_tool(
        &["clear", "service", "cf-claude-token", "username", kf::USER],
        None,
    );
    let ev = raw.recv();
    assert!(ev["event"]["kind"].is_string(), "{ev}");
    assert!(
        !ev.to_string().contains("AGENTtoken") && !ev.to_string().contains("ROTATED"),
        "{ev}"
    );
}

#[test]
fn settings_change_at_run_time_and_persist() {
    let h = home_with_token("# my config\n[agent]\nidle_timeout_secs = 9\n");
    let agent = h.start_agent();
    let applied: keyferry::domain::Settings = agent
        .client()
        .call(Request::Settings {
            notifications: Some(false),
            notify_on_access: Some(true),
            expiry_thresholds: Some(vec!["2d".into(), "30m".into()]),
        })
        .unwrap();
    assert_eq!(applied.expiry_thresholds, ["2d", "30m"]);
    let text = std::fs::read_to_string(h.path(".config/keyferry/config.toml")).unwrap();
    assert!(
        text.starts_with("# my config\n[agent]\nidle_timeout_secs = 9\n"),
        "{text}"
    );
    assert!(
        text.contains("notify_on_access = true") && text.contains("\"30m\""),
        "{text}"
    );
    let bad = agent
        .client()
        .call::<keyferry::domain::Settings>(Request::Settings {
            notifications: None,
            notify_on_access: None,
            expiry_thresholds: Some(vec!["soonish".into()]),
        });
    assert!(
        matches!(bad, Err(ClientError::Refused(ref e)) if e.message.contains("soonish")),
        "{bad:?}"
    );
}

#[test]
fn an_idle_agent_does_not_re_resolve_in_a_loop() {
    // Its own reads open the watched file; those opens must not count as changes.
    let h = home_with_token("[agent]\nrescan_secs = 0\npoll_interval_secs = 60\n");
    let agent = h.start_agent();
    let mut watcher = agent.client();
    let _: serde_json::Value = watcher.call(Request::Watch {}).unwrap();
    let tmp = h.write(
        ".config/cf/.claude-token.new",
        &format!("{TOKEN2}\n"),
        0o600,
    );
    std::fs::rename(&tmp, h.path(".config/cf/claude-token")).unwrap();
    wait_event(&mut watcher, |e| matches!(e, Event::Changed { .. }));
    let count = || {
        agent
            .client()
            .call::<keyferry::protocol::Status>(Request::Status {})
            .unwrap()
            .resolutions
    };
    // Let start-up work settle (the keychain poller's one baseline re-read), bounded.
    let mut before = count();
    for _ in 0..25 {
        std::thread::sleep(Duration::from_millis(200));
        let now = count();
        if now == before {
            break;
        }
        before = now;
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(count(), before, "re-resolved while nothing changed");
}

#[test]
fn expiry_warnings_reach_the_desktop_and_subscribers() {
    // An access token without its refresh token: nothing on the host will renew it.
    let h = Home::new();
    let soon = time::OffsetDateTime::now_utc().unix_timestamp() * 1000 + 30 * 60 * 1000;
    h.write(
        ".gemini/oauth_creds.json",
        &format!(r#"{{"access_token":"ya29.GEMINIaccessAAAAbbbbCCCC","scope":"openid","token_type":"Bearer","expiry_date":{soon}}}"#),
        0o600,
    );
    let notifications = NotificationServer::start(h.ss.address());
    let agent = h.start_agent();
    let (summary, body) = notifications
        .wait_for(&["gemini", "expires in"], WAIT)
        .unwrap_or_else(|| {
            panic!(
                "no notification; got {:?}\n{}",
                notifications.received.lock().unwrap(),
                agent.log_text()
            )
        });
    assert!(
        summary.contains("29 min") || summary.contains("30 min"),
        "{summary}"
    );
    assert!(body.contains("keyferry reroll gemini"), "{body}");
    assert!(!format!("{summary}{body}").contains("GEMINIaccess"));
    let st: keyferry::protocol::Status = agent.client().call(Request::Status {}).unwrap();
    let gemini = st.credentials.iter().find(|c| c.name == "gemini").unwrap();
    assert_eq!(gemini.health, keyferry::domain::Health::Expiring);
}

#[test]
fn kill_dash_nine_then_restart_and_a_second_agent_is_refused() {
    let h = home_with_token("");
    let mut agent = h.start_agent();
    let out = h.run(&["agent"], None, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("another keyferry agent is already serving"),
        "{}",
        text(&out.stderr)
    );
    agent.stop(libc::SIGKILL);
    assert!(
        agent.sock.exists(),
        "a killed agent leaves its socket behind"
    );
    let restarted = h.start_agent();
    assert_eq!(get(&mut restarted.client()).unwrap(), TOKEN);
    // SIGTERM shuts down cleanly and removes the socket.
    let mut restarted = restarted;
    let status = restarted.stop(libc::SIGTERM).unwrap();
    assert!(status.success(), "{status:?}: {}", restarted.log_text());
    assert!(!restarted.sock.exists());
}

#[test]
fn unsafe_socket_directory_is_refused() {
    let h = home_with_token("");
    let dir = h.socket().parent().unwrap().to_path_buf();
    std::fs::create_dir_all(&dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = h.run(&["agent"], None, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("chmod 700"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn install_writes_a_user_service() {
    let h = Home::new();
    let (_, err) = ok(&h.run(&["agent", "install"], None, &[]));
    let unit = h.path(".config/systemd/user/keyferry-agent.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(
        text.contains(&format!(
            "ExecStart={} agent",
            env!("CARGO_BIN_EXE_keyferry")
        )),
        "{text}"
    );
    assert!(err.contains("systemctl --user"), "{err}");
    ok(&h.run(&["agent", "uninstall"], None, &[]));
    assert!(!unit.exists());
}

/// A real second Unix user: its agent refuses root (uid 0 ≠ its uid) and audits it, and
/// it cannot even reach root's agent through the 0700 directory.
#[test]
fn another_unix_user_is_refused_and_audited() {
    let user = "kfother";
    kf::ensure_user(user);
    let other_home = text(
        &Command::new(common::which("runuser").expect("runuser"))
            .args(["-u", user, "--", "mktemp", "-d"])
            .output()
            .unwrap()
            .stdout,
    )
    .trim()
    .to_owned();
    let sock = format!("{other_home}/run/agent.sock");
    let script = format!(
        "umask 077; mkdir -p $HOME/.config/cf && printf '%s\\n' {TOKEN} > $HOME/.config/cf/claude-token && \
         exec {} --config /dev/null agent --socket {sock}",
        env!("CARGO_BIN_EXE_keyferry")
    );
    let runuser = common::which("runuser").expect("runuser (Debian package util-linux)");
    let mut theirs = Command::new(&runuser)
        .args([
            "-u",
            user,
            "--",
            "env",
            "-i",
            &format!("HOME={other_home}"),
            "PATH=/usr/bin:/bin",
            "USER=kfother",
            "sh",
            "-c",
            &script,
        ])
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while !std::path::Path::new(&sock).exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // The client refuses to talk to an agent run by someone else…
    assert!(matches!(
        Client::connect(std::path::Path::new(&sock)),
        Err(ClientError::ForeignAgent { .. })
    ));
    // …and the agent refuses us: root is another user to it.
    let mut raw = Raw::connect(std::path::Path::new(&sock));
    let reply = raw.send(&format!(r#"{{"op":"hello","version":{VERSION}}}"#));
    assert_eq!(reply["error"]["code"], "forbidden_user", "{reply}");
    let audit =
        std::fs::read_to_string(format!("{other_home}/.local/state/keyferry/audit.jsonl")).unwrap();
    assert!(
        audit.contains("\"outcome\":\"refused\"")
            && audit.contains("\"uid\":0")
            && audit.contains("forbidden_user"),
        "{audit}"
    );
    // SAFETY: signalling the process group we created for runuser and the agent.
    unsafe { libc::kill(-i32::try_from(theirs.id()).unwrap(), libc::SIGTERM) };
    let _ = theirs.wait();
    // The other user cannot reach our agent at all.
    let h = home_with_token("");
    let _ours = h.start_agent();
    let out = Command::new(&runuser)
        .args([
            "-u",
            user,
            "--",
            env!("CARGO_BIN_EXE_keyferry"),
            "--require-agent",
            "--socket",
            h.socket().to_str().unwrap(),
            "get",
        ])
        .env_clear()
        .env("HOME", &other_home)
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("ermission denied"),
        "{}",
        text(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&other_home);
}
