//! [`PrivateBus`]: a private `dbus-daemon` with *no service activation*, so nothing on it is
//! started behind the test's back (the stock session config would auto-start gnome-keyring
//! against the real `$HOME`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{isolate, read_lossy, run_with_timeout, Proc};
use crate::{COMMAND_TIMEOUT, STARTUP_TIMEOUT};

/// Makes the base `Command` for a fixture daemon (`dbus-daemon`, `gnome-keyring-daemon`):
/// where a caller puts its own environment (a clean one, a marker to find its processes by).
/// The fixture then adds what the daemon needs and isolates it (own process group, death
/// signal).
pub type Launcher = Arc<dyn Fn(&str) -> Command + Send + Sync>;

/// The launcher that inherits the test's environment.
#[must_use]
pub fn plain_launcher() -> Launcher {
    Arc::new(|program| Command::new(program))
}

/// Binaries the bus fixtures run, each with its Debian package.
pub const BUS_BINARIES: &[(&str, &str)] = &[("dbus-daemon", "dbus"), ("dbus-send", "dbus")];

/// A private D-Bus session bus (`dbus-daemon --nofork`) on a socket in a 0700 directory. It
/// has no service directories, so no service is ever auto-activated on it: with nothing else
/// started, it is "a session bus with no Secret Service". Dropping it stops the daemon.
pub struct PrivateBus {
    // Field order = drop order: the daemon stops before its directory goes.
    daemon: Proc,
    address: String,
    dir: PathBuf,
    launcher: Launcher,
    _tmp: Option<TempDir>,
}

impl PrivateBus {
    /// Starts the daemon in a new private temporary directory.
    ///
    /// # Panics
    /// `dbus-daemon` is missing or does not come up within [`STARTUP_TIMEOUT`].
    #[must_use]
    pub fn start() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("kf-bus-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .expect("create a private bus directory");
        let mut bus = Self::start_in(tmp.path(), plain_launcher());
        bus._tmp = Some(tmp);
        bus
    }

    /// Starts the daemon with its socket, config and log (`dbus-daemon.log`) in `dir` (which
    /// exists, is private, and outlives the bus), launched through `launcher`.
    ///
    /// # Panics
    /// `dbus-daemon` is missing, the path is unusable for a socket, or the daemon does not
    /// print its address within [`STARTUP_TIMEOUT`].
    #[must_use]
    pub fn start_in(dir: &Path, launcher: Launcher) -> Self {
        crate::require(BUS_BINARIES);
        let socket = dir.join("bus");
        let socket_str = socket
            .to_str()
            .expect("the bus directory path is UTF-8")
            .to_owned();
        assert!(
            socket_str.len() < 100,
            "bus socket path {socket_str:?} is too long for a Unix socket; set TMPDIR to a shorter directory"
        );
        assert!(
            !socket_str.contains(['&', '<', '>', '"', '\'', ',', ';', '=']),
            "bus socket path {socket_str:?} has characters a D-Bus address or the XML config cannot hold"
        );
        let config = dir.join("bus.conf");
        std::fs::write(&config, bus_config(&socket_str)).expect("write the bus configuration");
        let log = dir.join("dbus-daemon.log");
        let log_file = std::fs::File::create(&log).expect("create the dbus-daemon log");
        let mut cmd = launcher("dbus-daemon");
        cmd.arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--nopidfile", "--print-address=1"])
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file);
        isolate(&mut cmd);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start dbus-daemon (Debian package dbus): {e}"));
        let stdout = child.stdout.take().expect("dbus-daemon stdout is piped");
        let mut daemon = Proc::adopt("dbus-daemon", child, log);
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let address = match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(line) if !line.trim().is_empty() => line.trim().to_owned(),
            other => {
                daemon.stop(Duration::from_secs(1));
                panic!(
                    "dbus-daemon did not print its address within {STARTUP_TIMEOUT:?} ({other:?}); its log:\n{}",
                    daemon.log_text()
                );
            }
        };
        Self {
            daemon,
            address,
            dir: dir.to_path_buf(),
            launcher,
            _tmp: None,
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
        self.daemon.pid()
    }

    /// The private directory the bus lives in.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A base command for another daemon on this bus, through the bus's launcher (the
    /// caller adds the bus address and whatever else it needs).
    #[must_use]
    pub fn launch(&self, program: &str) -> Command {
        (self.launcher)(program)
    }

    /// The dbus-daemon log so far.
    #[must_use]
    pub fn log(&self) -> String {
        read_lossy(&self.daemon.log)
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
        parse_boolean(&String::from_utf8_lossy(&out.stdout), "NameHasOwner")
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

/// `true`/`false` out of a `dbus-send --print-reply` boolean reply.
///
/// # Panics
/// The reply holds no boolean.
#[must_use]
pub fn parse_boolean(reply: &str, what: &str) -> bool {
    if reply.contains("boolean true") {
        true
    } else if reply.contains("boolean false") {
        false
    } else {
        panic!("unexpected {what} reply: {reply}")
    }
}

fn bus_config(socket: &str) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#
    )
}
