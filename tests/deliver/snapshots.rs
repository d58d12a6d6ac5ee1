//! Snapshots follow the host's refresh into a running bubblewrap sandbox: rewritten in
//! place (the bind mount sees it), never the refresh token unless asked, `--forget` stops it.

use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common;
use crate::kf::fake_api::{FakeApi, REPLY};
use crate::kf::{self, ok, text, Home};
use crate::{claude_env, login, ACCESS_A, ACCESS_B, REFRESH, WAIT};

#[test]
fn snapshots_follow_the_hosts_refresh_into_a_running_bubblewrap_sandbox() {
    let h = Home::new();
    h.write(".claude/.credentials.json", &login(ACCESS_A), 0o600);
    let agent = h.start_agent();
    let snap = h.path("cooks/task1/.auth/claude/.credentials.json");
    let (_, err) = ok(&h.run(
        &[
            "snapshot",
            "claude",
            "--mkdir",
            "--out",
            snap.to_str().unwrap(),
        ],
        None,
        &[],
    ));
    assert!(err.contains("keeps it current"), "{err}");
    let first = std::fs::read_to_string(&snap).unwrap();
    assert!(
        first.contains(ACCESS_A) && !first.contains(REFRESH) && !first.contains("refreshToken"),
        "{first}"
    );
    assert_eq!(std::fs::metadata(&snap).unwrap().mode() & 0o777, 0o600);
    let inode = std::fs::metadata(&snap).unwrap().ino();

    // One long-lived sandbox: claude runs, waits for a go, runs again — never re-provisioned.
    common::require(&[("bwrap", "bubblewrap"), ("mkfifo", "coreutils")]);
    let api = FakeApi::start();
    let sandbox_home = tempfile::tempdir().unwrap();
    let sb = sandbox_home.path().to_str().unwrap().to_owned();
    let fifo = h.path("go.fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let claude = kf::claude_bin();
    let script = format!(
        "{c} -p ping; read go < {f}; {c} -p ping",
        c = claude.display(),
        f = fifo.display()
    );
    let mut bwrap = Command::new("bwrap");
    bwrap
        .args(["--dev-bind", "/", "/", "--tmpfs", &sb])
        .args([
            "--ro-bind",
            snap.to_str().unwrap(),
            &format!("{sb}/.claude/.credentials.json"),
        ])
        .args(["--setenv", "HOME", &sb, "--chdir", &sb, "sh", "-c", &script])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .envs(claude_env(&api))
        .stdin(Stdio::null());
    let sandbox = std::thread::spawn(move || common::run_with_timeout(&mut bwrap, None, WAIT * 2));
    assert_eq!(
        api.wait_bearers(1, WAIT),
        vec![ACCESS_A.to_owned()],
        "first run used the snapshot"
    );

    // The host's Claude Code refreshes its login (atomic rename, as it writes it).
    let tmp = h.write(".claude/.credentials.json.tmp", &login(ACCESS_B), 0o600);
    std::fs::rename(&tmp, h.path(".claude/.credentials.json")).unwrap();
    let rewritten = common::wait_for("the snapshot to be rewritten", WAIT, || {
        let now = std::fs::read_to_string(&snap).map_err(|e| e.to_string())?;
        if now.contains(ACCESS_B) {
            Ok(())
        } else {
            Err("still the old token".into())
        }
    });
    if let Err(e) = rewritten {
        panic!("{e}:\n{}", agent.log_text());
    }
    assert_eq!(
        std::fs::metadata(&snap).unwrap().ino(),
        inode,
        "rewritten in place, so the bind mount sees it"
    );
    release(&fifo);
    let out = sandbox.join().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(
        text(&out.stdout).matches(REPLY).count(),
        2,
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        api.bearers(),
        vec![ACCESS_A.to_owned(), ACCESS_B.to_owned()]
    );
    // The refresh token never entered the sandbox.
    assert!(!std::fs::read_to_string(&snap).unwrap().contains(REFRESH));

    // --forget stops the updates; the opt-in refresh token comes with a warning.
    ok(&h.run(&["snapshot", "--forget", snap.to_str().unwrap()], None, &[]));
    let owned = h.path("owned/.credentials.json");
    let (_, err) = ok(&h.run(
        &[
            "--no-agent",
            "snapshot",
            "--mkdir",
            "--out",
            owned.to_str().unwrap(),
            "--include-refresh-token",
        ],
        None,
        &[],
    ));
    assert!(err.contains("log each other out"), "{err}");
    assert!(std::fs::read_to_string(&owned).unwrap().contains(REFRESH));
    let tmp = h.write(".claude/.credentials.json.tmp", &login(ACCESS_A), 0o600);
    std::fs::rename(&tmp, h.path(".claude/.credentials.json")).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        std::fs::read_to_string(&snap).unwrap().contains(ACCESS_B),
        "forgotten snapshots are left alone"
    );
}

/// Writes the go line into the sandbox's FIFO once its reader is there (bounded: a sandbox
/// that died never blocks the test).
fn release(fifo: &std::path::Path) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut writer = common::wait_some(WAIT, "the sandbox to read the go FIFO", || {
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo)
            .ok()
    });
    writer.write_all(b"go\n").unwrap();
}
