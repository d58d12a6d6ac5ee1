//! Policy the agent enforces: the executable allowlist, the lock and its passphrase, and
//! snapshots, which obey both like `get`.

use keyferry::client::ClientError;
use keyferry::protocol::{Request, VERSION};

use crate::common;
use crate::kf::{ok, text};
use crate::{home_with_codex, home_with_token, TOKEN, WAIT};

const ALLOW_SOCAT: &str = "[policy.claude]\nallow_exe = [\"/usr/bin/socat\"]\n\
                           [policy.codex]\nmode = \"ask\"\n\
                           [agent]\napproval_timeout_secs = 20\n";

#[test]
fn the_allowlist_refuses_unlisted_clients_and_audits_them() {
    let h = home_with_codex(ALLOW_SOCAT);
    let agent = h.start_agent();
    // The keyferry CLI is not on the allowlist: refused with the fix, exit 6, audited.
    let out = h.run(&["--require-agent", "get"], None, &[]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("allow_exe under [policy.claude]"), "{err}");
    assert!(err.contains(env!("CARGO_BIN_EXE_keyferry")), "{err}");
    // socat is listed.
    common::require(&[("socat", "socat")]);
    let requests = format!(
        "{{\"op\":\"hello\",\"version\":{VERSION}}}\n{{\"op\":\"get\",\"name\":\"claude\"}}\n"
    );
    let out = common::run_with_timeout(
        std::process::Command::new("socat")
            .args(["-", &format!("UNIX-CONNECT:{}", agent.sock.display())]),
        Some(requests.as_bytes()),
        WAIT,
    );
    assert!(text(&out.stdout).contains(TOKEN), "{}", text(&out.stdout));
    let (log, _) = ok(&h.run(&["log", "--json"], None, &[]));
    assert!(
        log.contains("not_allowed") && log.contains("/usr/bin/socat"),
        "{log}"
    );
}

/// Lock refuses every get, even the allowed client; unlock restores. Passphrases hold.
#[test]
fn the_lock_refuses_every_get_and_a_passphrase_guards_unlock() {
    let h = home_with_codex(ALLOW_SOCAT);
    let agent = h.start_agent();
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
            .call::<serde_json::Value>(Request::Status {
                usage: false,
                usage_of: None,
            })
            .unwrap()["locked"],
        true
    );
    ok(&h.run(&["unlock"], Some("hunter2"), &[]));
}

#[test]
fn snapshots_obey_the_allowlist_and_the_lock() {
    let h = home_with_codex(
        "[policy.claude]\nallow_exe = [\"/usr/bin/socat\"]\n[policy.codex]\nmode = \"ask\"\n\
         [agent]\napproval_timeout_secs = 30\nidle_timeout_secs = 2\n",
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
}

#[test]
fn a_failed_store_of_an_unknown_name_leaves_no_phantom_credential() {
    let h = home_with_token("");
    let agent = h.start_agent();
    let mut fresh = agent.client();
    let stored = fresh.call::<serde_json::Value>(Request::Store {
        name: "nope".into(),
        token: keyferry::protocol::WireSecret(keyferry::Secret::new(TOKEN.into())),
    });
    assert!(
        matches!(stored, Err(ClientError::Refused(ref e)) if e.code == "config"),
        "{stored:?}"
    );
    let st: keyferry::protocol::Status = fresh
        .call(Request::Status {
            usage: false,
            usage_of: None,
        })
        .unwrap();
    assert!(
        st.credentials.iter().all(|c| c.name != "nope"),
        "{:?}",
        st.credentials
    );
}
