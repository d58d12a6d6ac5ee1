//! Real-parts fixtures shared by the integration tests (`mod common;`).
//!
//! - [`PrivateBus`]: a private `dbus-daemon` with *no service activation*, so nothing on it
//!   is started behind the test's back (the stock session config would auto-start
//!   gnome-keyring against the real `$HOME`).
//! - [`SecretServiceFixture`]: a private bus plus a real `gnome-keyring-daemon` serving
//!   `org.freedesktop.secrets` from a caller-chosen `HOME`, unlocked with a password, or
//!   deliberately left locked ([`SecretServiceFixture::start_locked`]).
//!
//! Both tear their processes down on `Drop` (SIGTERM to the process group, SIGKILL after a
//! grace period, then reaped). Every daemon also gets `PR_SET_PDEATHSIG`, so a test runner
//! killed outright does not leave daemons behind either. The death signal is tied to the
//! *thread* that started the fixture: keep a fixture owned by the test that created it; do
//! not park one in a `static` shared between tests.
//!
//! Needs the Debian packages `dbus`, `gnome-keyring` and `libsecret-tools` (and
//! `keyutils` for [`keyctl`]).

#![allow(dead_code)]

// Re-exported for the test files that use them (each test file is its own crate).
use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};
#[allow(unused_imports)]
pub use testkit::{group_alive, which};
use testkit::{isolate, run_bounded, signal_group};

use tempfile::TempDir;

/// Debian packages that provide everything this module runs.
pub const DEBIAN_PACKAGES: &str = "dbus gnome-keyring libsecret-tools";

/// How long a daemon gets to come up before the fixture gives up.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a helper command (`secret-tool`, `dbus-send`, `keyctl`) may run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// The well-known bus name of the Secret Service.
pub const SECRETS_NAME: &str = "org.freedesktop.secrets";

const BINARIES: &[(&str, &str)] = &[
    ("dbus-daemon", "dbus"),
    ("dbus-send", "dbus"),
    ("gnome-keyring-daemon", "gnome-keyring"),
    ("secret-tool", "libsecret-tools"),
];

/// Panics, naming the Debian packages, when a binary the fixtures run is missing.
pub fn require_binaries() {
    let missing: Vec<String> = BINARIES
        .iter()
        .filter(|(bin, _)| which(bin).is_none())
        .map(|(bin, pkg)| format!("{bin} (Debian package {pkg})"))
        .collect();
    assert!(
        missing.is_empty(),
        "the Secret Service fixture needs binaries that are not on PATH: {}; \
         install them with `apt-get install {DEBIAN_PACKAGES}`",
        missing.join(", ")
    );
}

/// A name no other run (or concurrently running test binary) uses: prefix, pid, time, counter
/// and a per-process random value.
#[must_use]
pub fn unique_name(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(nanos);
    h.write_u64(n);
    format!(
        "{prefix}-{}-{n}-{:08x}",
        std::process::id(),
        h.finish() & 0xffff_ffff
    )
}

/// Runs `cmd` to completion with `stdin` fed (then closed) and stdout/stderr captured.
/// The command runs in its own process group; past `timeout` that group is killed and
/// the call panics with what the command printed so far.
pub fn run_with_timeout(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> Output {
    run_bounded(cmd, stdin, timeout).unwrap_or_else(|e| panic!("{e}"))
}

/// Spawn options every fixture daemon gets: its own process group, and SIGTERM when the
/// thread that spawned it dies (so a killed test runner does not leak daemons).
fn daemon_command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    isolate(&mut cmd);
    cmd
}

/// SIGTERM to the child's process group, SIGKILL after `grace`, then reap it.
fn stop_child(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        // Leader gone; still sweep anything left in its group.
        signal_group(child.id(), libc::SIGKILL);
        return Some(status);
    }
    signal_group(child.id(), libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            signal_group(child.id(), libc::SIGKILL);
            return Some(status);
        }
        thread::sleep(Duration::from_millis(10));
    }
    signal_group(child.id(), libc::SIGKILL);
    let _ = child.kill();
    child.wait().ok()
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()))
}

/// A private D-Bus session bus (`dbus-daemon --nofork`) on a socket in its own 0700
/// directory. It has no service directories, so no service is ever auto-activated on it:
/// with nothing else started, it is "a session bus with no Secret Service".
pub struct PrivateBus {
    child: Child,
    address: String,
    dir: TempDir,
}

impl PrivateBus {
    /// Starts the daemon and waits (bounded) for it to print its address.
    ///
    /// # Panics
    /// `dbus-daemon` is missing or does not come up within [`STARTUP_TIMEOUT`].
    #[must_use]
    pub fn start() -> Self {
        require_binaries();
        let dir = tempfile::Builder::new()
            .prefix("kf-bus-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .expect("create a private bus directory");
        let socket = dir.path().join("bus");
        let socket_str = socket
            .to_str()
            .expect("temporary directory path is UTF-8")
            .to_owned();
        assert!(
            socket_str.len() < 100,
            "bus socket path {socket_str:?} is too long for a Unix socket; set TMPDIR to a shorter directory"
        );
        assert!(
            !socket_str.contains(['&', '<', '>', '"', '\'', ',', ';', '=']),
            "bus socket path {socket_str:?} has characters a D-Bus address or the XML config cannot hold"
        );
        let config = dir.path().join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket_str}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#
            ),
        )
        .expect("write the bus configuration");
        let log_path = dir.path().join("dbus-daemon.log");
        let log = File::create(&log_path).expect("create the dbus-daemon log");
        let mut child = daemon_command("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--nopidfile", "--print-address=1"])
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start dbus-daemon (Debian package dbus): {e}"));
        let stdout = child.stdout.take().expect("dbus-daemon stdout is piped");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let address = match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(line) if !line.trim().is_empty() => line.trim().to_owned(),
            other => {
                stop_child(&mut child, Duration::from_secs(1));
                panic!(
                    "dbus-daemon did not print its address within {STARTUP_TIMEOUT:?} ({other:?}); its log:\n{}",
                    read_log(&log_path)
                );
            }
        };
        Self {
            child,
            address,
            dir,
        }
    }

    /// The bus address, e.g. `unix:path=/tmp/kf-bus-XXXX/bus,guid=…`.
    #[must_use]
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The dbus-daemon's pid.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A private 0700 directory that lives as long as the bus.
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Calls `NameHasOwner(name)` on the bus.
    ///
    /// # Panics
    /// `dbus-send` fails or prints something unexpected.
    #[must_use]
    pub fn has_owner(&self, name: &str) -> bool {
        let out = self.dbus_send(&[
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.NameHasOwner",
            &format!("string:{name}"),
        ]);
        assert!(
            out.status.success(),
            "dbus-send NameHasOwner failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("boolean true") {
            true
        } else if text.contains("boolean false") {
            false
        } else {
            panic!("unexpected NameHasOwner reply: {text}")
        }
    }

    /// Runs `dbus-send --bus=ADDR --print-reply ARGS…` (bounded by [`COMMAND_TIMEOUT`]).
    #[must_use]
    pub fn dbus_send(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("dbus-send");
        cmd.arg(format!("--bus={}", self.address))
            .arg("--print-reply")
            .args(args);
        run_with_timeout(&mut cmd, None, COMMAND_TIMEOUT)
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(3));
    }
}

/// A private session bus with a real `gnome-keyring-daemon --components=secrets` on it.
///
/// The keyring files live under `HOME/.local/share/keyrings`; the daemon's control socket
/// under a private 0700 `XDG_RUNTIME_DIR`. Drop stops the keyring daemon, then the bus.
pub struct SecretServiceFixture {
    // Field order matters only for clarity; Drop stops the keyring before the bus.
    keyring: Option<Child>,
    keyring_log: PathBuf,
    starts: u32,
    home: PathBuf,
    runtime_dir: PathBuf,
    bus: PrivateBus,
}

impl SecretServiceFixture {
    /// The password [`Self::start_locked`] creates the login keyring with.
    pub const RIGHT_PASSWORD: &'static str = "keyferry-fixture-right-password";
    /// The password [`Self::start_locked`] then fails to unlock it with.
    pub const WRONG_PASSWORD: &'static str = "keyferry-fixture-WRONG-password";
    /// `service` of the item [`Self::start_locked`] leaves inside the locked collection.
    pub const CANARY_SERVICE: &'static str = "keyferry-fixture-canary";
    /// `username` of that item.
    pub const CANARY_ACCOUNT: &'static str = "locked";
    /// Its secret.
    pub const CANARY_SECRET: &'static str = "canary-secret-value-3f9a";

    /// Starts a private bus and `gnome-keyring-daemon --unlock --components=secrets
    /// --foreground` on it with `password` on stdin. A fresh `home` gets a new login
    /// keyring protected by `password`; an existing one is unlocked with it (or stays
    /// locked if it does not match). Returns once `org.freedesktop.secrets` is owned and
    /// the `default` alias resolves.
    ///
    /// # Panics
    /// Binaries missing (names the Debian packages), or the daemon not up within
    /// [`STARTUP_TIMEOUT`] (with its log).
    #[must_use]
    pub fn start(home: &Path, password: &str) -> Self {
        require_binaries();
        let bus = PrivateBus::start();
        let runtime_dir = bus.dir().join("runtime");
        std::fs::create_dir(&runtime_dir).expect("create XDG_RUNTIME_DIR");
        set_mode_0700(&runtime_dir);
        std::fs::create_dir_all(home.join(".local/share")).expect("create XDG_DATA_HOME");
        let mut fixture = Self {
            keyring: None,
            keyring_log: bus.dir().join("gnome-keyring-daemon.log"),
            starts: 0,
            home: home.to_path_buf(),
            runtime_dir,
            bus,
        };
        fixture.start_keyring(password);
        fixture
    }

    /// A fixture whose login (default) collection is locked: creates the login keyring with
    /// [`Self::RIGHT_PASSWORD`], stores the canary item ([`Self::CANARY_SERVICE`] /
    /// [`Self::CANARY_ACCOUNT`]) in it, then restarts the daemon with
    /// [`Self::WRONG_PASSWORD`]. Verifies the collection reports `Locked` and that
    /// `secret-tool lookup` of the canary fails.
    ///
    /// # Panics
    /// As [`Self::start`]; or `home` already holds a keyring with another password; or the
    /// collection did not end up locked.
    #[must_use]
    pub fn start_locked(home: &Path) -> Self {
        let mut fixture = Self::start(home, Self::RIGHT_PASSWORD);
        assert!(
            !fixture.is_locked(),
            "{} already holds a login keyring with another password",
            home.display()
        );
        let stored = fixture.secret_tool(
            &[
                "store",
                "--label=keyferry fixture canary",
                "service",
                Self::CANARY_SERVICE,
                "username",
                Self::CANARY_ACCOUNT,
            ],
            Some(Self::CANARY_SECRET),
        );
        assert!(
            stored.status.success(),
            "secret-tool store of the canary failed: {}",
            String::from_utf8_lossy(&stored.stderr)
        );
        fixture.restart_keyring(Self::WRONG_PASSWORD);
        fixture.assert_locked();
        fixture
    }

    /// Panics unless the default collection is locked and the canary (if present) cannot
    /// be read with `secret-tool lookup`.
    pub fn assert_locked(&self) {
        assert!(
            self.is_locked(),
            "the default collection is not locked; keyring log:\n{}",
            read_log(&self.keyring_log)
        );
        let lookup = self.secret_tool(
            &[
                "lookup",
                "service",
                Self::CANARY_SERVICE,
                "username",
                Self::CANARY_ACCOUNT,
            ],
            None,
        );
        assert!(
            !String::from_utf8_lossy(&lookup.stdout).contains(Self::CANARY_SECRET),
            "secret-tool read the canary although the collection reports Locked"
        );
    }

    /// Stops the keyring daemon (the bus stays) and starts a new one on the same bus and
    /// `HOME` with `password` — the right one unlocks the login keyring, a wrong one
    /// leaves it locked.
    pub fn restart_keyring(&mut self, password: &str) {
        self.stop_keyring();
        self.start_keyring(password);
    }

    /// Stops the keyring daemon and waits (bounded) until its bus name is released.
    pub fn stop_keyring(&mut self) {
        if let Some(mut child) = self.keyring.take() {
            stop_child(&mut child, Duration::from_secs(3));
        }
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while self.bus.has_owner(SECRETS_NAME) {
            assert!(
                Instant::now() < deadline,
                "{SECRETS_NAME} is still owned {STARTUP_TIMEOUT:?} after stopping gnome-keyring-daemon"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn start_keyring(&mut self, password: &str) {
        assert!(
            self.keyring.is_none(),
            "gnome-keyring-daemon already running"
        );
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.keyring_log)
            .expect("open the gnome-keyring-daemon log");
        let _ = writeln!(&log, "--- start #{} ---", self.starts);
        let mut cmd = daemon_command("gnome-keyring-daemon");
        cmd.args(["--unlock", "--components=secrets", "--foreground"])
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .env_remove("GNOME_KEYRING_CONTROL")
            .envs(self.env())
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log);
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start gnome-keyring-daemon (Debian package gnome-keyring): {e}")
        });
        {
            let mut stdin = child.stdin.take().expect("keyring stdin is piped");
            stdin
                .write_all(password.as_bytes())
                .expect("write the password to gnome-keyring-daemon");
            // Dropping stdin closes it: the daemon reads the password up to EOF.
        }
        self.keyring = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self
                .keyring
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.keyring = None;
                panic!(
                    "gnome-keyring-daemon exited during startup ({status}); its log:\n{}",
                    read_log(&self.keyring_log)
                );
            }
            if self.bus.has_owner(SECRETS_NAME) && self.default_collection().is_some() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{SECRETS_NAME} did not appear on the private bus within {STARTUP_TIMEOUT:?}; \
                     gnome-keyring-daemon log:\n{}",
                    read_log(&self.keyring_log)
                );
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// The object path behind the `default` alias, if it resolves.
    #[must_use]
    pub fn default_collection(&self) -> Option<String> {
        let out = self.bus.dbus_send(&[
            &format!("--dest={SECRETS_NAME}"),
            "/org/freedesktop/secrets",
            "org.freedesktop.Secret.Service.ReadAlias",
            "string:default",
        ]);
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let path = text.split('"').nth(1)?.to_owned();
        (path != "/").then_some(path)
    }

    /// Whether the default collection's `Locked` property is true.
    ///
    /// # Panics
    /// No default collection, or the property cannot be read.
    #[must_use]
    pub fn is_locked(&self) -> bool {
        let path = self
            .default_collection()
            .expect("the Secret Service has no default collection");
        let out = self.bus.dbus_send(&[
            &format!("--dest={SECRETS_NAME}"),
            &path,
            "org.freedesktop.DBus.Properties.Get",
            "string:org.freedesktop.Secret.Collection",
            "string:Locked",
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "reading Locked of {path} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if text.contains("boolean true") {
            true
        } else if text.contains("boolean false") {
            false
        } else {
            panic!("unexpected Locked reply: {text}")
        }
    }

    /// The bus address (`DBUS_SESSION_BUS_ADDRESS` for clients).
    #[must_use]
    pub fn address(&self) -> &str {
        self.bus.address()
    }

    /// The private bus.
    #[must_use]
    pub fn bus(&self) -> &PrivateBus {
        &self.bus
    }

    #[must_use]
    pub fn home(&self) -> &Path {
        &self.home
    }

    #[must_use]
    pub fn runtime_dir(&self) -> &Path {
        &self.runtime_dir
    }

    /// The running keyring daemon's pid.
    #[must_use]
    pub fn keyring_pid(&self) -> Option<u32> {
        self.keyring.as_ref().map(Child::id)
    }

    /// What a child process needs to use this Secret Service (and nothing of the real
    /// user's): `DBUS_SESSION_BUS_ADDRESS`, `HOME`, `XDG_DATA_HOME`, `XDG_CONFIG_HOME`,
    /// `XDG_CACHE_HOME`, `XDG_RUNTIME_DIR`.
    #[must_use]
    pub fn env(&self) -> Vec<(String, String)> {
        let p = |p: &Path| p.to_string_lossy().into_owned();
        vec![
            ("DBUS_SESSION_BUS_ADDRESS".into(), self.address().to_owned()),
            ("HOME".into(), p(&self.home)),
            ("XDG_DATA_HOME".into(), p(&self.home.join(".local/share"))),
            ("XDG_CONFIG_HOME".into(), p(&self.home.join(".config"))),
            ("XDG_CACHE_HOME".into(), p(&self.home.join(".cache"))),
            ("XDG_RUNTIME_DIR".into(), p(&self.runtime_dir)),
        ]
    }

    /// A `Command` for `program` with [`Self::env`] applied.
    #[must_use]
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.envs(self.env());
        cmd
    }

    /// Runs the real `secret-tool ARGS…` against this Secret Service, `stdin` fed then
    /// closed (bounded by [`COMMAND_TIMEOUT`]).
    #[must_use]
    pub fn secret_tool(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.secret_tool_bytes(args, stdin.map(str::as_bytes))
    }

    /// [`Self::secret_tool`] with arbitrary bytes on stdin.
    #[must_use]
    pub fn secret_tool_bytes(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        run_with_timeout(
            self.command("secret-tool").args(args),
            stdin,
            COMMAND_TIMEOUT,
        )
    }

    /// How many items `secret-tool search --all ATTR VALUE…` lists (locked ones included).
    #[must_use]
    pub fn count_items(&self, attrs: &[&str]) -> usize {
        let mut args = vec!["search", "--all"];
        args.extend_from_slice(attrs);
        let out = self.secret_tool(&args, None);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with('['))
            .count()
    }

    /// The gnome-keyring-daemon log so far (stdout and stderr of every start).
    #[must_use]
    pub fn keyring_log(&self) -> String {
        read_log(&self.keyring_log)
    }
}

impl Drop for SecretServiceFixture {
    fn drop(&mut self) {
        if let Some(mut child) = self.keyring.take() {
            stop_child(&mut child, Duration::from_secs(3));
        }
        // `self.bus` drops next and stops the dbus-daemon.
    }
}

fn set_mode_0700(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).expect("chmod 0700");
}

/// Runs `keyctl ARGS…` (Debian package keyutils), bounded by [`COMMAND_TIMEOUT`].
///
/// # Panics
/// `keyctl` is not installed.
#[must_use]
pub fn keyctl(args: &[&str]) -> Output {
    assert!(
        which("keyctl").is_some(),
        "keyctl is not on PATH; install it with `apt-get install keyutils`"
    );
    run_with_timeout(Command::new("keyctl").args(args), None, COMMAND_TIMEOUT)
}
