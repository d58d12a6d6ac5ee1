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
    testkit::wait_until(Duration::from_secs(10), "the .env sink written", || {
        std::fs::read_to_string(&env).unwrap().contains(TOKEN)
    });
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

const LOGIN: &str = r#"{"claudeAiOauth":{"accessToken":"sk-ant-oat01-LOGINaccessAAAAbbbbCCCC-2222","refreshToken":"sk-ant-ort01-LOGINrefreshAAAAbbbbCCCC-3333","expiresAt":4102444800000,"scopes":["user:inference"],"subscriptionType":"max"}}"#;

/// A home with Claude Code's own login and another project's `.env`, and sinks in
/// `proj/.auth/claude/` (a folder a container mounting `proj/` can rewrite).
fn home_with_login_and_mounted_project() -> Home {
    let h = Home::new();
    h.write(".config/cf/claude-token", &format!("{TOKEN}\n"), 0o600);
    h.write(".claude/.credentials.json", LOGIN, 0o600);
    h.write("other/.env", "OTHER=kept\n", 0o640);
    h.write(
        ".config/keyferry/config.toml",
        &format!(
            "[[sink]]\ncredential = \"claude\"\nsnapshot = \"{}\"\n[[sink]]\ncredential = \"claude\"\ndotenv = \"{}\"\n",
            h.path("proj/.auth/claude/.credentials.json").display(),
            h.path("proj/.auth/env/.env").display()
        ),
        0o600,
    );
    std::fs::create_dir_all(h.path("proj/.auth/env")).unwrap();
    h
}

/// The sandbox rewrites what it can reach: the sinks' folders become links to the host's
/// `~/.claude` and to another project. Then a token change makes the agent rewrite every
/// sink: both are refused, named in `status` and `doctor`, and the login keeps its refresh
/// token and the other project's `.env` its bytes and mode.
#[test]
fn a_parent_folder_swapped_for_a_link_never_redirects_a_sink() {
    let h = home_with_login_and_mounted_project();
    let agent = h.start_agent();
    let snap = h.path("proj/.auth/claude/.credentials.json");
    let env = h.path("proj/.auth/env/.env");
    common::wait_until(Duration::from_secs(10), "the sinks written", || {
        snap.exists() && env.exists()
    });
    // The attack, from inside the mount.
    std::fs::remove_dir_all(h.path("proj/.auth/claude")).unwrap();
    std::os::unix::fs::symlink(h.path(".claude"), h.path("proj/.auth/claude")).unwrap();
    std::fs::remove_dir_all(h.path("proj/.auth/env")).unwrap();
    std::os::unix::fs::symlink(h.path("other"), h.path("proj/.auth/env")).unwrap();
    // A new token: every sink is rewritten.
    let newer = "sk-ant-oat01-SINKnewerAAAAbbbbCCCCdddd-9999";
    h.write(".config/cf/claude-token", &format!("{newer}\n"), 0o600);
    for path in [&snap, &env] {
        let e = failed_sink(&agent, path).error.unwrap();
        assert_eq!(e.code, "unsafe_file");
        assert!(e.message.contains("is a symbolic link"), "{}", e.message);
        assert_no_secret(&e.message, &[TOKEN, newer]);
    }
    assert_eq!(
        std::fs::read_to_string(h.path(".claude/.credentials.json")).unwrap(),
        LOGIN
    );
    assert_eq!(
        std::fs::read_to_string(h.path("other/.env")).unwrap(),
        "OTHER=kept\n"
    );
    let mode = std::fs::metadata(h.path("other/.env")).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o640);
    let (status, _) = ok(&h.run(&["status"], None, &[]));
    assert!(status.contains("proj/.auth/claude"), "{status}");
    // `status --json`: the credential's row carries its sinks, the refusal's reason too.
    let (json, _) = ok(&h.run(&["status", "--json"], None, &[]));
    let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
    let sinks = rows[0]["sinks"]
        .as_array()
        .unwrap_or_else(|| panic!("{json}"));
    assert!(
        sinks.iter().any(
            |s| s["path"].as_str().unwrap().contains("proj/.auth/claude")
                && s["error"]["message"].is_string()
        ),
        "{json}"
    );
    let doctor = text(&h.run(&["doctor"], None, &[]).stdout);
    assert!(doctor.contains("proj/.auth/claude"), "{doctor}");
    assert!(audit(&h).contains("\"op\":\"sink\""));
}

/// A snapshot aimed at the login itself, directly or through a hard link, is refused: the
/// host's Claude Code keeps its refresh token.
#[test]
fn a_snapshot_over_the_login_or_a_hard_link_to_it_is_refused() {
    let h = home_with_login_and_mounted_project();
    let login = h.path(".claude/.credentials.json");
    let out = h.run(
        &["--no-agent", "snapshot", "--out", login.to_str().unwrap()],
        None,
        &[],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("live login"),
        "{}",
        text(&out.stderr)
    );
    let linked = h.path("proj/.auth/linked.json");
    std::fs::hard_link(&login, &linked).unwrap();
    let out = h.run(
        &["--no-agent", "snapshot", "--out", linked.to_str().unwrap()],
        None,
        &[],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("hard links"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&login).unwrap(), LOGIN);
}
