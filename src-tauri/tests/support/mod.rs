//! The world one end-to-end test runs in, built from real parts and torn down with it:
//!
//! - a scratch directory with a throwaway `HOME` and a 0700 `XDG_RUNTIME_DIR`;
//! - its own X server (`Xvfb -displayfd`, so the server itself picks a free display);
//! - its own session bus (`dbus-daemon` with no service activation, so nothing starts behind
//!   the test's back) with a real `gnome-keyring-daemon --components=secrets` on it;
//! - every process it starts in its own process group, with `PR_SET_PDEATHSIG`, and tagged
//!   with a per-test marker in its environment, so [`World::finish`] can assert with `ps`
//!   that nothing of this test survived (the app's WebKit children and `WebKitWebDriver`
//!   included).
//!
//! When a test panics, dropping its [`World`] prints every log of that test (the app's, the
//! driver's, the keyring's, the X server's) before tearing down.

#![allow(dead_code)]

pub mod dbus_services;
pub mod webdriver;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};
use testkit::{group_alive, isolate, signal_group};
pub use testkit::{run_bounded, which};

/// The app's start under Xvfb (a debug build, WebKit, two cores, possibly another test
/// running alongside).
pub const START_TIMEOUT: Duration = Duration::from_secs(90);
/// A change to show up in the window, the tray menu or the agent.
pub const UI_TIMEOUT: Duration = Duration::from_secs(30);
/// One CLI call.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// A daemon (X server, bus, keyring) to come up.
pub const DAEMON_TIMEOUT: Duration = Duration::from_secs(20);

/// Binaries every test runs, each with the Debian package that ships it.
pub const BASE_BINARIES: &[(&str, &str)] = &[
    ("Xvfb", "xvfb"),
    ("dbus-daemon", "dbus"),
    ("gnome-keyring-daemon", "gnome-keyring"),
    ("ps", "procps"),
];

/// The workspace root (the directory holding the workspace `Cargo.toml`).
#[must_use]
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("src-tauri has a parent")
        .to_path_buf()
}

/// `<workspace>/test-output`, created.
#[must_use]
pub fn output_dir() -> PathBuf {
    let dir = workspace().join("test-output");
    std::fs::create_dir_all(&dir).expect("create test-output/");
    dir
}

/// Panics, naming the Debian packages to install, when any of `binaries` is not on `PATH`.
pub fn require(binaries: &[(&str, &str)]) {
    let missing: Vec<&(&str, &str)> = binaries
        .iter()
        .filter(|(b, _)| which(b).is_none())
        .collect();
    if missing.is_empty() {
        return;
    }
    let list: Vec<String> = missing
        .iter()
        .map(|(b, p)| format!("{b} (Debian package {p})"))
        .collect();
    let mut packages: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
    packages.dedup();
    panic!(
        "the end-to-end tests need binaries that are not on PATH: {}.\n\
         Install them with: apt-get install -y --no-install-recommends {} \
         (see src-tauri/DEPS.md)",
        list.join(", "),
        packages.join(" ")
    );
}

/// The app binary under test: `KF_E2E_TRAY` if set (e.g. a release build, for measuring),
/// else the one Cargo built for this test.
#[must_use]
pub fn tray_binary() -> PathBuf {
    let path = std::env::var_os("KF_E2E_TRAY").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_keyferry-tray")),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "the keyferry-tray binary {} does not exist",
        path.display()
    );
    path
}

/// The `keyferry` CLI: `KF_E2E_CLI` if set, else built (once per test run) with the same
/// Cargo, target directory and profile as the app under test:
/// `cargo build -p keyferry --bin keyferry`. Building only that package never relinks the
/// app binary the tests run.
#[must_use]
pub fn cli_binary() -> PathBuf {
    static CLI: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    CLI.get_or_init(build_cli)
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn build_cli() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("KF_E2E_CLI") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("KF_E2E_CLI={} does not exist", p.display()))
        };
    }
    // target/<profile>/keyferry-tray, or target/<triple>/<profile>/keyferry-tray.
    let tray = PathBuf::from(env!("CARGO_BIN_EXE_keyferry-tray"));
    let profile_dir = tray.parent().ok_or("the app binary has no directory")?;
    let profile = profile_dir
        .file_name()
        .and_then(OsStr::to_str)
        .ok_or("the app binary's directory has no name")?;
    let mut target_dir = profile_dir.parent().ok_or("no target directory")?;
    let mut triple = None;
    if !target_dir.join("CACHEDIR.TAG").exists()
        && target_dir
            .parent()
            .is_some_and(|p| p.join("CACHEDIR.TAG").exists())
    {
        triple = target_dir.file_name().and_then(OsStr::to_str);
        target_dir = target_dir.parent().ok_or("no target directory")?;
    }
    let cargo = std::env::var_os("CARGO").map_or_else(
        || PathBuf::from(option_env!("CARGO").unwrap_or("cargo")),
        PathBuf::from,
    );
    let mut cmd = Command::new(&cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(workspace().join("Cargo.toml"))
        .args(["-p", "keyferry", "--bin", "keyferry"])
        .env("CARGO_TARGET_DIR", target_dir);
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    if let Some(t) = triple {
        cmd.args(["--target", t]);
    }
    let shown = format!("{cmd:?}");
    let out = run_bounded(&mut cmd, None, Duration::from_secs(30 * 60))
        .map_err(|e| format!("building the keyferry CLI ({shown}): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building the keyferry CLI failed ({shown}):\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let cli = profile_dir.join("keyferry");
    if cli.is_file() {
        Ok(cli)
    } else {
        Err(format!(
            "{shown} succeeded but {} does not exist",
            cli.display()
        ))
    }
}

/// A name no other test (or concurrently running test binary) uses.
fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}-{}-{}-{nanos:08x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `probe` every 50 ms until it returns `Some`, for at most `timeout`.
///
/// # Errors
/// `timeout` passed; the message names `what` and the last probe's complaint.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(v) => return Ok(v),
            Err(last) if Instant::now() >= deadline => {
                return Err(format!(
                    "timed out after {timeout:?} waiting for {what}; last seen: {last}"
                ))
            }
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// `Ok` when an agent answers on `socket`: the protocol's `hello` gets an `ok` reply.
///
/// # Errors
/// Nothing listens, or the reply is not `ok` (quoted).
pub fn agent_answers(socket: &Path) -> Result<(), String> {
    use std::os::unix::net::UnixStream;
    let mut s =
        UnixStream::connect(socket).map_err(|e| format!("connect {}: {e}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"{\"op\":\"hello\",\"version\":1,\"client\":\"kf-e2e\"}\n")
        .map_err(|e| format!("send hello: {e}"))?;
    let mut line = String::new();
    BufReader::new(&s)
        .read_line(&mut line)
        .map_err(|e| format!("read the hello reply: {e}"))?;
    if line.contains("\"ok\":true") {
        Ok(())
    } else {
        Err(format!("hello got {line:?}"))
    }
}

// ---- processes ---------------------------------------------------------------------------

fn signal_pid(pid: u32, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        if pid > 1 {
            // SAFETY: kill(2) only delivers a signal; no memory is shared.
            unsafe { libc::kill(pid, signal) };
        }
    }
}

/// Whether `pid` is a live (not zombie) process.
#[must_use]
pub fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// A process this test started: leads its own process group; its output goes to `log`.
/// Dropping it stops it (see [`Proc::stop`]).
pub struct Proc {
    pub name: String,
    pub log: PathBuf,
    child: Child,
    status: Option<ExitStatus>,
}

impl Proc {
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status, if it has exited (reaps it).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits (bounded) for it to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM to the leader and `grace` to exit (tauri-driver then stops WebKitWebDriver;
    /// the app quits cleanly and removes its socket); then the rest of its process group
    /// gets `grace` to follow before SIGTERM, then SIGKILL. Returns the leader's status, or
    /// `None` if it had to be killed.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        let pgid = self.pid();
        let mut clean = self.exited();
        if clean.is_none() {
            signal_pid(pgid, libc::SIGTERM);
            clean = self.wait_exit(grace);
        }
        if clean.is_none() {
            signal_group(pgid, libc::SIGTERM);
            if self.wait_exit(Duration::from_secs(2)).is_none() {
                signal_group(pgid, libc::SIGKILL);
                let _ = self.child.kill();
                self.status = self.child.wait().ok();
            }
        }
        // Whatever else ran in its group (WebKit's helpers) goes with it.
        let deadline = Instant::now() + grace;
        while group_alive(pgid) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        if group_alive(pgid) {
            signal_group(pgid, libc::SIGKILL);
        }
        clean
    }

    /// The log's text so far.
    #[must_use]
    pub fn log_text(&self) -> String {
        read_lossy(&self.log)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path).map_or_else(
        |e| format!("<cannot read {}: {e}>", path.display()),
        |b| String::from_utf8_lossy(&b).into_owned(),
    )
}

/// A background CLI call: its stdout and stderr kept apart.
pub struct Client {
    pub proc: Proc,
    pub stdout: PathBuf,
}

impl Client {
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Waits (bounded) for it to finish: (exit code, stdout, stderr).
    ///
    /// # Panics
    /// It did not finish within `timeout`.
    pub fn finish(&mut self, timeout: Duration) -> (Option<i32>, String, String) {
        let status = self.proc.wait_exit(timeout).unwrap_or_else(|| {
            panic!(
                "{} did not finish within {timeout:?}; stderr so far:\n{}",
                self.proc.name,
                self.proc.log_text()
            )
        });
        (
            status.code(),
            read_lossy(&self.stdout),
            self.proc.log_text(),
        )
    }
}

// ---- the world ---------------------------------------------------------------------------

/// One test's private desktop: scratch dir, HOME, X server, session bus, Secret Service.
pub struct World {
    pub name: String,
    pub dir: PathBuf,
    pub home: PathBuf,
    pub runtime: PathBuf,
    /// Prepended to `PATH` for everything the test starts (stand-in `claude`).
    pub bin: PathBuf,
    pub display: String,
    pub bus_address: String,
    /// `KF_E2E_MARK=<marker>` is in the environment of every process of this test.
    pub marker: String,
    /// Set once `ps` found nothing of this test left.
    finished: bool,
    daemons: Vec<Proc>,
    spawned: AtomicU64,
}

/// The password of the throwaway login keyring.
const KEYRING_PASSWORD: &str = "keyferry-e2e-login-keyring";

impl World {
    /// Starts Xvfb, a private bus and an unlocked gnome-keyring for test `name`.
    ///
    /// # Panics
    /// A binary is missing (naming its Debian package) or a daemon does not come up (with
    /// its log).
    #[must_use]
    pub fn start(name: &str) -> Self {
        require(BASE_BINARIES);
        let marker = unique(&format!("kf-e2e-{name}"));
        let base =
            std::env::var_os("KF_E2E_TMP").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
        let dir = base.join(&marker);
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .expect("chmod the scratch directory");
        let (home, runtime, bin) = (dir.join("home"), dir.join("run"), dir.join("bin"));
        for d in [&home, &runtime, &bin] {
            std::fs::create_dir_all(d).expect("create a scratch subdirectory");
        }
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700))
            .expect("chmod XDG_RUNTIME_DIR");
        let mut world = Self {
            name: name.to_owned(),
            dir,
            home,
            runtime,
            bin,
            display: String::new(),
            bus_address: String::new(),
            marker,
            finished: false,
            daemons: Vec::new(),
            spawned: AtomicU64::new(0),
        };
        world.start_xvfb();
        world.start_bus();
        world.start_keyring();
        world
    }

    /// A command with this world's environment (and nothing of the host's but `PATH`,
    /// `USER`, `LOGNAME`): own HOME, runtime dir, display, bus; the test's marker.
    #[must_use]
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        let host_path = std::env::var_os("PATH").unwrap_or_default();
        let mut path = std::ffi::OsString::from(&self.bin);
        path.push(":");
        path.push(host_path);
        cmd.env_clear()
            .env("PATH", path)
            .env("HOME", &self.home)
            .env("XDG_RUNTIME_DIR", &self.runtime)
            .env("LANG", "C.UTF-8")
            .env("RUST_BACKTRACE", "1")
            .env(
                "RUST_LOG",
                std::env::var("KF_E2E_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            // No accessibility bus (nothing can be activated on the private bus anyway).
            .env("NO_AT_BRIDGE", "1")
            .env("GDK_BACKEND", "x11")
            .env("KF_E2E_MARK", &self.marker)
            .current_dir(&self.dir);
        for var in ["USER", "LOGNAME"] {
            if let Some(v) = std::env::var_os(var) {
                cmd.env(var, v);
            }
        }
        if !self.display.is_empty() {
            cmd.env("DISPLAY", &self.display);
        }
        if !self.bus_address.is_empty() {
            cmd.env("DBUS_SESSION_BUS_ADDRESS", &self.bus_address);
        }
        cmd
    }

    /// Starts `cmd` isolated (own process group, death signal), output to `<dir>/<log>`.
    ///
    /// # Panics
    /// It cannot start.
    #[must_use]
    pub fn spawn(&self, name: &str, mut cmd: Command, log: &str) -> Proc {
        let log = self.dir.join(log);
        let file = File::create(&log).expect("create a log file");
        isolate(&mut cmd);
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone a log handle"))
            .stderr(file);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({:?}): {e}", cmd.get_program()));
        Proc {
            name: name.to_owned(),
            log,
            child,
            status: None,
        }
    }

    fn start_xvfb(&mut self) {
        // Xvfb picks a free display itself and writes its number to this pipe when ready.
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 fills two fresh descriptors, both close-on-exec.
        assert_eq!(
            unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) },
            0,
            "pipe2"
        );
        // SAFETY: both descriptors were just created and are owned here alone.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let wfd = write.as_raw_fd();
        let mut cmd = self.command("Xvfb");
        cmd.arg("-displayfd").arg(wfd.to_string()).args([
            "-screen",
            "0",
            "1280x960x24",
            "-nolisten",
            "tcp",
            "-noreset",
        ]);
        // SAFETY: fcntl(2) is async-signal-safe; it only lets the child keep the write end.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(wfd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut xvfb = self.spawn("Xvfb", cmd, "xvfb.log");
        drop(write);
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(File::from(read)).read_line(&mut line);
            let _ = tx.send(line);
        });
        match rx.recv_timeout(DAEMON_TIMEOUT) {
            Ok(line) if line.trim().parse::<u32>().is_ok() => {
                self.display = format!(":{}", line.trim());
            }
            other => {
                xvfb.stop(Duration::from_secs(2));
                panic!(
                    "Xvfb did not report a display within {DAEMON_TIMEOUT:?} ({other:?}); its log:\n{}",
                    xvfb.log_text()
                );
            }
        }
        self.daemons.push(xvfb);
    }

    fn start_bus(&mut self) {
        let socket = self.dir.join("bus");
        let socket_str = socket.to_str().expect("scratch path is UTF-8");
        assert!(
            socket_str.len() < 100
                && !socket_str.contains(['&', '<', '>', '"', '\'', ',', ';', '=']),
            "bus socket path {socket_str:?} is unusable; set KF_E2E_TMP to a short plain directory"
        );
        let config = self.dir.join("bus.conf");
        std::fs::write(
            &config,
            format!(
                "<busconfig><type>session</type><listen>unix:path={socket_str}</listen>\
                 <auth>EXTERNAL</auth><policy context=\"default\">\
                 <allow send_destination=\"*\" eavesdrop=\"true\"/><allow eavesdrop=\"true\"/>\
                 <allow own=\"*\"/></policy></busconfig>\n"
            ),
        )
        .expect("write the bus configuration");
        let mut cmd = self.command("dbus-daemon");
        cmd.arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--nopidfile"]);
        let bus = self.spawn("dbus-daemon", cmd, "dbus-daemon.log");
        self.bus_address = format!("unix:path={socket_str}");
        self.daemons.push(bus);
        let address = self.bus_address.clone();
        let result = wait_for("the private session bus", DAEMON_TIMEOUT, || {
            dbus_services::connect(&address).map(drop)
        });
        if let Err(e) = result {
            panic!(
                "{e}; dbus-daemon log:\n{}",
                read_lossy(&self.dir.join("dbus-daemon.log"))
            );
        }
    }

    fn start_keyring(&mut self) {
        let log = self.dir.join("gnome-keyring.log");
        let file = File::create(&log).expect("create the keyring log");
        let mut cmd = self.command("gnome-keyring-daemon");
        cmd.args(["--unlock", "--components=secrets", "--foreground"])
            .env_remove("DISPLAY")
            .stdin(Stdio::piped())
            .stdout(file.try_clone().expect("clone a log handle"))
            .stderr(file);
        isolate(&mut cmd);
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start gnome-keyring-daemon (Debian package gnome-keyring): {e}")
        });
        {
            // The daemon reads the password up to EOF: drop stdin to close it.
            let mut stdin = child.stdin.take().expect("stdin is piped");
            stdin
                .write_all(KEYRING_PASSWORD.as_bytes())
                .expect("write the keyring password");
        }
        self.daemons.push(Proc {
            name: "gnome-keyring-daemon".into(),
            log: log.clone(),
            child,
            status: None,
        });
        let conn = dbus_services::connect(&self.bus_address).expect("connect to the private bus");
        let ready = wait_for(
            "the Secret Service on the private bus",
            DAEMON_TIMEOUT,
            || dbus_services::secret_service_ready(&conn),
        );
        if let Err(e) = ready {
            panic!("{e}; gnome-keyring-daemon log:\n{}", read_lossy(&log));
        }
    }

    /// A new connection to this world's bus.
    ///
    /// # Panics
    /// The bus does not answer.
    #[must_use]
    pub fn bus(&self) -> dbus::blocking::Connection {
        dbus_services::connect(&self.bus_address).expect("connect to the private bus")
    }

    /// The agent socket the app serves on.
    #[must_use]
    pub fn socket(&self) -> PathBuf {
        self.runtime.join("keyferry/agent.sock")
    }

    /// Writes `~/.config/keyferry/config.toml`.
    pub fn write_config(&self, toml: &str) {
        let dir = self.home.join(".config/keyferry");
        std::fs::create_dir_all(&dir).expect("create the config directory");
        std::fs::write(dir.join("config.toml"), toml).expect("write config.toml");
    }

    /// Writes an executable script `name` into the directory prepended to `PATH`.
    pub fn write_bin(&self, name: &str, script: &str) -> PathBuf {
        let path = self.bin.join(name);
        std::fs::write(&path, script).expect("write a stand-in program");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("chmod a stand-in program");
        path
    }

    /// Runs the `keyferry` CLI to completion (bounded), `stdin` fed then closed.
    ///
    /// # Panics
    /// It does not finish within [`CLI_TIMEOUT`].
    #[must_use]
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = self.command(cli_binary());
        cmd.args(args);
        isolate(&mut cmd);
        run_bounded(&mut cmd, stdin.map(str::as_bytes), CLI_TIMEOUT)
            .unwrap_or_else(|e| panic!("keyferry {}: {e}", args.join(" ")))
    }

    /// Stores `token` for credential `name` in the keychain, as a user would:
    /// `keyferry setup NAME` with the token on stdin (no agent runs yet).
    ///
    /// # Panics
    /// The CLI fails.
    pub fn setup_token(&self, name: &str, token: &str) {
        let out = self.cli(&["--no-agent", "setup", name], Some(token));
        assert!(
            out.status.success(),
            "keyferry setup {name} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts `keyferry ARGS…` in the background (e.g. a `get` waiting on an approval).
    #[must_use]
    pub fn cli_spawn(&self, args: &[&str]) -> Client {
        let n = self.spawned.fetch_add(1, Ordering::Relaxed);
        self.spawn_client(args, n)
    }

    fn spawn_client(&self, args: &[&str], n: u64) -> Client {
        let stdout = self.dir.join(format!("client-{n}.out"));
        let stderr = self.dir.join(format!("client-{n}.err"));
        let mut cmd = self.command(cli_binary());
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("create a client stdout file"))
            .stderr(File::create(&stderr).expect("create a client stderr file"));
        isolate(&mut cmd);
        let child = cmd.spawn().expect("start the keyferry CLI");
        Client {
            proc: Proc {
                name: format!("keyferry {}", args.join(" ")),
                log: stderr,
                child,
                status: None,
            },
            stdout,
        }
    }

    /// Starts the app directly (no WebDriver), output to `app.log`.
    #[must_use]
    pub fn start_app(&self, args: &[&str]) -> Proc {
        let mut cmd = self.command(tray_binary());
        cmd.args(args);
        self.spawn("keyferry-tray", cmd, "app.log")
    }

    /// Processes (not zombies) still running with this test's marker: (pid, command line).
    #[must_use]
    pub fn leftovers(&self) -> Vec<(u32, String)> {
        let needle = format!("KF_E2E_MARK={}", self.marker);
        let out = Command::new("ps")
            .args(["-e", "-o", "pid=,stat=,args="])
            .output()
            .expect("run ps (Debian package procps)");
        let me = std::process::id();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                let pid: u32 = parts.next()?.parse().ok()?;
                let stat = parts.next()?;
                if pid == me || stat.starts_with('Z') {
                    return None;
                }
                let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
                env.split(|b| *b == 0)
                    .any(|kv| kv == needle.as_bytes())
                    .then(|| (pid, parts.collect::<Vec<_>>().join(" ")))
            })
            .collect()
    }

    /// Pid of this test's running app (however it was started).
    #[must_use]
    pub fn app_pid(&self) -> Option<u32> {
        let tray = tray_binary();
        let name = tray
            .file_name()
            .and_then(OsStr::to_str)
            .unwrap_or("keyferry-tray");
        self.leftovers()
            .into_iter()
            .find(|(pid, _)| {
                std::fs::read_link(format!("/proc/{pid}/exe"))
                    .is_ok_and(|exe| exe.file_name().and_then(OsStr::to_str) == Some(name))
            })
            .map(|(pid, _)| pid)
    }

    /// Stops the daemons, then asserts with `ps` that no process of this test remains (the
    /// app, its WebKit children, WebKitWebDriver, tauri-driver, clients, daemons).
    ///
    /// # Panics
    /// Something of this test is still running 10 s after teardown (it is killed then).
    pub fn finish(mut self) {
        self.stop_daemons();
        let left = wait_for(
            "every process of this test to exit",
            Duration::from_secs(10),
            || {
                let left = self.leftovers();
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{left:?}"))
                }
            },
        );
        if let Err(e) = left {
            for (pid, _) in self.leftovers() {
                signal_pid(pid, libc::SIGKILL);
            }
            panic!("processes left behind by test {}: {e}", self.name);
        }
        self.finished = true;
    }

    fn stop_daemons(&mut self) {
        // Keyring, then bus, then X server.
        while let Some(mut d) = self.daemons.pop() {
            d.stop(Duration::from_secs(5));
        }
    }

    /// Every log of this test (for failure reports): name → last 150 lines.
    #[must_use]
    pub fn logs(&self) -> BTreeMap<String, String> {
        let mut logs = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(".log") || name.ends_with(".err") || name.ends_with(".out") {
                    let text = read_lossy(&e.path());
                    let lines: Vec<&str> = text.lines().collect();
                    let tail = lines[lines.len().saturating_sub(150)..].join("\n");
                    logs.insert(name, tail);
                }
            }
        }
        logs
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "\n==== logs of the failed end-to-end test {} ({}) ====",
                self.name,
                self.dir.display()
            );
            for (name, text) in self.logs() {
                eprintln!("---- {name} ----\n{text}");
            }
            eprintln!("---- processes of this test at the failure ----");
            for (pid, args) in self.leftovers() {
                eprintln!("{pid} {args}");
            }
            eprintln!("==== end of logs ====");
        }
        self.stop_daemons();
        if !self.finished {
            for (pid, _) in self.leftovers() {
                signal_pid(pid, libc::SIGKILL);
            }
        }
        if std::env::var_os("KF_E2E_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
