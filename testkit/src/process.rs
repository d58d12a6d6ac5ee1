//! Processes a test starts: bounded runs, process groups, children that die with the test,
//! and [`Proc`], a started daemon that is stopped (with its whole group) on drop.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Sends `signal` to the process group `pgid` (every child here leads its own group).
pub fn signal_group(pgid: u32, signal: libc::c_int) {
    if let Ok(pgid) = libc::pid_t::try_from(pgid) {
        if pgid > 1 {
            // SAFETY: kill(2) with a negative pid only signals that process group.
            unsafe { libc::kill(-pgid, signal) };
        }
    }
}

/// Whether any process (zombies included) is left in process group `pgid`.
#[must_use]
pub fn group_alive(pgid: u32) -> bool {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return false;
    };
    // SAFETY: signal 0 only checks for existence.
    let rc = unsafe { libc::kill(-pgid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Its own process group, and SIGTERM when the spawning thread dies (a killed test runner
/// leaks nothing). Keep the spawner (the test's thread) alive as long as the process.
pub fn isolate(cmd: &mut Command) {
    cmd.process_group(0);
    #[cfg(target_os = "linux")]
    die_with_parent(cmd);
}

#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    let parent = libc::pid_t::try_from(std::process::id()).expect("pid fits pid_t");
    // SAFETY: runs between fork and exec; prctl(2), getppid(2) and _exit(2) are
    // async-signal-safe and touch no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Runs `cmd` to completion in its own process group, stdin fed then closed, output
/// captured; past `timeout` the group is killed.
///
/// # Errors
/// It cannot start, or it ran past `timeout` (with what it printed).
pub fn run_bounded(
    cmd: &mut Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Output, String> {
    let program = format!("{:?}", cmd.get_program());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let writer = match (stdin, child.stdin.take()) {
        (Some(data), Some(mut pipe)) => {
            let data = data.to_vec();
            Some(thread::spawn(move || {
                let _ = pipe.write_all(&data);
            }))
        }
        _ => None,
    };
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                signal_group(child.id(), libc::SIGKILL);
                let _ = child.wait();
                return Err(format!(
                    "{program} did not finish within {timeout:?}; killed it.\nstdout: {}\nstderr: {}",
                    String::from_utf8_lossy(&out.join().unwrap_or_default()),
                    String::from_utf8_lossy(&err.join().unwrap_or_default())
                ));
            }
            Err(e) => return Err(format!("waiting for {program}: {e}")),
        }
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

/// [`run_bounded`] that panics (with what the command printed) instead of returning an error.
///
/// # Panics
/// The command cannot start or runs past `timeout`.
#[track_caller]
#[must_use]
pub fn run_with_timeout(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> Output {
    run_bounded(cmd, stdin, timeout).unwrap_or_else(|e| panic!("{e}"))
}

/// Sends `signal` to the single process `pid`.
pub fn signal_pid(pid: u32, signal: libc::c_int) {
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

/// A file's text, or a note saying why it cannot be read (for failure messages).
#[must_use]
pub fn read_lossy(path: &Path) -> String {
    std::fs::read(path).map_or_else(
        |e| format!("<cannot read {}: {e}>", path.display()),
        |b| String::from_utf8_lossy(&b).into_owned(),
    )
}

/// A process a test started: leads its own process group (see [`isolate`]); its output goes
/// to `log`. Dropping it stops it (see [`Proc::stop`]).
pub struct Proc {
    pub name: String,
    pub log: PathBuf,
    child: Child,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Starts `cmd` isolated, stdout and stderr to a new file `log`, `stdin` written then
    /// closed (or `/dev/null`).
    ///
    /// # Panics
    /// The log cannot be created or the program cannot start.
    #[must_use]
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf, stdin: Option<&[u8]>) -> Self {
        let file = File::create(&log)
            .unwrap_or_else(|e| panic!("create the log {} of {name}: {e}", log.display()));
        isolate(&mut cmd);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(file.try_clone().expect("clone a log handle"))
        .stderr(file);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({:?}): {e}", cmd.get_program()));
        if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // Dropping the pipe closes the child's stdin: daemons read a password to EOF.
            let _ = pipe.write_all(data);
        }
        Self::adopt(name, child, log)
    }

    /// Takes charge of a child started elsewhere (it must lead its own process group).
    #[must_use]
    pub fn adopt(name: &str, child: Child, log: PathBuf) -> Self {
        Self {
            name: name.to_owned(),
            log,
            child,
            status: None,
        }
    }

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

    /// Panics with its log if it has exited.
    ///
    /// # Panics
    /// It is no longer running.
    #[track_caller]
    pub fn check_alive(&mut self) {
        if let Some(status) = self.exited() {
            panic!(
                "{} exited early ({status}); its log:\n{}",
                self.name,
                self.log_text()
            );
        }
    }

    /// Waits (bounded) for it to exit on its own; `None` if it is still running.
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

    /// Sends `signal` to it alone (not its group).
    pub fn signal(&self, signal: libc::c_int) {
        if self.status.is_none() {
            signal_pid(self.pid(), signal);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_bounded_kills_an_overrunning_group() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo started; sleep 30"]);
        let err = run_bounded(&mut cmd, None, Duration::from_millis(300)).unwrap_err();
        assert!(
            err.contains("did not finish") && err.contains("started"),
            "{err}"
        );
    }

    #[test]
    fn run_bounded_feeds_stdin() {
        let out = run_with_timeout(
            &mut Command::new("cat"),
            Some(b"abc"),
            Duration::from_secs(10),
        );
        assert_eq!(out.stdout, b"abc");
    }

    #[test]
    fn a_dropped_proc_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let p = Proc::spawn("sleeper", cmd, dir.path().join("log"), None);
        let pgid = p.pid();
        assert!(group_alive(pgid));
        drop(p);
        crate::wait_until(Duration::from_secs(10), "the sleeper's group to go", || {
            !group_alive(pgid)
        });
    }
}
