//! Live watching: a file replaced by rename and a keychain item written by another program
//! reach `watch` subscribers, events carry no secret, and an idle agent stays idle.

use std::time::Duration;

use keyferry::protocol::{Event, Request, VERSION};

use crate::kf;
use crate::{get, home_with_token, wait_event, Raw, TOKEN2};

/// Replaces the token file by an atomic rename (what editors and Claude Code do).
fn rename_token_file(h: &kf::Home, token: &str) {
    let tmp = h.write(".config/cf/.claude-token.new", &format!("{token}\n"), 0o600);
    std::fs::rename(&tmp, h.path(".config/cf/claude-token")).unwrap();
}

#[test]
fn an_atomic_rename_of_the_token_file_reaches_watchers() {
    let h = home_with_token("[agent]\npoll_interval_secs = 1\n");
    let agent = h.start_agent();
    let mut watcher = agent.client();
    let _: serde_json::Value = watcher.call(Request::Watch {}).unwrap();
    rename_token_file(&h, TOKEN2);
    let fp2 = keyferry::credential::fingerprint(TOKEN2);
    wait_event(
        &mut watcher,
        |e| matches!(e, Event::Changed { status } if status.inspection.as_ref().is_some_and(|i| i.fingerprint == fp2)),
    );
    assert_eq!(get(&mut agent.client()).unwrap(), TOKEN2);
}

/// A keychain item written by another program is picked up by polling its stamp.
#[test]
fn a_keychain_item_written_by_another_program_reaches_watchers() {
    let h = home_with_token("[agent]\npoll_interval_secs = 1\n");
    let agent = h.start_agent();
    let mut watcher = agent.client();
    let _: serde_json::Value = watcher.call(Request::Watch {}).unwrap();
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
}

#[test]
fn events_carry_no_secrets() {
    let h = home_with_token("[agent]\npoll_interval_secs = 1\n");
    let agent = h.start_agent();
    let mut raw = Raw::connect(&agent.sock);
    raw.send(&format!(r#"{{"op":"hello","version":{VERSION}}}"#));
    raw.send(r#"{"op":"watch"}"#);
    std::fs::write(h.path(".config/cf/claude-token"), format!("{TOKEN2}\n")).unwrap();
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
fn an_idle_agent_does_not_re_resolve_in_a_loop() {
    // Its own reads open the watched file; those opens must not count as changes.
    let h = home_with_token("[agent]\nrescan_secs = 0\npoll_interval_secs = 60\n");
    let agent = h.start_agent();
    let mut watcher = agent.client();
    let _: serde_json::Value = watcher.call(Request::Watch {}).unwrap();
    rename_token_file(&h, TOKEN2);
    wait_event(&mut watcher, |e| matches!(e, Event::Changed { .. }));
    let count = || {
        agent
            .client()
            .call::<keyferry::protocol::Status>(Request::Status {
                usage: false,
                usage_of: None,
            })
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
