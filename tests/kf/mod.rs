//! The shared harness for tests that drive the real `keyferry` binary: a temporary HOME
//! with its own Secret Service, a clean environment, and leak checks.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

use crate::common::{self, SecretServiceFixture};

pub mod fake_api;
pub mod sshd;

pub const USER: &str = "kftest";

/// A temporary HOME with its own Secret Service.
pub struct Home {
    pub _dir: TempDir,
    pub home: PathBuf,
    pub ss: SecretServiceFixture,
    /// The folder of the agent's socket (and the gateway's).
    pub run: PathBuf,
}

impl Home {
    pub fn new() -> Self {
        Self::with_keyring(|home| SecretServiceFixture::start(home, "test-password"))
    }

    /// A home whose login keyring is locked (see [`SecretServiceFixture::start_locked`]).
    pub fn locked() -> Self {
        Self::with_keyring(SecretServiceFixture::start_locked)
    }

    /// A temporary HOME whose Secret Service `start` makes; the agent's socket in
    /// `HOME/run`.
    fn with_keyring(start: impl FnOnce(&Path) -> SecretServiceFixture) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        let ss = start(&home);
        let run = home.join("run");
        Self {
            _dir: dir,
            home,
            ss,
            run,
        }
    }

    /// A home laid out as a desktop session is: one runtime folder outside HOME (as
    /// `/run/user/UID` is) holding the session bus (`bus`), the keyring's control socket and
    /// the agent's and gateway's sockets — so a sandbox recipe's `--tmpfs` of that folder is
    /// tested against everything it must hide.
    pub fn with_one_runtime_dir() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let run = dir.path().join("run");
        std::fs::create_dir(&home).unwrap();
        std::fs::create_dir(&run).unwrap();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
        let bus = common::PrivateBus::start_in(&run, common::plain_launcher());
        let ss = SecretServiceFixture::start_on(bus, &home, "test-password");
        Self {
            _dir: dir,
            home,
            ss,
            run,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.home.join(rel)
    }

    pub fn write(&self, rel: &str, contents: &str, mode: u32) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, contents).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    /// `keyferry` with a clean environment: the fixture's bus and XDG dirs, no agent.
    pub fn kf(&self) -> Command {
        self.command(env!("CARGO_BIN_EXE_keyferry"))
    }

    /// `program` (a link to `keyferry`, a script) with [`Home::kf`]'s environment.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("USER", USER)
            .env("KEYFERRY_SOCK", self.socket())
            .envs(self.ss.env())
            .current_dir(&self.home)
            .stdin(Stdio::null());
        cmd
    }

    /// Where the agent listens (nothing listens until [`Home::start_agent`]).
    pub fn socket(&self) -> PathBuf {
        self.run.join("agent.sock")
    }

    /// Starts `keyferry agent` and waits until it answers a handshake.
    pub fn start_agent(&self) -> AgentProc {
        self.start_agent_under(&[])
    }

    /// [`Home::start_agent`] with `keyferry agent` run through `wrapper` (e.g. `prlimit
    /// --nofile=1024:1024 --`).
    pub fn start_agent_under(&self, wrapper: &[&str]) -> AgentProc {
        let log = self.home.join(format!("agent-{}.log", std::process::id()));
        let mut cmd = match wrapper.split_first() {
            None => self.kf(),
            Some((prog, args)) => {
                let mut c = self.command(prog);
                c.args(args).arg(env!("CARGO_BIN_EXE_keyferry"));
                c
            }
        };
        // Its own process group: no stray group signal from another test reaches it.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.arg("agent")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if std::env::var_os("KF_TEST_AGENT_LOG").is_some() {
            cmd.env("RUST_LOG", "debug");
        }
        let child = cmd.spawn().expect("spawn keyferry agent");
        let agent = AgentProc {
            child,
            sock: self.socket(),
            log,
        };
        agent.wait_ready();
        agent
    }

    /// A home with `token` stored and the agent's gateway on an ephemeral loopback port in
    /// front of `upstream` (a fake API the test owns).
    pub fn with_gateway(upstream: &str, token: &str) -> Self {
        let h = Self::new();
        h.write(
            ".config/keyferry/config.toml",
            &format!(
                "[gateway]\nlisten = [\"127.0.0.1:0\"]\nunix_socket = false\nupstream = \"{upstream}\"\n"
            ),
            0o600,
        );
        ok(&h.run(&["setup"], Some(token), &[]));
        h
    }

    /// `keyferry grant NAME --ttl 1h`: the gateway's `host:port` and the placeholder.
    pub fn grant_addr(&self, name: &str) -> (String, String) {
        let (env, _) = ok(&self.run(&["grant", name, "--ttl", "1h"], None, &[]));
        let var = |k: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(k))
                .unwrap_or_else(|| panic!("no {k} in {env}"))
                .to_owned()
        };
        let base = var("ANTHROPIC_BASE_URL=");
        let addr = base.strip_prefix("http://").unwrap_or(&base).to_owned();
        (addr, var("ANTHROPIC_AUTH_TOKEN="))
    }

    pub fn run(&self, args: &[&str], stdin: Option<&str>, envs: &[(&str, &str)]) -> Output {
        let mut cmd = self.kf();
        cmd.args(args).envs(envs.iter().copied());
        common::run_with_timeout(&mut cmd, stdin.map(str::as_bytes), common::COMMAND_TIMEOUT)
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[track_caller]
pub fn ok(out: &Output) -> (String, String) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    (text(&out.stdout), text(&out.stderr))
}

#[track_caller]
pub fn assert_no_secret(haystack: &str, secrets: &[&str]) {
    for s in secrets {
        // The masked form keeps only the last 4 chars; look for a distinctive middle part.
        let core = &s[13..s.len() - 6];
        assert!(
            !haystack.contains(core),
            "secret fragment {core:?} leaked in:\n{haystack}"
        );
    }
}

/// Every file under `dir` whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                if let Ok(bytes) = std::fs::read(&p) {
                    if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                        hits.push(p);
                    }
                }
            }
        }
    }
    hits
}

/// A running `keyferry agent`; SIGTERM and reaped on drop.
pub struct AgentProc {
    pub child: std::process::Child,
    pub sock: PathBuf,
    pub log: PathBuf,
}

impl AgentProc {
    fn wait_ready(&self) {
        let up = common::wait_for("the agent to answer", common::STARTUP_TIMEOUT, || {
            keyferry::client::Client::connect(&self.sock)
                .map(drop)
                .map_err(|e| e.to_string())
        });
        if let Err(e) = up {
            panic!("{e} on {}:\n{}", self.sock.display(), self.log_text());
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn client(&self) -> keyferry::client::Client {
        keyferry::client::Client::connect(&self.sock).expect("connect to the agent")
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    /// The agent's status row for credential `name` once `done` holds for it; fails after
    /// 30 s naming `what` and showing the row and the agent's log.
    pub fn wait_status(
        &self,
        name: &str,
        what: &str,
        done: impl Fn(&keyferry::domain::CredentialStatus) -> bool,
    ) -> keyferry::domain::CredentialStatus {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let row = self
                .client()
                .status()
                .unwrap()
                .credentials
                .into_iter()
                .find(|c| c.name == name)
                .unwrap_or_else(|| panic!("{name}: no status row"));
            if done(&row) {
                return row;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name}: {what}: {row:?}\n{}",
                self.log_text()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Sends `signal` and waits (bounded) for the exit status.
    pub fn stop(&mut self, signal: i32) -> Option<std::process::ExitStatus> {
        common::signal_pid(self.child.id(), signal);
        let exited = common::wait_for(
            "the agent to exit",
            std::time::Duration::from_secs(10),
            || match self.child.try_wait() {
                Ok(Some(status)) => Ok(status),
                other => Err(format!("{other:?}")),
            },
        );
        exited.ok().or_else(|| {
            let _ = self.child.kill();
            self.child.wait().ok()
        })
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop(libc::SIGTERM);
        }
    }
}

/// The real `claude` CLI from npm: `$KEYFERRY_TEST_CLAUDE`, else what the test command
/// installs under `target/npm`.
pub fn claude_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KEYFERRY_TEST_CLAUDE") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/npm/node_modules/.bin/claude");
    assert!(
        p.exists(),
        "the real claude CLI is missing at {}: run `bash scripts/test.sh` (it installs it) or \
         `npm install --prefix target/npm @anthropic-ai/claude-code@2`",
        p.display()
    );
    p
}

/// One HTTP/1.1 request over a plain socket, the answer as text (read until the server
/// closes, bounded by 10 s). Credentials go in `headers`, never in any argv (curl's would
/// show in `ps`).
pub fn raw_http(addr: &str, method: &str, path: &str, headers: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// A CLI of the npm packages `scripts/test.sh` installs into `target/npm` (`codex` from
/// `@openai/codex@0.171`, `gemini` from `@google/gemini-cli@0.61`).
pub fn npm_bin(name: &str, package: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/npm/node_modules/.bin")
        .join(name);
    assert!(
        p.exists(),
        "the real {name} CLI is missing at {}: run `bash scripts/test.sh` (it installs it) or \
         `npm install --prefix target/npm {package}`",
        p.display()
    );
    p
}

/// A second real Unix user for permission tests (created once; needs root, as in CI).
pub fn ensure_user(user: &str) {
    common::require_root("it creates a second Unix user with useradd");
    let exists = || {
        common::run_with_timeout(Command::new("id").arg(user), None, common::COMMAND_TIMEOUT)
            .status
            .success()
    };
    if !exists() {
        let useradd = common::which("useradd").expect("useradd (Debian package passwd)");
        let out = common::run_with_timeout(
            Command::new(useradd).args(["--create-home", "--shell", "/bin/sh", user]),
            None,
            common::COMMAND_TIMEOUT,
        );
        // A concurrent test may have created it meanwhile.
        assert!(
            out.status.success() || exists(),
            "useradd: {}",
            text(&out.stderr)
        );
    }
    // '*' = no password but not locked, so sshd (UsePAM no) accepts key logins.
    let usermod = common::which("usermod").expect("usermod (Debian package passwd)");
    let out = common::run_with_timeout(
        Command::new(usermod).args(["-p", "*", user]),
        None,
        common::COMMAND_TIMEOUT,
    );
    assert!(out.status.success(), "usermod: {}", text(&out.stderr));
}

/// Samples every process's argv until `stop`, returning all lines seen.
pub fn sample_ps(
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut all = String::new();
        let mut rounds = 0;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) && rounds < 2000 {
            if let Ok(out) = Command::new("ps").args(["-eo", "args"]).output() {
                all.push_str(&String::from_utf8_lossy(&out.stdout));
            }
            rounds += 1;
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        all
    })
}
