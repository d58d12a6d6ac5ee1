//! `keyferry ssh`: what runs where. The remote session reaches the host's gateway through a
//! reverse forward (`ssh -R`), and gets `ANTHROPIC_BASE_URL` and the grant's placeholder from
//! a 0600 file written over a first connection's stdin, sourced and deleted before the shell
//! or command starts — never in an argv on either side, where another user of the remote
//! host could read it in `ps`.

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

/// The session's remote command: source the file, delete it, then run `command` (or the
/// login shell).
#[must_use]
pub fn session_command(session: &str, command: &[String]) -> String {
    let f = env_file(session);
    let run = if command.is_empty() {
        "exec \"${SHELL:-/bin/sh}\" -l".to_owned()
    } else {
        format!(
            "exec {}",
            shlex::try_join(command.iter().map(String::as_str)).unwrap_or_default()
        )
    };
    format!(". \"$HOME/{f}\"; rm -f \"$HOME/{f}\"; {run}")
}

/// The `-R` spec forwarding the remote's `127.0.0.1:remote_port` to the host's gateway.
#[must_use]
pub fn forward_spec(remote_port: u16, gateway: &str) -> String {
    format!("127.0.0.1:{remote_port}:{gateway}")
}

/// The fix for a line ssh prints when the reverse forward could not be set up.
#[must_use]
pub fn forward_failure_fix(line: &str) -> Option<String> {
    let l = line.to_ascii_lowercase();
    (l.contains("remote port forwarding failed") || l.contains("forwarding failed for listen port"))
        .then(|| {
            "the remote end would not listen for the tunnel: the port is taken there (pick another with --remote-port), \
             or its sshd forbids it (AllowTcpForwarding must be yes or remote; for a non-loopback bind, GatewayPorts); \
             the grant was revoked"
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
        let s = session_command("s1", &["claude".into(), "-p".into(), "it's".into()]);
        assert!(!w.contains("kfg_") && !s.contains("kfg_"));
        assert!(w.contains("umask 077"));
        assert!(s.starts_with(". \"$HOME/.keyferry-ssh-s1.env\"; rm -f"));
        assert!(s.ends_with(r#"exec claude -p "it's""#), "{s}");
        assert!(session_command("s1", &[]).ends_with("-l"));
    }

    #[test]
    fn forward_failures_name_the_sshd_settings() {
        let fix = forward_failure_fix("Error: remote port forwarding failed for listen port 7778")
            .unwrap();
        assert!(fix.contains("AllowTcpForwarding") && fix.contains("--remote-port"));
        assert!(forward_failure_fix("Welcome to Debian").is_none());
        assert_eq!(
            forward_spec(7778, "127.0.0.1:40001"),
            "127.0.0.1:7778:127.0.0.1:40001"
        );
    }
}
