//! A real second Unix user (needs root to create it, as CI runs): its agent refuses us and
//! audits it, and it cannot reach our agent through the 0700 directory.

use std::path::Path;
use std::process::Command;

use keyferry::client::{Client, ClientError};

use crate::common::{self, Proc};
use crate::kf::{self, text};
use crate::{home_with_token, Raw, TOKEN, WAIT};

const USER: &str = "kfother";

fn runuser() -> std::path::PathBuf {
    common::which("runuser").expect("runuser (Debian package util-linux)")
}

/// The second user, and a fresh private directory of theirs to use as HOME.
fn other_user_home() -> String {
    common::require_root("it creates and runs as a second Unix user (useradd, runuser)");
    kf::ensure_user(USER);
    let out = common::run_with_timeout(
        Command::new(runuser()).args(["-u", USER, "--", "mktemp", "-d"]),
        None,
        WAIT,
    );
    assert!(
        out.status.success(),
        "mktemp as {USER}: {}",
        text(&out.stderr)
    );
    text(&out.stdout).trim().to_owned()
}

/// Their agent refuses root (uid 0 ≠ its uid) and audits it; our client refuses to talk to
/// an agent run by someone else.
#[test]
fn another_users_agent_refuses_us_and_audits_it() {
    let other_home = other_user_home();
    let sock = format!("{other_home}/run/agent.sock");
    let script = format!(
        "umask 077; mkdir -p $HOME/.config/cf && printf '%s\\n' {TOKEN} > $HOME/.config/cf/claude-token && \
         exec {} --config /dev/null agent --socket {sock}",
        env!("CARGO_BIN_EXE_keyferry")
    );
    let mut cmd = Command::new(runuser());
    cmd.args([
        "-u",
        USER,
        "--",
        "env",
        "-i",
        &format!("HOME={other_home}"),
        "PATH=/usr/bin:/bin",
        "USER=kfother",
        "sh",
        "-c",
        &script,
    ]);
    let log = tempfile::NamedTempFile::new().unwrap();
    let theirs = Proc::spawn("their agent", cmd, log.path().to_path_buf(), None);
    common::wait_until(WAIT, "their agent's socket", || Path::new(&sock).exists());
    assert!(matches!(
        Client::connect(Path::new(&sock)),
        Err(ClientError::ForeignAgent { .. })
    ));
    // The refusal comes unprompted at connect, and the socket is closed right after it: a
    // request written then may meet a closed pipe (seen in CI), so only the reply is read.
    let mut raw = Raw::connect(Path::new(&sock));
    let reply = raw.recv();
    assert_eq!(reply["error"]["code"], "forbidden_user", "{reply}");
    // A refusal of another uid goes to the refused-peers file, never the owner's own log.
    let audit = std::fs::read_to_string(format!(
        "{other_home}/.local/state/keyferry/audit-refused.jsonl"
    ))
    .unwrap();
    assert!(
        audit.contains("\"outcome\":\"refused\"")
            && audit.contains("\"uid\":0")
            && audit.contains("forbidden_user"),
        "{audit}"
    );
    drop(theirs);
    let _ = std::fs::remove_dir_all(&other_home);
}

#[test]
fn another_user_cannot_reach_our_agent() {
    let other_home = other_user_home();
    let h = home_with_token("");
    let _ours = h.start_agent();
    let out = common::run_with_timeout(
        Command::new(runuser())
            .args([
                "-u",
                USER,
                "--",
                env!("CARGO_BIN_EXE_keyferry"),
                "--require-agent",
                "--socket",
                h.socket().to_str().unwrap(),
                "get",
            ])
            .env_clear()
            .env("HOME", &other_home)
            .env("PATH", "/usr/bin:/bin"),
        None,
        WAIT,
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("ermission denied"),
        "{}",
        text(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&other_home);
}
