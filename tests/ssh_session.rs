//! `keyferry ssh` to a real sshd on 127.0.0.1 as a second Unix user ("the remote"): the
//! real `claude` there reaches a fake Messages API through the forwarded gateway with the
//! stored token, while the remote user's files, environment and process list never hold
//! the token or the placeholder; the grant is gone when ssh exits; a forward that cannot
//! bind is a clear error naming the sshd setting.

#![cfg(target_os = "linux")]

mod common;
mod kf;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use keyferry::domain::GrantInfo;
use kf::fake_api::{FakeApi, REPLY};
use kf::{assert_no_secret, ok, text, Home};

const SETUP: &str = "sk-ant-oat01-SSHsessionAAAAbbbbCCCC-1111";
const USER: &str = "kfother";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The tests share one remote user's home and the host's process list: one at a time, so
/// one test's session never shows up in another's leak checks.
static REMOTE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    REMOTE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What every test here starts from: the remote (sshd on loopback as a second user), a fake
/// API, and the host's agent with its gateway. Holds the one-at-a-time lock.
struct Remote {
    _one: std::sync::MutexGuard<'static, ()>,
    sshd: kf::sshd::Sshd,
    api: FakeApi,
    h: Home,
    _agent: kf::AgentProc,
}

fn remote() -> Remote {
    common::require_root("sshd, and a second Unix user created with useradd");
    let one = one_at_a_time();
    kf::ensure_user(USER);
    let sshd = kf::sshd::Sshd::start(USER);
    let api = FakeApi::start();
    let h = home(&api);
    let agent = h.start_agent();
    Remote {
        _one: one,
        sshd,
        api,
        h,
        _agent: agent,
    }
}

fn ssh_args(sshd: &kf::sshd::Sshd) -> Vec<String> {
    sshd.args(USER)
}

fn home(api: &FakeApi) -> Home {
    Home::with_gateway(&api.url, SETUP)
}

fn grants(h: &Home) -> Vec<GrantInfo> {
    serde_json::from_str(&ok(&h.run(&["grants", "--json"], None, &[])).0).unwrap()
}

#[test]
fn claude_on_the_remote_reaches_the_api_and_never_holds_the_token() {
    let Remote {
        _one,
        sshd,
        api,
        h,
        _agent,
    } = remote();
    let remote_home = format!("/home/{USER}");
    // No --remote-port: the tunnel ends at a 0600 socket of the session's own.
    let mut argv: Vec<String> = vec!["ssh".into()];
    argv.extend(ssh_args(&sshd));
    argv.extend(
        [
            "--",
            "env",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1",
            "DISABLE_AUTOUPDATER=1",
        ]
        .iter()
        .map(|s| (*s).to_owned()),
    );
    argv.push(kf::claude_bin().display().to_string());
    argv.extend(["-p".to_owned(), "ping".to_owned()]);
    let stop = Arc::new(AtomicBool::new(false));
    let ps = kf::sample_ps(Arc::clone(&stop));
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    let (stdout, stderr) = ok(&h.run(&args, None, &[]));
    stop.store(true, Ordering::SeqCst);
    assert!(stdout.contains(REPLY), "{stdout}\n{stderr}");
    assert_eq!(api.bearers(), vec![SETUP.to_owned()]);
    // No argv on either side held the token or a placeholder.
    let seen = ps.join().unwrap();
    assert!(!seen.contains("kfg_"), "a placeholder in ps");
    assert_no_secret(&seen, &[SETUP]);
    // The remote user's files hold neither; the env file is gone.
    assert!(kf::files_containing(std::path::Path::new(&remote_home), "kfg_").is_empty());
    assert!(kf::files_containing(std::path::Path::new(&remote_home), SETUP).is_empty());
    // The session's grant was revoked when ssh exited, and its socket is gone.
    assert!(grants(&h).is_empty());
    assert_eq!(session_sockets(), Vec::<String>::new());
}

/// The tunnels' sockets of any session left under /tmp.
fn session_sockets() -> Vec<String> {
    std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("keyferry-ssh-") && n.ends_with(".sock"))
        .collect()
}

/// While the session runs, its socket is the remote user's, 0600: another user there cannot
/// connect; a fixed `--remote-port` still works for clients without socket support. The
/// placeholder reaches curl over its stdin (`-K -`), never an argv another test's `ps`
/// sampling could see.
#[test]
fn the_session_socket_is_the_remote_users_alone_and_a_fixed_port_still_works() {
    let Remote {
        _one,
        sshd,
        api: _api,
        h,
        _agent,
    } = remote();
    let probe = "stat -c '%a %U %F' \"$ANTHROPIC_UNIX_SOCKET\"; \
        printf 'header = \"Authorization: Bearer %s\"\\n' \"$ANTHROPIC_AUTH_TOKEN\" | \
        curl -s -o /dev/null -w 'code=%{http_code}\\n' --unix-socket \"$ANTHROPIC_UNIX_SOCKET\" \
        -K - -H 'x-app: cli' http://localhost/v1/models";
    let mut argv: Vec<String> = vec!["ssh".into()];
    argv.extend(ssh_args(&sshd));
    argv.extend([
        "--".to_owned(),
        "sh".to_owned(),
        "-c".to_owned(),
        probe.to_owned(),
    ]);
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    let (stdout, stderr) = ok(&h.run(&args, None, &[]));
    assert!(
        stdout.contains(&format!("600 {USER} socket")),
        "{stdout}\n{stderr}"
    );
    assert!(stdout.contains("code=200"), "{stdout}\n{stderr}");
    assert_eq!(session_sockets(), Vec::<String>::new());
    // --remote-port: the same through 127.0.0.1:PORT on the remote.
    let port = free_port().to_string();
    let mut argv: Vec<String> = vec!["ssh".into(), "--remote-port".into(), port.clone()];
    argv.extend(ssh_args(&sshd));
    argv.extend([
        "--".to_owned(),
        "sh".to_owned(),
        "-c".to_owned(),
        "printf 'header = \"Authorization: Bearer %s\"\\n' \"$ANTHROPIC_AUTH_TOKEN\" | curl -s -o /dev/null -w 'code=%{http_code}\\n' -K - -H 'x-app: cli' \"$ANTHROPIC_BASE_URL/v1/models\"".to_owned(),
    ]);
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    let (stdout, stderr) = ok(&h.run(&args, None, &[]));
    assert!(stdout.contains("code=200"), "{stdout}\n{stderr}");
    assert!(grants(&h).is_empty());
}

#[test]
fn a_tunnel_that_cannot_bind_is_a_clear_error_and_the_grant_is_revoked() {
    let Remote {
        _one,
        sshd,
        api: _api,
        h,
        _agent,
    } = remote();
    // The remote port is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let mut argv: Vec<String> = vec!["ssh".into(), "--remote-port".into(), port];
    argv.extend(ssh_args(&sshd));
    argv.extend(["--".to_owned(), "true".to_owned()]);
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = h.run(&args, None, &[]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("AllowTcpForwarding") && err.contains("--remote-port"),
        "{err}"
    );
    assert!(grants(&h).is_empty());
    let leftovers: Vec<_> = std::fs::read_dir(format!("/home/{USER}"))
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".keyferry-ssh-")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
