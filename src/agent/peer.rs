//! Who is on the other end of a Unix socket: uid from the kernel, pid, executable path, and
//! whether it runs in a sandbox.
//!
//! A sandbox (bubblewrap, a container with the socket mounted, `unshare`) runs as the same
//! uid, so the uid check alone lets it in. On Linux a sandboxed process lives in other
//! namespaces than the agent: a peer whose mount, pid, user or cgroup namespace differs
//! from the agent's is a sandboxed peer. The peer is pinned by a pidfd (`SO_PEERPIDFD`) or,
//! on older kernels, by its start time, checked again after its namespaces were read, so a
//! pid reused by another process in the meantime cannot pass for it.
//!
//! A peer whose namespaces cannot be read at all (it made itself non-dumpable, or its
//! `/proc` entry is gone) counts as sandboxed of an unknown kind, never as the host: hiding
//! must not help. The plain `keyferry` CLI stays dumpable for this reason (only the agent
//! and the tray make themselves non-dumpable, see `crate::harden`).
//!
//! On macOS the kernel's sandbox (Seatbelt, App Sandbox) answers `sandbox_check`; macOS
//! has no namespaces, so a process that is merely chrooted or in a VM cannot be told apart.

use crate::domain::{Peer, SandboxKind};

/// The peer of an accepted connection (SO_PEERCRED on Linux, getpeereid + LOCAL_PEERPID on macOS).
///
/// # Errors
/// The kernel would not say.
pub fn of(stream: &tokio::net::UnixStream) -> std::io::Result<Peer> {
    let cred = stream.peer_cred()?;
    let pid = cred.pid();
    #[cfg(target_os = "linux")]
    let sandbox = {
        let pidfd = crate::sys::peer_pidfd(stream)?;
        pid.and_then(|p| linux::sandbox_of(p, pidfd.as_ref()))
    };
    #[cfg(target_os = "macos")]
    let sandbox = pid.and_then(|p| match crate::sys::macos_sandboxed(p) {
        Some(false) => None,
        Some(true) | None => Some(SandboxKind::Seatbelt),
    });
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    let sandbox: Option<SandboxKind> = None;
    Ok(Peer {
        uid: cred.uid(),
        pid,
        exe: pid.and_then(exe_of),
        sandbox,
    })
}

/// The peer uid of a connected std socket (the client checking it reached *its* agent).
///
/// # Errors
/// The kernel would not say.
pub fn uid_of(fd: &impl std::os::unix::io::AsRawFd) -> std::io::Result<u32> {
    crate::sys::peer_uid(fd)
}

/// The executable of a process, as text for the audit log.
#[must_use]
pub fn exe_of(pid: i32) -> Option<String> {
    crate::sys::exe_of(pid).map(|p| p.display().to_string())
}

/// The sandbox the current process runs in, if any, as the agent would see it (for
/// `keyferry doctor`).
#[must_use]
pub fn this_process_sandbox() -> Option<SandboxKind> {
    #[cfg(target_os = "linux")]
    {
        linux::self_sandbox()
    }
    #[cfg(target_os = "macos")]
    {
        let pid = i32::try_from(std::process::id()).ok()?;
        crate::sys::macos_sandboxed(pid)
            .filter(|s| *s)
            .map(|_| SandboxKind::Seatbelt)
    }
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    {
        None
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::os::fd::OwnedFd;
    use std::path::Path;

    use crate::domain::SandboxKind;

    /// The namespaces whose difference makes a sandbox. `net` is left out on purpose: a
    /// process in its own network namespace but the host's mounts (`ip netns exec`) reaches
    /// the same files as the host anyway.
    const NAMESPACES: [&str; 4] = ["mnt", "pid", "user", "cgroup"];

    fn namespaces(proc_dir: &Path) -> Option<Vec<std::path::PathBuf>> {
        NAMESPACES
            .iter()
            .map(|ns| std::fs::read_link(proc_dir.join("ns").join(ns)).ok())
            .collect()
    }

    /// Field 22 of `/proc/PID/stat`: start time in clock ticks since boot.
    pub(super) fn start_time(pid: i32) -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat_field(&stat, 22)
    }

    /// Field `n` (1-based) of a `/proc/PID/stat` line; the command name (field 2) may hold
    /// spaces and parentheses, so counting starts after its last `)`.
    fn stat_field(stat: &str, n: usize) -> Option<u64> {
        let rest = &stat[stat.rfind(')')? + 1..];
        rest.split_whitespace().nth(n.checked_sub(3)?)?.parse().ok()
    }

    /// `None` for a peer in the agent's own namespaces; otherwise what it is.
    pub(super) fn sandbox_of(pid: i32, pidfd: Option<&OwnedFd>) -> Option<SandboxKind> {
        let started = start_time(pid);
        let dir = Path::new("/proc").join(pid.to_string());
        let theirs = namespaces(&dir);
        // The same process still? A pidfd pins it; else its start time must not have moved.
        let same = match pidfd {
            Some(fd) => crate::sys::pidfd_alive(fd),
            None => started.is_some() && start_time(pid) == started,
        };
        let (Some(theirs), true) = (theirs, same) else {
            return Some(SandboxKind::Unknown);
        };
        let ours = namespaces(Path::new("/proc/self"))?;
        if theirs == ours {
            return None;
        }
        Some(kind_of(pid, &dir))
    }

    /// The current process, from inside (for `doctor`, which cannot see the agent's
    /// namespaces): a `bwrap` ancestor, or the markers Flatpak, toolbox and Podman leave.
    /// `/.dockerenv` is not trusted from inside: hosts built from a container image carry
    /// it too (this CI machine does). The agent tells every kind from outside.
    pub(super) fn self_sandbox() -> Option<SandboxKind> {
        let me = i32::try_from(std::process::id()).ok()?;
        if bwrap_ancestor(me) {
            return Some(SandboxKind::Bubblewrap);
        }
        markers(Path::new("/")).filter(|k| *k != SandboxKind::Docker)
    }

    /// What a sandboxed peer is, from the marker files runtimes leave in their root and,
    /// for bubblewrap, the peer's ancestors (visible in the agent's pid namespace).
    fn kind_of(pid: i32, dir: &Path) -> SandboxKind {
        // Markers count only in a root of its own: a host that was itself built from a
        // container image carries `/.dockerenv`, and `bwrap --dev-bind / /` shares ours.
        if !same_file(&dir.join("root"), Path::new("/")) {
            if let Some(kind) = markers(&dir.join("root")) {
                return kind;
            }
        }
        if bwrap_ancestor(pid) {
            return SandboxKind::Bubblewrap;
        }
        SandboxKind::Unknown
    }

    /// Flatpak writes `/.flatpak-info`; toolbox `/run/.toolboxenv` (distrobox, on podman,
    /// ships its `distrobox-*` helpers into the container); podman `/run/.containerenv`;
    /// Docker `/.dockerenv`.
    fn markers(root: &Path) -> Option<SandboxKind> {
        let has = |rel: &str| std::fs::symlink_metadata(root.join(rel)).is_ok();
        if has(".flatpak-info") {
            Some(SandboxKind::Flatpak)
        } else if has("run/.toolboxenv") || has("usr/bin/distrobox-host-exec") {
            Some(SandboxKind::Toolbox)
        } else if has("run/.containerenv") {
            Some(SandboxKind::Podman)
        } else if has(".dockerenv") {
            Some(SandboxKind::Docker)
        } else {
            None
        }
    }

    fn same_file(a: &Path, b: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
            _ => false,
        }
    }

    /// Whether `bwrap` is among the first 32 ancestors of `pid`.
    fn bwrap_ancestor(pid: i32) -> bool {
        let mut cur = pid;
        for _ in 0..32 {
            let Some(stat) = std::fs::read_to_string(format!("/proc/{cur}/stat")).ok() else {
                return false;
            };
            let comm = stat
                .find('(')
                .zip(stat.rfind(')'))
                .map(|(a, b)| &stat[a + 1..b]);
            if comm == Some("bwrap") {
                return true;
            }
            match stat_field(&stat, 4).and_then(|p| i32::try_from(p).ok()) {
                // pid 1 is checked too: with --unshare-pid bwrap is the sandbox's init.
                Some(parent) if parent >= 1 => cur = parent,
                _ => return false,
            }
        }
        false
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn stat_fields_survive_odd_command_names() {
            let stat = "42 (a) b (c)) S 7 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 9876 0 0";
            assert_eq!(stat_field(stat, 4), Some(7));
            assert_eq!(stat_field(stat, 22), Some(9876));
        }

        #[test]
        fn this_process_is_on_the_host() {
            let me = i32::try_from(std::process::id()).unwrap();
            assert_eq!(sandbox_of(me, None), None);
        }

        #[test]
        fn a_peer_whose_start_time_cannot_be_pinned_is_not_trusted() {
            // A pid that does not exist (or no longer): never the host.
            assert_eq!(sandbox_of(99_999_999, None), Some(SandboxKind::Unknown));
        }

        #[test]
        fn a_reaped_child_is_not_trusted_and_a_live_pidfd_is_alive() {
            let mut child = std::process::Command::new("true").spawn().unwrap();
            let pid = i32::try_from(child.id()).unwrap();
            child.wait().unwrap();
            assert_eq!(sandbox_of(pid, None), Some(SandboxKind::Unknown));
            let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
            let fd = crate::sys::peer_pidfd(&a)
                .unwrap()
                .expect("SO_PEERPIDFD (Linux 6.5+) on this kernel");
            assert!(crate::sys::pidfd_alive(&fd));
        }
    }
}
