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
//!
//! The bus, the keyring, the processes, the waits and the notification server are the
//! workspace's shared fixtures (`testkit`); this module adds the desktop around them:
//! [`world`] (X server, scratch dirs, leftovers check), [`world_cli`] (the CLI and the app in
//! that world), [`binaries`] (which binaries run), [`dbus_services`] (tray watcher and menu),
//! [`webdriver`].

#![allow(dead_code)]

pub mod binaries;
pub mod dbus_services;
pub mod webdriver;
pub mod world;
pub mod world_cli;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

// Each test binary uses a different subset of these.
#[allow(unused_imports)]
pub use binaries::{cli_binary, output_dir, tray_binary, workspace};
#[allow(unused_imports)]
pub use testkit::{pid_alive, read_lossy, require, run_bounded, wait_for, which, Proc};
pub use world::World;

/// The app's start under Xvfb (a debug build, WebKit, two cores, possibly another test
/// running alongside).
pub const START_TIMEOUT: Duration = Duration::from_secs(90);
/// A change to show up in the window, the tray menu or the agent.
pub const UI_TIMEOUT: Duration = Duration::from_secs(30);
/// One CLI call.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// A daemon (X server, bus, keyring) to come up.
pub const DAEMON_TIMEOUT: Duration = Duration::from_secs(20);

/// Binaries every test runs, each with the Debian package that ships it (see
/// `src-tauri/DEPS.md`).
pub const BASE_BINARIES: &[(&str, &str)] = &[
    ("Xvfb", "xvfb"),
    ("dbus-daemon", "dbus"),
    ("gnome-keyring-daemon", "gnome-keyring"),
    ("ps", "procps"),
];

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
