//! One test's private desktop: a scratch directory with a throwaway `HOME` and a 0700
//! `XDG_RUNTIME_DIR`, its own X server, and testkit's private bus with gnome-keyring on it;
//! every process tagged with the test's marker so [`World::finish`] can assert with `ps` that
//! nothing of the test survived.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::AtomicU64;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use testkit::{
    signal_pid, unique_name, wait_for, Launcher, PrivateBus, Proc, SecretServiceFixture,
};

use super::{dbus_services, read_lossy, require, BASE_BINARIES, DAEMON_TIMEOUT};

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
    /// Its private bus with gnome-keyring on it (testkit's fixture; stopped before the X server).
    secrets: Option<SecretServiceFixture>,
    xvfb: Option<Proc>,
    pub(super) spawned: AtomicU64,
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
        let marker = unique_name(&format!("kf-e2e-{name}"));
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
            secrets: None,
            xvfb: None,
            spawned: AtomicU64::new(0),
        };
        world.start_xvfb();
        world.start_secret_service();
        world
    }

    /// A command with this world's environment (and nothing of the host's but `PATH`,
    /// `USER`, `LOGNAME`): own HOME, runtime dir, display, bus; the test's marker.
    #[must_use]
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        self.env().command(program)
    }

    /// What [`World::command`] needs, detached from the world (for the daemons' launcher).
    fn env(&self) -> WorldEnv {
        WorldEnv {
            bin: self.bin.clone(),
            home: self.home.clone(),
            runtime: self.runtime.clone(),
            dir: self.dir.clone(),
            marker: self.marker.clone(),
            display: self.display.clone(),
            bus_address: self.bus_address.clone(),
        }
    }

    /// Starts `cmd` isolated (own process group, death signal), output to `<dir>/<log>`.
    ///
    /// # Panics
    /// It cannot start.
    #[must_use]
    pub fn spawn(&self, name: &str, cmd: Command, log: &str) -> Proc {
        Proc::spawn(name, cmd, self.dir.join(log), None)
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
        self.xvfb = Some(xvfb);
    }

    /// A private bus (no service activation) with an unlocked gnome-keyring on it: testkit's
    /// fixture, its daemons launched with this world's environment and marker, their sockets
    /// and logs in the scratch directory.
    fn start_secret_service(&mut self) {
        let env = self.env();
        let launcher: Launcher = Arc::new(move |program| env.command(program));
        let bus = PrivateBus::start_in(&self.dir, launcher);
        let secrets = SecretServiceFixture::start_on(bus, &self.home, KEYRING_PASSWORD);
        self.bus_address = secrets.address().to_owned();
        self.secrets = Some(secrets);
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
        drop(self.secrets.take());
        if let Some(mut xvfb) = self.xvfb.take() {
            xvfb.stop(Duration::from_secs(5));
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

/// A world's environment, detached from it.
#[derive(Clone)]
struct WorldEnv {
    bin: PathBuf,
    home: PathBuf,
    runtime: PathBuf,
    dir: PathBuf,
    marker: String,
    display: String,
    bus_address: String,
}

impl WorldEnv {
    fn command(&self, program: impl AsRef<OsStr>) -> Command {
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
}
