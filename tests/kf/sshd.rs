//! OpenSSH's sshd on 127.0.0.1 for tests that reach "a remote machine" as a second Unix
//! user (needs root, as CI runs): a throwaway host key and client key, key logins only.

use std::process::Command;
use std::time::Duration;

use crate::common::{self, Proc};
use crate::kf::text;

/// OpenSSH's sshd on 127.0.0.1, for the second test user, with a throwaway host key.
pub struct Sshd {
    _daemon: Proc,
    pub port: u16,
    pub key: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Sshd {
    pub fn start(user: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let keygen = |path: &std::path::Path| {
            let out = common::run_with_timeout(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                    .arg(path),
                None,
                common::COMMAND_TIMEOUT,
            );
            assert!(out.status.success(), "{}", text(&out.stderr));
        };
        keygen(&d.join("host_key"));
        keygen(&d.join("client_key"));
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {hk}\nAuthorizedKeysFile {ak}\nPidFile none\nUsePAM no\n\
             StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nAllowUsers {user}\n",
            hk = d.join("host_key").display(),
            ak = d.join("authorized_keys").display()
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        let sshd = common::which("sshd")
            .or_else(|| Some("/usr/sbin/sshd".into()))
            .unwrap();
        let mut cmd = Command::new(sshd);
        cmd.args(["-D", "-e", "-f"]).arg(d.join("sshd_config"));
        let mut daemon = Proc::spawn("sshd", cmd, d.join("sshd.log"), None);
        let up = common::wait_for("sshd to listen", Duration::from_secs(10), || {
            daemon.check_alive();
            std::net::TcpStream::connect(("127.0.0.1", port))
                .map(drop)
                .map_err(|e| e.to_string())
        });
        if let Err(e) = up {
            panic!("{e}; sshd log:\n{}", daemon.log_text());
        }
        Self {
            _daemon: daemon,
            port,
            key: d.join("client_key"),
            _dir: dir,
        }
    }

    /// The transport that runs `sh` as `user` there, for `--via`.
    /// ssh options and destination for `user` on this sshd (no host-key prompts).
    pub fn args(&self, user: &str) -> Vec<String> {
        [
            "-i",
            self.key.to_str().unwrap_or_default(),
            "-p",
            &self.port.to_string(),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            &format!("{user}@127.0.0.1"),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }

    pub fn via(&self, user: &str) -> String {
        format!(
            "ssh -i {} -p {} -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR {user}@127.0.0.1 sh",
            self.key.display(),
            self.port
        )
    }
}
