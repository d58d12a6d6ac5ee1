//! `keyferry ssh`: what runs where. The remote session reaches the host's gateway through a
//! reverse forward (`ssh -R`): by default to a Unix socket of the session's own on the
//! remote (sshd makes it 0600, owned by the remote user, so no other user there can
//! connect, and no port can be taken there already); with `--remote-port`, to a loopback
//! port. It gets the variables and the grant's placeholder from a 0600 file written over a
//! first connection's stdin, sourced and deleted before the shell or command starts —
//! never in an argv on either side, where another user of the remote host could read it in
//! `ps`.

use crate::secret::Secret;

/// Where the env file lives on the remote (under its `$HOME`, named per session).
#[must_use]
pub fn env_file(session: &str) -> String {
    format!(".keyferry-ssh-{session}.env")
}

/// The first connection's remote command: stdin becomes a 0600 file (no argv holds it).
#[must_use]
pub fn writer_command(session: &str) -> String {
    format!(
        "umask 077 && cat > \"$HOME/{f}.tmp\" && mv -f \"$HOME/{f}.tmp\" \"$HOME/{f}\"",
        f = env_file(session)
    )
}

/// The env file's contents: shell assignments, exported.
#[must_use]
pub fn env_block(vars: &[(&str, &Secret)]) -> Secret {
    let mut text = String::new();
    for (k, v) in vars {
        text.push_str(&format!(
            "export {k}='{}'\n",
            v.expose().replace('\'', r"'\''")
        ));
    }
    Secret::new(text)
}

/// Where the tunnel ends on the remote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoteEnd {
    /// A Unix socket of the session's own (the default): nothing to collide with, 0600.
    Socket(String),
    /// `127.0.0.1:PORT` on the remote (`--remote-port`), for clients without socket support.
    Port(u16),
}

impl RemoteEnd {
    /// The session's own socket: under `/tmp` (sshd binds it as the remote user, mode 0600
    /// by its `StreamLocalBindMask`), named by the unguessable session id; sshd refuses to
    /// bind over anything already there.
    #[must_use]
    pub fn socket_for(session: &str) -> Self {
        Self::Socket(format!("/tmp/keyferry-ssh-{session}.sock"))
    }

    /// The `-R` spec forwarding this end to the host's gateway.
    #[must_use]
    pub fn forward_spec(&self, gateway: &str) -> String {
        match self {
            Self::Socket(path) => format!("{path}:{gateway}"),
            Self::Port(port) => format!("127.0.0.1:{port}:{gateway}"),
        }
    }

    /// What the remote's Claude Code is pointed at: `ANTHROPIC_BASE_URL`, and
    /// `ANTHROPIC_UNIX_SOCKET` for a socket (Claude Code honours it).
    #[must_use]
    pub fn variables(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::Socket(path) => vec![
                ("ANTHROPIC_BASE_URL", "http://localhost".to_owned()),
                ("ANTHROPIC_UNIX_SOCKET", path.clone()),
            ],
            Self::Port(port) => vec![("ANTHROPIC_BASE_URL", format!("http://127.0.0.1:{port}"))],
        }
    }
}

/// The session's remote command: source the file, delete it, then run `command` (or the
/// login shell); afterwards the session's socket (if any) is removed, as sshd leaves it.
#[must_use]
pub fn session_command(session: &str, command: &[String], end: &RemoteEnd) -> String {
    let f = env_file(session);
    let run = if command.is_empty() {
        "\"${SHELL:-/bin/sh}\" -l".to_owned()
    } else {
        shlex::try_join(command.iter().map(String::as_str)).unwrap_or_default()
    };
    match end {
        RemoteEnd::Socket(path) => {
            format!(". \"$HOME/{f}\"; rm -f \"$HOME/{f}\"; {run}; rc=$?; rm -f '{path}'; exit $rc")
        }
        RemoteEnd::Port(_) => format!(". \"$HOME/{f}\"; rm -f \"$HOME/{f}\"; exec {run}"),
    }
}

/// The fix for a line ssh prints when the reverse forward could not be set up.
#[must_use]
pub fn forward_failure_fix(line: &str) -> Option<String> {
    let l = line.to_ascii_lowercase();
    (l.contains("remote port forwarding failed") || l.contains("forwarding failed for listen port"))
        .then(|| {
            "the remote end would not listen for the tunnel: the port is taken there (pick another with --remote-port, \
             or leave it out to use a socket of the session's own), or its sshd forbids it (AllowStreamLocalForwarding \
             for the default socket, AllowTcpForwarding for --remote-port, must be yes or remote); the grant was revoked"
                .to_owned()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_secret_in_either_command() {
        let block = env_block(&[
            (
                "ANTHROPIC_BASE_URL",
                &Secret::new("http://127.0.0.1:7778".into()),
            ),
            (
                "ANTHROPIC_AUTH_TOKEN",
                &Secret::new("kfg_SECRETplaceholder".into()),
            ),
        ]);
        assert!(block
            .expose()
            .contains("export ANTHROPIC_AUTH_TOKEN='kfg_SECRETplaceholder'"));
        let w = writer_command("s1");
        let port = RemoteEnd::Port(7778);
        let s = session_command("s1", &["claude".into(), "-p".into(), "it's".into()], &port);
        assert!(!w.contains("kfg_") && !s.contains("kfg_"));
        assert!(w.contains("umask 077"));
        assert!(s.starts_with(". \"$HOME/.keyferry-ssh-s1.env\"; rm -f"));
        assert!(s.ends_with(r#"exec claude -p "it's""#), "{s}");
        assert!(session_command("s1", &[], &port).ends_with("-l"));
        let sock = RemoteEnd::socket_for("s1");
        let s = session_command("s1", &["claude".into()], &sock);
        assert!(
            s.ends_with("claude; rc=$?; rm -f '/tmp/keyferry-ssh-s1.sock'; exit $rc"),
            "{s}"
        );
    }

    #[test]
    fn forward_failures_name_the_sshd_settings() {
        let fix = forward_failure_fix("Error: remote port forwarding failed for listen port 7778")
            .unwrap();
        assert!(fix.contains("AllowTcpForwarding") && fix.contains("--remote-port"));
        assert!(forward_failure_fix(
            "Warning: remote port forwarding failed for listen path /tmp/keyferry-ssh-x.sock"
        )
        .is_some());
        assert!(forward_failure_fix("Welcome to Debian").is_none());
        assert_eq!(
            RemoteEnd::Port(7778).forward_spec("127.0.0.1:40001"),
            "127.0.0.1:7778:127.0.0.1:40001"
        );
        assert_eq!(
            RemoteEnd::socket_for("s").forward_spec("127.0.0.1:40001"),
            "/tmp/keyferry-ssh-s.sock:127.0.0.1:40001"
        );
    }
}
