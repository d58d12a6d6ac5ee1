//! A forged name never reaches the terminal raw: a client whose executable is named with a
//! terminal escape (`\x1b[2K\rcf read claude`, which would erase the line and print a fake
//! access) asks for a credential named with escapes too; `keyferry log`, `status` and
//! `doctor` then print no raw ESC or CR, and `log` shows the escaped form.

#![cfg(target_os = "linux")]

mod common;
mod kf;

use std::process::Command;
use std::time::Duration;

use keyferry::protocol::VERSION;
use kf::{text, Home};

const FORGED: &str = "\x1b[2K\rcf read claude\x07";

#[test]
fn forged_executable_and_credential_names_are_escaped_in_every_printer() {
    let h = Home::new();
    h.write(
        ".config/cf/claude-token",
        "sk-ant-oat01-ESCAPEtokenAAAAbbbb-1111\n",
        0o600,
    );
    let agent = h.start_agent();
    // The attacker's client: socat copied under a name carrying the escape.
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join(format!("socat{FORGED}"));
    std::fs::copy("/usr/bin/socat", &exe).unwrap();
    let request = serde_json::json!({"op":"get","name": format!("claude{FORGED}"), "id": 2});
    let lines = format!("{{\"op\":\"hello\",\"version\":{VERSION}}}\n{request}\n");
    let mut cmd = Command::new(&exe);
    cmd.args([
        "-t",
        "2",
        "-",
        &format!("UNIX-CONNECT:{}", agent.sock.display()),
    ]);
    let out = common::run_with_timeout(&mut cmd, Some(lines.as_bytes()), Duration::from_secs(20));
    assert!(
        text(&out.stdout).contains("\"error\""),
        "{}",
        text(&out.stdout)
    );

    let (log, _) = kf::ok(&h.run(&["log", "-n", "50"], None, &[]));
    assert!(
        log.contains("socat\\e[2K\\rcf read claude\\x07"),
        "the forged executable is shown escaped: {log:?}"
    );
    for (what, args) in [
        ("log", &["log", "-n", "50"][..]),
        ("status", &["status"][..]),
        ("doctor", &["doctor"][..]),
    ] {
        let out = h.run(args, None, &[]);
        for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            assert!(
                !bytes
                    .iter()
                    .any(|b| *b == 0x1b || *b == b'\r' || *b == 0x07),
                "{what} {stream} carries a raw control character: {:?}",
                text(bytes)
            );
        }
    }
    // JSON stays JSON: the name is there, escaped by serde.
    let (json, _) = kf::ok(&h.run(&["log", "--json", "-n", "50"], None, &[]));
    assert!(
        json.contains("socat\\u001b[2K\\rcf read claude\\u0007"),
        "{json}"
    );
}
