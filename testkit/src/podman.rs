//! A real Podman of the test's own (Debian's `podman`): daemonless, with its own storage
//! root and run root, so it touches nothing of the machine's containers. The same image as
//! [`crate::docker`], imported from empty folders, the host's `/usr` mounted read-only.

use std::process::Command;

use crate::docker::{import_image, unmount_under};
use crate::process::run_bounded;
use crate::{require, require_root};

/// Flags every `podman run` here needs: Podman raises a container's open-file and process
/// limits to 1048576 by default, which this VM refuses even to root (`runc create failed:
/// … error setting rlimit type 7: operation not permitted`); these fit under the host's.
pub const RUN_LIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

/// A private Podman store; its containers are removed and its mounts undone on drop.
pub struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    /// # Panics
    /// Not root, `podman` missing, or the image cannot be imported.
    #[must_use]
    pub fn start() -> Self {
        require_root("Podman with a store of the test's own");
        require(&[("podman", "podman")]);
        let dir = tempfile::Builder::new()
            .prefix("kf-podman-")
            .tempdir()
            .expect("a temp dir for podman");
        let p = Self { dir };
        import_image(p.cmd(), p.dir.path());
        p
    }

    /// `podman` on this store, with a clean environment (as [`crate::docker::Docker::cmd`]).
    #[must_use]
    pub fn cmd(&self) -> Command {
        let d = self.dir.path();
        let mut c = Command::new("podman");
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("run"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file"]);
        c
    }

    /// The folder the store lives in (searched for leaks by tests).
    #[must_use]
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let mut rm = self.cmd();
        rm.args(["rm", "-fa"]);
        let _ = run_bounded(&mut rm, None, std::time::Duration::from_secs(30));
        unmount_under(self.dir.path());
    }
}
