//! Sinks as an attacker inside a sandbox would try them: the project's `.env` (mounted
//! read-write into a container) swapped for a symlink to a private key, a FIFO, a directory,
//! another user's file or a huge file; a snapshot aimed at `~/.bashrc`. Each is refused,
//! audited, shown as failed in `status`, and the target is left byte-for-byte alone.

#![cfg(target_os = "linux")]

mod common;
mod kf;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use keyferry::domain::SinkStatus;
use kf::{assert_no_secret, ok, text, AgentProc, Home};

const TOKEN: &str = "sk-ant-oat01-SINKtokenAAAAbbbbCCCCdddd-1111";
const KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n";

/// A home whose `claude` token comes from the cf token file, with a `.env` sink in `proj/`.
fn home() -> Home {
    let h = Home::new();
    h.write(".config/cf/claude-token", &format!("{TOKEN}\n"), 0o600);
    let env = h.path("proj/.env");
    h.write(
        ".config/keyferry/config.toml",
        &format!(
            "[[sink]]\ncredential = \"claude\"\ndotenv = \"{}\"\n",
            env.display()
        ),
        0o600,
    );
    std::fs::create_dir_all(h.path("proj")).unwrap();
    h
}

/// Waits (with an overall deadline) until `status` shows the `.env` sink failed.
fn failed_sink(agent: &AgentProc, path: &Path) -> SinkStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = agent.client().status().expect("status");
        if let Some(s) = st
            .sinks
            .iter()
            .find(|s| Path::new(&s.path) == path && s.error.is_some())
        {
            return s.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the sink at {} was never marked failed: {:?}",
            path.display(),
            st.sinks
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn audit(h: &Home) -> String {
    ok(&h.run(&["log", "--json", "-n", "200"], None, &[])).0
}

#[test]
fn a_dotenv_swapped_for_a_symlink_to_a_private_key_is_refused() {
    let h = home();
    let key = h.write(".ssh/id_ed25519", KEY, 0o600);
    let env = h.path("proj/.env");
    std::os::unix::fs::symlink(&key, &env).unwrap();
    let agent = h.start_agent();
    let sink = failed_sink(&agent, &env);
    let e = sink.error.unwrap();
    assert_eq!(e.code, "unsafe_file");
    assert!(e.message.contains("symbolic link"), "{}", e.message);
    assert!(e.message.contains(".env"), "{}", e.message);
    assert_no_secret(&e.message, &[TOKEN]);
    // The key is untouched and still only the key; the link is still a link.
    assert_eq!(std::fs::read_to_string(&key).unwrap(), KEY);
    assert!(std::fs::symlink_metadata(&env)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(kf::files_containing(&h.home, "BEGIN OPENSSH").len() == 1);
    let log = audit(&h);
    assert!(
        log.contains("\"op\":\"sink\"") && log.contains("unsafe_file"),
        "{log}"
    );
}

#[test]
fn a_fifo_never_parks_the_agent() {
    let h = home();
    let env = h.path("proj/.env");
    let made = std::process::Command::new("mkfifo")
        .arg(&env)
        .status()
        .unwrap();
    assert!(made.success());
    let agent = h.start_agent();
    let sink = failed_sink(&agent, &env);
    assert!(sink.error.unwrap().message.contains("FIFO"));
    // Still serving, and the FIFO is still a FIFO.
    let t = agent
        .client()
        .get("claude")
        .expect("get while the sink failed");
    assert_eq!(t.token.0.expose(), TOKEN);
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(&env)
        .unwrap()
        .file_type()
        .is_fifo());
}

#[test]
fn a_directory_in_place_of_the_dotenv_is_refused() {
    let h = home();
    let env = h.path("proj/.env");
    std::fs::create_dir(&env).unwrap();
    std::fs::write(env.join("inside"), "x").unwrap();
    let agent = h.start_agent();
    let sink = failed_sink(&agent, &env);
    assert!(sink.error.unwrap().message.contains("directory"));
    assert_eq!(std::fs::read_to_string(env.join("inside")).unwrap(), "x");
}

#[test]
fn an_oversized_dotenv_is_refused_and_left_alone() {
    let h = home();
    let env = h.path("proj/.env");
    let big = "X=1\n".repeat(9 * 1024 * 1024 / 4 + 1);
    std::fs::write(&env, &big).unwrap();
    let agent = h.start_agent();
    let sink = failed_sink(&agent, &env);
    let e = sink.error.unwrap();
    assert!(e.message.contains("limit"), "{}", e.message);
    assert!(std::fs::read_to_string(&env).unwrap() == big);
}

/// Needs root (CI runs as root): the file must belong to another uid.
#[test]
fn another_users_dotenv_is_refused_and_left_alone() {
    assert_eq!(
        keyferry::paths::current_uid(),
        0,
        "this test needs root to chown a file to another user; run the test command as root"
    );
    let h = home();
    let env = h.write("proj/.env", "OTHER=keep\n", 0o644);
    std::os::unix::fs::chown(&env, Some(65534), Some(65534)).unwrap();
    let agent = h.start_agent();
    let sink = failed_sink(&agent, &env);
    assert!(sink.error.unwrap().message.contains("owned by uid 65534"));
    let meta = std::fs::metadata(&env).unwrap();
    assert_eq!(meta.uid(), 65534);
    assert_eq!(meta.permissions().mode() & 0o777, 0o644, "never chmod'ed");
    assert_eq!(std::fs::read_to_string(&env).unwrap(), "OTHER=keep\n");
}

#[test]
fn a_regular_dotenv_is_still_kept_current() {
    let h = home();
    let env = h.write("proj/.env", "# mine\nOTHER=keep\n", 0o600);
    let agent = h.start_agent();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&env).unwrap().contains(TOKEN) {
        assert!(Instant::now() < deadline, "the .env sink was never written");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        std::fs::read_to_string(&env).unwrap(),
        format!("# mine\nOTHER=keep\nCLAUDE_CODE_OAUTH_TOKEN={TOKEN}\n")
    );
    let st = agent.client().status().unwrap();
    assert!(st
        .sinks
        .iter()
        .any(|s| s.error.is_none() && s.written_at.is_some()));
}

#[test]
fn a_snapshot_aimed_at_bashrc_leaves_it_byte_for_byte_alone() {
    let h = home();
    let rc = h.write(
        ".bashrc",
        "export PATH=$HOME/bin:$PATH\nalias ll='ls -l'\n",
        0o644,
    );
    let before = std::fs::read(&rc).unwrap();
    // Without an agent, and through one: both refuse; the agent registers nothing.
    let refused_and_untouched = || {
        let out = h.run(&["snapshot", "--out", rc.to_str().unwrap()], None, &[]);
        assert!(!out.status.success());
        let err = text(&out.stderr);
        assert!(err.contains("not a Claude credentials file"), "{err}");
        assert!(err.contains(".bashrc"), "{err}");
        assert_no_secret(&err, &[TOKEN]);
        assert_eq!(std::fs::read(&rc).unwrap(), before);
        assert_eq!(
            std::fs::metadata(&rc).unwrap().permissions().mode() & 0o777,
            0o644
        );
    };
    refused_and_untouched();
    let agent = h.start_agent();
    refused_and_untouched();
    let st = agent.client().status().unwrap();
    assert!(
        !st.sinks.iter().any(|s| Path::new(&s.path) == rc),
        "{:?}",
        st.sinks
    );
}

#[test]
fn a_snapshot_through_a_symlink_is_refused() {
    let h = home();
    let key = h.write(".ssh/id_ed25519", KEY, 0o600);
    let link = h.path("snap/.credentials.json");
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&key, &link).unwrap();
    let out = h.run(&["snapshot", "--out", link.to_str().unwrap()], None, &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("symbolic link"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&key).unwrap(), KEY);
}
