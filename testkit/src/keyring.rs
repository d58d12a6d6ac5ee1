//! [`SecretServiceFixture`]: a private bus plus a real `gnome-keyring-daemon` serving
//! `org.freedesktop.secrets` from a caller-chosen `HOME`, unlocked with a password, or
//! deliberately left locked ([`SecretServiceFixture::start_locked`]). Also [`keyctl`].
//!
//! Processes are torn down on `Drop` (SIGTERM, SIGKILL after a grace period, reaped) and get
//! `PR_SET_PDEATHSIG`, tied to the *thread* that started the fixture: keep a fixture owned by
//! the test that created it; do not park one in a `static` shared between tests.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::bus::{parse_boolean, PrivateBus};

/// Codex's keyring service (`KEYRING_SERVICE` in codex-rs/login's `storage.rs`).
pub const CODEX_SERVICE: &str = "Codex Auth";
use crate::process::{isolate, read_lossy, run_with_timeout, Proc};
use crate::{require, wait_until, which, COMMAND_TIMEOUT, STARTUP_TIMEOUT};

/// Debian packages that provide everything the Secret Service fixture runs.
pub const DEBIAN_PACKAGES: &str = "dbus gnome-keyring libsecret-tools";

/// The well-known bus name of the Secret Service.
pub const SECRETS_NAME: &str = "org.freedesktop.secrets";

/// Binaries the Secret Service fixture runs, each with its Debian package.
pub const KEYRING_BINARIES: &[(&str, &str)] = &[
    ("dbus-daemon", "dbus"),
    ("dbus-send", "dbus"),
    ("gnome-keyring-daemon", "gnome-keyring"),
    ("secret-tool", "libsecret-tools"),
];

/// Panics, naming the Debian packages, when a binary the fixtures run is missing.
#[track_caller]
pub fn require_binaries() {
    require(KEYRING_BINARIES);
}

/// A private session bus with a real `gnome-keyring-daemon --components=secrets` on it.
///
/// The keyring files live under `HOME/.local/share/keyrings`; the daemon's control socket
/// under a private 0700 `XDG_RUNTIME_DIR`. Drop stops the keyring daemon, then the bus.
pub struct SecretServiceFixture {
    // Field order matters only for clarity; Drop stops the keyring before the bus.
    keyring: Option<Proc>,
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
        Self::start_on(PrivateBus::start(), home, password)
    }

    /// [`Self::start`] on a bus the caller started (with its own directory and launcher:
    /// the keyring daemon is launched through [`PrivateBus::launch`] and logs to
    /// `gnome-keyring-daemon.log` in the bus directory).
    ///
    /// # Panics
    /// As [`Self::start`].
    #[must_use]
    pub fn start_on(bus: PrivateBus, home: &Path, password: &str) -> Self {
        require_binaries();
        let runtime_dir = bus.dir().join("runtime");
        std::fs::create_dir_all(&runtime_dir).expect("create XDG_RUNTIME_DIR");
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
            read_lossy(&self.keyring_log)
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
        // Under load a freshly started daemon has been seen to drop off the bus right after
        // answering `ReadAlias` (NoReply on the next call). That is the daemon, not the code
        // under test: start it once more, saying so, rather than fail a later assertion.
        for attempt in 1..=2 {
            self.stop_keyring();
            self.start_keyring(password);
            match self.read_locked() {
                Ok(_) => return,
                Err(e) if attempt == 1 => eprintln!(
                    "gnome-keyring-daemon left the bus after starting ({e}); starting it again; log:\n{}",
                    read_lossy(&self.keyring_log)
                ),
                Err(e) => panic!(
                    "gnome-keyring-daemon left the bus twice after starting: {e}; log:\n{}",
                    read_lossy(&self.keyring_log)
                ),
            }
        }
    }

    /// Stops the keyring daemon and waits (bounded) until its bus name is released.
    pub fn stop_keyring(&mut self) {
        if let Some(mut keyring) = self.keyring.take() {
            keyring.stop(Duration::from_secs(3));
        }
        wait_until(
            STARTUP_TIMEOUT,
            &format!("{SECRETS_NAME} to be released after stopping gnome-keyring-daemon"),
            || !self.bus.has_owner(SECRETS_NAME),
        );
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
        let mut cmd = self.bus.launch("gnome-keyring-daemon");
        isolate(&mut cmd);
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
        self.keyring = Some(Proc::adopt(
            "gnome-keyring-daemon",
            child,
            self.keyring_log.clone(),
        ));
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let ready = crate::wait_for(
            &format!("{SECRETS_NAME} with a default collection on the private bus"),
            STARTUP_TIMEOUT,
            || {
                if let Some(keyring) = self.keyring.as_mut() {
                    keyring.check_alive();
                }
                if self.bus.has_owner(SECRETS_NAME) && self.default_collection().is_some() {
                    Ok(())
                } else {
                    Err("not yet".to_owned())
                }
            },
        );
        if let Err(e) = ready {
            panic!(
                "{e}; gnome-keyring-daemon log:\n{}",
                read_lossy(&self.keyring_log)
            );
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
        self.read_locked()
            .unwrap_or_else(|e| panic!("{e}; keyring log:\n{}", read_lossy(&self.keyring_log)))
    }

    fn read_locked(&self) -> Result<bool, String> {
        let path = self
            .default_collection()
            .ok_or("the Secret Service has no default collection")?;
        let out = self.bus.dbus_send(&[
            &format!("--dest={SECRETS_NAME}"),
            &path,
            "org.freedesktop.DBus.Properties.Get",
            "string:org.freedesktop.Secret.Collection",
            "string:Locked",
        ]);
        if !out.status.success() {
            return Err(format!(
                "reading Locked of {path} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(parse_boolean(
            &String::from_utf8_lossy(&out.stdout),
            "Locked",
        ))
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
        self.keyring.as_ref().map(Proc::pid)
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

    /// Stores `doc` as Codex's keyring login for `account` (`cli|…`), with the attributes and
    /// label the real `codex` 0.171 gives it (keyring crate 3.6.3's Secret Service backend, as
    /// `codex login` with `cli_auth_credentials_store = "keyring"` was seen to write it).
    ///
    /// # Panics
    /// `secret-tool store` fails.
    pub fn store_codex_login(&self, account: &str, doc: &str) {
        let label = format!("--label={account}@{CODEX_SERVICE}:default (keyring v3.6.3)");
        let mut args = vec!["store", label.as_str()];
        args.extend(codex_item(account));
        args.extend(["application", "rust-keyring"]);
        let out = self.secret_tool(&args, Some(doc));
        assert!(
            out.status.success(),
            "secret-tool store: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Codex's keyring login for `account`, looked up as its keyring crate does (service,
    /// username, target); `None` when there is none.
    #[must_use]
    pub fn codex_login(&self, account: &str) -> Option<String> {
        let mut args = vec!["lookup"];
        args.extend(codex_item(account));
        let out = self.secret_tool(&args, None);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The gnome-keyring-daemon log so far (stdout and stderr of every start).
    #[must_use]
    pub fn keyring_log(&self) -> String {
        read_lossy(&self.keyring_log)
    }
}

impl Drop for SecretServiceFixture {
    fn drop(&mut self) {
        if let Some(mut keyring) = self.keyring.take() {
            keyring.stop(Duration::from_secs(3));
        }
        // `self.bus` drops next and stops the dbus-daemon.
    }
}

/// The attributes Codex's keyring crate finds its item by: service, username, target.
fn codex_item(account: &str) -> [&str; 6] {
    [
        "service",
        CODEX_SERVICE,
        "username",
        account,
        "target",
        "default",
    ]
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
