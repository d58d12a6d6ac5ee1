//! `ask` policy: approvals decide a waiting client; only an approver connection may answer,
//! never the requester itself; a request is denied when no approver is (or stays) there.

use std::process::Command;
use std::time::Duration;

use keyferry::client::ClientError;
use keyferry::domain::Decision;
use keyferry::protocol::{Request, VERSION};

use crate::kf::{text, AgentProc, Home};
use crate::{home_with_codex, run_in_background, wait_approval, CODEX_KEY};

fn ask_agent(config: &str) -> (Home, AgentProc) {
    let h = home_with_codex(config);
    let agent = h.start_agent();
    (h, agent)
}

const ASK: &str = "[policy.claude]\nallow_exe = [\"/usr/bin/socat\"]\n\
                   [policy.codex]\nmode = \"ask\"\n\
                   [agent]\napproval_timeout_secs = 20\n";

/// The waiting client: `keyferry --require-agent get codex`, another process than the
/// approver.
fn waiting_get(h: &Home) -> std::thread::JoinHandle<std::process::Output> {
    let mut cmd = h.kf();
    cmd.args(["--require-agent", "get", "codex"]);
    run_in_background(cmd)
}

#[test]
fn ask_without_an_approver_is_refused_at_once_saying_how_to_allow_it() {
    let (h, _agent) = ask_agent(ASK);
    let out = h.run(&["--require-agent", "get", "codex"], None, &[]);
    assert_eq!(out.status.code(), Some(6));
    assert!(
        text(&out.stderr).contains("no approver is connected"),
        "{}",
        text(&out.stderr)
    );
}

/// With an approver: Allow once serves the waiting client, Deny refuses it.
#[test]
fn allow_once_serves_and_deny_refuses_a_waiting_client() {
    let (h, agent) = ask_agent(ASK);
    let mut approver = agent.client();
    let _: serde_json::Value = approver.call(Request::Approvals {}).unwrap();
    for (decision, expect_ok) in [(Decision::AllowOnce, true), (Decision::Deny, false)] {
        let waiting = waiting_get(&h);
        let approval = wait_approval(&mut approver);
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
        let stdout = text(&out.stdout);
        let stderr = text(&out.stderr);
        let (want_code, want_stdout, want_err) = if expect_ok {
            (Some(0), CODEX_KEY, "")
        } else {
            (Some(6), "", "denied by the approver")
        };
        assert_eq!(out.status.code(), want_code, "{decision:?}: {stderr}");
        assert_eq!(stdout.trim(), want_stdout, "{decision:?}");
        assert!(stderr.contains(want_err), "{decision:?}: {stderr}");
    }
}

/// A client that is not an approver cannot answer; the approver answers after more than
/// the idle timeout (2 s), and the waiting client's next request (1 s later) is served.
#[test]
fn only_an_approver_answers_and_the_idle_clock_waits_for_the_answer() {
    let (_h, agent) = ask_agent(
        "[policy.claude]\nallow_exe = [\"/usr/bin/socat\"]\n[policy.codex]\nmode = \"ask\"\n\
         [agent]\napproval_timeout_secs = 30\nidle_timeout_secs = 2\n",
    );
    crate::common::require(&[("socat", "socat")]);
    let mut approver = agent.client();
    let _: serde_json::Value = approver.call(Request::Approvals {}).unwrap();
    let mut requester = agent.client();
    // The waiting client: another process (socat), which asks again after the long wait.
    let script = format!(
        "{{ printf '%s\\n' '{{\"op\":\"hello\",\"version\":{VERSION}}}' '{{\"op\":\"get\",\"name\":\"codex\"}}'; sleep 4; printf '%s\\n' '{{\"op\":\"status\"}}'; sleep 0.5; }} | socat -t 5 - UNIX-CONNECT:{}",
        agent.sock.display()
    );
    let mut sh = Command::new("sh");
    sh.arg("-c").arg(script);
    let waiting = run_in_background(sh);
    let approval = wait_approval(&mut approver);
    let stranger = requester.call::<serde_json::Value>(Request::Approve {
        request: approval.request,
        decision: Decision::AllowOnce,
    });
    assert!(
        matches!(stranger, Err(ClientError::Refused(ref e)) if e.code == "not_an_approver"),
        "{stranger:?}"
    );
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
    assert_eq!(lines[1]["result"]["token"], CODEX_KEY, "{out}");
    // The idle clock restarts after the reply, so the request after the long wait is served.
    assert_eq!(
        lines.get(2).map(|l| l["ok"].clone()),
        Some(serde_json::Value::Bool(true)),
        "{out}"
    );
}

#[test]
fn a_waiting_request_is_denied_when_the_last_approver_leaves() {
    let (h, agent) = ask_agent(ASK);
    let mut approver = agent.client();
    let _: serde_json::Value = approver.call(Request::Approvals {}).unwrap();
    let waiting = waiting_get(&h);
    wait_approval(&mut approver);
    drop(approver);
    let out = waiting.join().unwrap();
    assert_eq!(out.status.code(), Some(6));
    assert!(
        text(&out.stderr).contains("went away"),
        "{}",
        text(&out.stderr)
    );
}
