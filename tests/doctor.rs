//! `keyferry doctor` against a real Secret Service, agent and notification service in a
//! temporary HOME: each thing it checks is broken in turn (a locked keychain, no Claude
//! login, no agent, an open socket directory, a symlinked or FIFO sink, a gateway address
//! nobody listens on, no notification service) and must be reported with its fix and a
//! non-zero exit; a healthy setup exits 0; the CLIs it runs never see a token.

// Real Secret Service and D-Bus: Linux only.
#![cfg(target_os = "linux")]

mod common;
mod kf;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use common::{NotificationServer, SecretServiceFixture};
use keyferry::doctor::{Check, Report, State};
use kf::{ok, text, Home};

const SETUP: &str = "sk-ant-oat01-DOCTORsetupAAAAbbbbCCCCdddd-1111";
const LOGIN_ACCESS: &str = "sk-ant-oat01-DOCTORloginEEEEffffGGGGhhhh-2222";
const ENV_SECRET: &str = "sk-ant-api03-DOCTORenvIIIIjjjjKKKKllll-3333";

fn login_json() -> String {
    format!(
        r#"{{"claudeAiOauth":{{"accessToken":"{LOGIN_ACCESS}","refreshToken":"sk-ant-ort01-DOCTORrefreshMMMMnnnnOOOO-4444","expiresAt":4102444800000,"scopes":["user:inference"],"subscriptionType":"max"}}}}"#
    )
}

/// `keyferry doctor --json` with `envs`: its exit status and typed report.
fn doctor(h: &Home, envs: &[(&str, &str)]) -> (Option<i32>, Report, Output) {
    let out = h.run(&["doctor", "--json"], None, envs);
    let report: Report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json did not print a report ({e}):\nstdout: {}\nstderr: {}",
            text(&out.stdout),
            text(&out.stderr)
        )
    });
    kf::assert_no_secret(&text(&out.stdout), &[SETUP, LOGIN_ACCESS, ENV_SECRET]);
    (out.status.code(), report, out)
}

/// The one check whose name is `name`.
#[track_caller]
fn check<'a>(r: &'a Report, name: &str) -> &'a Check {
    let found: Vec<&Check> = r.checks.iter().filter(|c| c.name == name).collect();
    assert_eq!(found.len(), 1, "checks named {name:?} in {r:#?}");
    found[0]
}

/// `name` failed, its detail holds `detail` and its fix holds `fix`; the exit is non-zero.
#[track_caller]
fn assert_fails(code: Option<i32>, r: &Report, name: &str, detail: &str, fix: &str) {
    let c = check(r, name);
    assert_eq!(c.state, State::Fail, "{c:#?}");
    assert!(c.detail.contains(detail), "{c:#?}");
    let f = c.fix.as_deref().unwrap_or_default();
    assert!(f.contains(fix), "fix {f:?} lacks {fix:?}: {c:#?}");
    assert!(!r.ok, "{r:#?}");
    assert_eq!(code, Some(1), "{r:#?}");
}

/// A fake `claude` on PATH that prints a version and records the environment it got.
fn fake_claude(h: &Home) -> String {
    let env_log = h.path("claude-env.log");
    h.write(
        "bin/claude",
        &format!(
            "#!/bin/sh\nenv > {}\necho '2.1.7 (Claude Code)'\n",
            env_log.display()
        ),
        0o755,
    );
    format!(
        "{}:{}",
        h.path("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn a_healthy_setup_passes_and_the_clis_see_no_token() {
    let h = Home::new();
    h.write(".claude/.credentials.json", &login_json(), 0o600);
    ok(&h.run(&["setup"], Some(SETUP), &[]));
    let env = h.path("proj/.env");
    std::fs::create_dir_all(h.path("proj")).unwrap();
    h.write(
        ".config/keyferry/config.toml",
        &format!(
            "[gateway]\nlisten = []\nunix_socket = false\n[[sink]]\ncredential = \"claude\"\ndotenv = \"{}\"\n",
            env.display()
        ),
        0o600,
    );
    ok(&h.run(&["agent", "install"], None, &[]));
    let _notifications = NotificationServer::start(h.ss.address());
    let _agent = h.start_agent();
    common::wait_until(
        common::STARTUP_TIMEOUT,
        "the agent to write the .env sink",
        || std::fs::read_to_string(&env).is_ok_and(|t| t.contains(SETUP)),
    );
    let path = fake_claude(&h);
    let (code, r, _) = doctor(&h, &[("PATH", &path), ("ANTHROPIC_API_KEY", ENV_SECRET)]);
    for c in &r.checks {
        assert_ne!(c.state, State::Fail, "{c:#?}");
    }
    assert!(r.ok);
    assert_eq!(code, Some(0), "{r:#?}");
    for name in [
        "config",
        "keychain",
        "claude login",
        "cf item cf-claude-token",
        "agent",
        "agent socket",
        "notifications",
        "autostart",
    ] {
        assert_eq!(check(&r, name).state, State::Ok, "{r:#?}");
    }
    assert_eq!(check(&r, "sink ~/proj/.env").state, State::Ok, "{r:#?}");
    assert_eq!(check(&r, "gateway").state, State::Skip, "{r:#?}");
    let claude = check(&r, "cli claude");
    assert_eq!(claude.state, State::Ok, "{claude:#?}");
    assert!(claude.detail.contains("2.1.7"), "{claude:#?}");
    // The CLI ran with PATH and HOME only: none of the caller's variables, no token.
    let seen = std::fs::read_to_string(h.path("claude-env.log")).unwrap();
    assert!(seen.contains("PATH="), "{seen}");
    assert!(!seen.contains(ENV_SECRET), "{seen}");
    assert!(!seen.contains("ANTHROPIC_API_KEY"), "{seen}");
    assert!(!seen.contains("DBUS_SESSION_BUS_ADDRESS"), "{seen}");
    let out = h.run(&["doctor"], None, &[("PATH", &path)]);
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(shown.contains("No problems found."), "{shown}");
    assert!(!shown.contains("FAIL"), "{shown}");
    println!("{shown}");
}

#[test]
fn a_locked_keychain_is_reported_with_the_unlock_fix_without_prompting() {
    let h = Home::locked();
    h.write(".claude/.credentials.json", &login_json(), 0o600);
    // Even a config that allows prompts: the doctor never waits on an unlock dialog.
    h.write(
        ".config/keyferry/config.toml",
        "[keychain]\nbackend = \"secret-service\"\nprompt_timeout_secs = 600\n",
        0o600,
    );
    let (code, r, out) = doctor(&h, &[]);
    assert_fails(code, &r, "keychain", "locked", "unlock");
    assert_eq!(check(&r, "cf item cf-claude-token").state, State::Skip);
    assert!(!text(&out.stdout).contains(SecretServiceFixture::CANARY_SECRET));
    h.ss.assert_locked();
}

#[test]
fn no_claude_login_and_no_other_source_fails_with_the_login_fix() {
    let h = Home::new();
    let (code, r, _) = doctor(&h, &[]);
    assert_fails(
        code,
        &r,
        "claude login",
        "~/.claude/.credentials.json",
        "keyferry setup",
    );
    // A login file open to others is named with its chmod.
    h.write(".claude/.credentials.json", &login_json(), 0o644);
    let (code, r, _) = doctor(&h, &[]);
    assert_fails(
        code,
        &r,
        "claude login",
        "unsafe permissions (644)",
        &format!("chmod 600 {}", "~/.claude/.credentials.json"),
    );
    std::fs::remove_file(h.path(".claude/.credentials.json")).unwrap();
    // With a token stored for cf the login is only worth a warning.
    ok(&h.run(&["setup"], Some(SETUP), &[]));
    let (_, r, _) = doctor(&h, &[]);
    let login = check(&r, "claude login");
    assert_eq!(login.state, State::Warn, "{login:#?}");
    assert!(
        login.detail.contains("keychain:cf-claude-token"),
        "{login:#?}"
    );
    assert_eq!(check(&r, "cf item cf-claude-token").state, State::Ok);
}

#[test]
fn no_agent_is_reported_with_how_to_start_it() {
    let h = Home::new();
    let (code, r, _) = doctor(&h, &[]);
    assert_fails(
        code,
        &r,
        "agent",
        "no agent answers on ~/run/agent.sock",
        "keyferry agent",
    );
    // The text form marks it and prints the fix under it.
    let out = h.run(&["doctor"], None, &[]);
    assert_eq!(out.status.code(), Some(1));
    let shown = text(&out.stdout);
    assert!(shown.contains("FAIL  agent"), "{shown}");
    assert!(shown.contains("fix: start it: `keyferry agent`"), "{shown}");
}

#[test]
fn an_open_socket_directory_is_reported_with_chmod_700() {
    let h = Home::new();
    let _agent = h.start_agent();
    let dir = h.socket().parent().unwrap().to_path_buf();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, r, _) = doctor(&h, &[]);
    assert_fails(
        code,
        &r,
        "agent socket",
        "mode 755",
        &format!("chmod 700 {}", dir.display()),
    );
    // The agent itself still answers: only its directory is wrong.
    assert_ne!(check(&r, "agent").state, State::Fail);
}

#[test]
fn a_symlinked_or_fifo_sink_is_reported_and_left_alone() {
    let h = Home::new();
    let key = h.write(".ssh/id_ed25519", "PRIVATE KEY BYTES\n", 0o600);
    std::fs::create_dir_all(h.path("proj")).unwrap();
    let env = h.path("proj/.env");
    std::os::unix::fs::symlink(&key, &env).unwrap();
    let fifo = h.path("proj/.credentials.json");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    h.write(
        ".config/keyferry/config.toml",
        &format!(
            "[[sink]]\ncredential = \"claude\"\ndotenv = \"{}\"\n\
             [[sink]]\ncredential = \"claude\"\nsnapshot = \"{}\"\n",
            env.display(),
            fifo.display()
        ),
        0o600,
    );
    let (code, r, _) = doctor(&h, &[]);
    assert_fails(
        code,
        &r,
        "sink ~/proj/.env",
        "symbolic link",
        "replace the link with a regular file",
    );
    assert_fails(code, &r, "sink ~/proj/.credentials.json", "FIFO", "rm ");
    assert_eq!(
        std::fs::read_to_string(&key).unwrap(),
        "PRIVATE KEY BYTES\n"
    );
    assert!(std::fs::symlink_metadata(&env)
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn a_gateway_address_nobody_listens_on_is_reported() {
    let h = Home::new();
    let live = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let live_addr = live.local_addr().unwrap();
    h.write(
        ".config/keyferry/config.toml",
        &format!("[gateway]\nlisten = [\"{live_addr}\", \"{dead}\"]\nunix_socket = false\n"),
        0o600,
    );
    let (code, r, _) = doctor(&h, &[]);
    assert_eq!(check(&r, &format!("gateway {live_addr}")).state, State::Ok);
    assert_fails(
        code,
        &r,
        &format!("gateway {dead}"),
        "nothing listens",
        "[gateway] listen",
    );
}

#[test]
fn no_notification_service_is_reported_unless_notifications_are_off() {
    let h = Home::new();
    let (code, r, _) = doctor(&h, &[]);
    assert_fails(
        code,
        &r,
        "notifications",
        "no notification service",
        "notifications = false",
    );
    let _server = NotificationServer::start(h.ss.address());
    let (_, r, _) = doctor(&h, &[]);
    assert_eq!(check(&r, "notifications").state, State::Ok);
    drop(_server);
    h.write(
        ".config/keyferry/config.toml",
        "[agent]\nnotifications = false\n",
        0o600,
    );
    let (_, r, _) = doctor(&h, &[]);
    assert_eq!(check(&r, "notifications").state, State::Skip);
}

#[test]
fn a_stopped_agent_and_a_hung_cli_do_not_hang_the_doctor() {
    let h = Home::new();
    let agent = h.start_agent();
    let pid_file = h.path("codex.pid");
    h.write(
        "bin/codex",
        &format!(
            "#!/bin/sh\necho $$ > {}\nexec sleep 30\n",
            pid_file.display()
        ),
        0o755,
    );
    let path = format!(
        "{}:{}",
        h.path("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    common::signal_pid(agent.child.id(), libc::SIGSTOP);
    let (code, r, _) = doctor(&h, &[("PATH", &path)]);
    common::signal_pid(agent.child.id(), libc::SIGCONT);
    assert_fails(code, &r, "agent", "gave no answer", "kill -CONT");
    let codex = check(&r, "cli codex");
    assert_eq!(codex.state, State::Warn, "{codex:#?}");
    assert!(codex.detail.contains("no answer within 5 s"), "{codex:#?}");
    // The hung CLI was killed at the deadline, not left running.
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let pid = pid.trim();
    assert!(!pid.is_empty());
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "codex --version (pid {pid}) still runs"
    );
}

#[test]
fn a_sink_the_agent_cannot_write_is_reported_with_its_error() {
    let h = Home::new();
    h.write(".config/cf/claude-token", &format!("{SETUP}\n"), 0o600);
    // Its directory is a regular file: every write fails.
    h.write("notadir", "", 0o600);
    h.write(
        ".config/keyferry/config.toml",
        "[[sink]]\ncredential = \"claude\"\ndotenv = \"~/notadir/.env\"\n",
        0o600,
    );
    let agent = h.start_agent();
    common::wait_until(
        common::STARTUP_TIMEOUT,
        "the agent to report the sink's failed write",
        || {
            agent
                .client()
                .status()
                .is_ok_and(|st| st.sinks.iter().any(|s| s.error.is_some()))
        },
    );
    let (code, r, _) = doctor(&h, &[]);
    assert_fails(
        code,
        &r,
        "sink ~/notadir/.env",
        "the agent's last write failed",
        "directory exists",
    );
}

#[test]
fn a_broken_config_is_reported_and_the_rest_is_still_checked() {
    let h = Home::new();
    h.write(
        ".config/keyferry/config.toml",
        "[keychain]\nbackend = \"floppy\"\n",
        0o600,
    );
    let (code, r, _) = doctor(&h, &[]);
    assert_fails(code, &r, "config", "floppy", "move the file aside");
    assert!(check(&r, "config").detail.contains("line 2"), "{r:#?}");
    // The other checks ran on the defaults.
    assert_eq!(check(&r, "keychain").state, State::Ok, "{r:#?}");
    assert_eq!(check(&r, "agent").state, State::Fail, "{r:#?}");
}

#[test]
fn a_headless_host_warns_about_notifications_and_a_served_claude_gets_no_setup_advice() {
    let h = Home::new();
    // With a session bus but no notification service: broken, as above.
    let (_, r, _) = doctor(&h, &[]);
    assert_eq!(check(&r, "notifications").state, State::Fail, "{r:#?}");
    // No session bus, no display: a headless host, only worth a warning.
    let headless = [
        (
            "DBUS_SESSION_BUS_ADDRESS",
            "unix:path=/nonexistent/kf-no-bus",
        ),
        ("DISPLAY", ""),
        ("WAYLAND_DISPLAY", ""),
    ];
    let (_, r, _) = doctor(&h, &headless);
    let n = check(&r, "notifications");
    assert_eq!(n.state, State::Warn, "{n:#?}");
    assert!(n.detail.contains("headless host"), "{n:#?}");
    assert!(
        n.fix
            .as_deref()
            .unwrap_or_default()
            .contains("notifications = false"),
        "{n:#?}"
    );
    // A display means a desktop session whose notification service is missing.
    let display = [headless[0], ("DISPLAY", ":0")];
    let (_, r, _) = doctor(&h, &display);
    assert_eq!(check(&r, "notifications").state, State::Fail, "{r:#?}");

    // claude served from cf's 0600 token file: no check suggests `keyferry setup`.
    h.write(".config/cf/claude-token", &format!("{SETUP}\n"), 0o600);
    let (_, r, out) = doctor(&h, &[]);
    let login = check(&r, "claude login");
    assert_eq!(login.state, State::Warn, "{login:#?}");
    assert!(
        login
            .detail
            .contains("served from file:~/.config/cf/claude-token"),
        "{login:#?}"
    );
    let cf = check(&r, "cf item cf-claude-token");
    assert_eq!(cf.state, State::Skip, "{cf:#?}");
    assert!(cf.detail.contains("claude is served from file:"), "{cf:#?}");
    assert!(
        !text(&out.stdout).contains("keyferry setup"),
        "{}",
        text(&out.stdout)
    );
}
