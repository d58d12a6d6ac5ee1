//! The real `keyferry` binary with `[keychain] backend = "security-cli"` and the stand-in
//! `security` (testkit/bin/security): `setup` stores the token through `security -i` with
//! the token on stdin, `get` reads it back, and no `security` argv ever holds the token.

#![cfg(unix)]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use testkit::fake_security::{FakeFailure, FakeSecurity};

const TOKEN: &str = "sk-ant-oat01-SECCLItokenAAAAbbbbCCCCddddEEEE-7777";
const CORE: &str = "SECCLItokenAAAAbbbbCCCC";

#[derive(serde::Deserialize)]
struct LoggedRun {
    argv: Vec<String>,
    stdin: String,
}

struct Env {
    _dir: tempfile::TempDir,
    home: std::path::PathBuf,
    config: std::path::PathBuf,
    fake: FakeSecurity,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        let fake_dir = dir.path().join("fake");
        std::fs::create_dir(&fake_dir).unwrap();
        let fake = FakeSecurity::new(&fake_dir);
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[keychain]\nbackend = \"security-cli\"\nsecurity_path = {:?}\n",
                fake.program().display().to_string()
            ),
        )
        .unwrap();
        Self {
            _dir: dir,
            home,
            config,
            fake,
        }
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyferry"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("USER", "kftest")
            .env("KEYFERRY_CONFIG", &self.config)
            .env("KEYFERRY_SOCK", self.home.join("no-agent.sock"))
            .current_dir(&self.home)
            .stdin(Stdio::null())
            .args(args);
        common::run_with_timeout(&mut cmd, stdin.map(str::as_bytes), common::COMMAND_TIMEOUT)
    }

    fn runs(&self) -> Vec<LoggedRun> {
        self.fake
            .log_text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[track_caller]
fn ok(out: &Output) -> (String, String) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    (text(&out.stdout), text(&out.stderr))
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p)
                .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
            {
                hits.push(p);
            }
        }
    }
    hits
}

#[test]
fn setup_stores_through_security_stdin_and_get_reads_it_back() {
    let env = Env::new();
    let (out, err) = ok(&env.run(&["setup"], Some(&format!("{TOKEN}\n"))));
    assert!(!out.contains(CORE) && !err.contains(CORE), "{out}{err}");

    let runs = env.runs();
    assert!(!runs.is_empty(), "setup never ran the stand-in security");
    // The token went in on stdin, as one `add-generic-password` command for `security -i`.
    let writes: Vec<&LoggedRun> = runs.iter().filter(|r| r.argv == ["-i"]).collect();
    assert_eq!(
        writes.len(),
        1,
        "want one `security -i` run, got {}",
        writes.len()
    );
    assert!(
        writes[0].stdin.starts_with("add-generic-password -U -s ")
            && writes[0].stdin.contains(&format!("-w \"{TOKEN}\"\n")),
        "the token was not sent on stdin as `-w \"TOKEN\"`"
    );
    // …and is in no argv of any run.
    for r in &runs {
        let argv = r.argv.join(" ");
        assert!(
            !argv.contains(CORE),
            "the token is in the argv of a security run"
        );
        assert!(
            !argv.contains(&hex::encode(TOKEN)),
            "the token's hex is in an argv"
        );
    }

    let (got, _) = ok(&env.run(&["get"], None));
    assert_eq!(got.trim_end(), TOKEN);
    let reads = env.runs();
    assert!(
        reads[runs.len()..]
            .iter()
            .any(
                |r| r.argv.first().map(String::as_str) == Some("find-generic-password")
                    && r.argv.last().map(String::as_str) == Some("-w")
            ),
        "get did not read through `security find-generic-password … -w`"
    );
    for r in &reads {
        assert!(!r.argv.join(" ").contains(CORE), "the token is in an argv");
    }
    // The only files holding the token are the stand-in's keychain file (as hex) and its
    // stdin log; nothing under HOME.
    assert!(files_containing(&env.home, CORE).is_empty());
}

#[test]
fn a_locked_keychain_fails_setup_with_the_unlock_command() {
    let env = Env::new();
    env.fake.fail(Some(FakeFailure::Locked));
    let out = env.run(&["setup"], Some(&format!("{TOKEN}\n")));
    assert!(
        !out.status.success(),
        "setup succeeded on a locked keychain"
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("security unlock-keychain ~/Library/Keychains/login.keychain-db"),
        "{err}"
    );
    assert!(
        !err.contains(CORE) && !text(&out.stdout).contains(CORE),
        "{err}"
    );
}

#[test]
fn a_missing_security_tool_names_security_path() {
    let env = Env::new();
    std::fs::write(
        &env.config,
        "[keychain]\nbackend = \"security-cli\"\nsecurity_path = \"/nonexistent/security\"\n",
    )
    .unwrap();
    let out = env.run(&["setup"], Some(&format!("{TOKEN}\n")));
    assert!(
        !out.status.success(),
        "setup succeeded without a security tool"
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("/nonexistent/security") && err.contains("security_path"),
        "{err}"
    );
}
