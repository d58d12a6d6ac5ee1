//! Doctor checks of what the agent serves: its socket directory and socket (modes, owner),
//! the agent answering, the gateway's listen addresses, and every sink.

use std::net::TcpStream;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::{sinks, Check, Context};
use crate::agent::socket::{check_private_dir, SocketError};
use crate::client::{Client, ClientError};
use crate::gateway::ListenSpec;
use crate::paths;
use crate::protocol::Status;

const AGENT: &str = "agent";
const SOCKET: &str = "agent socket";
const GATEWAY: &str = "gateway";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A hung agent (stopped, deadlocked) must not hang the doctor that diagnoses it.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) fn checks(ctx: &Context<'_>) -> Vec<Check> {
    let mut out = socket_modes(&ctx.socket);
    let (check, status) = agent_within(&ctx.socket, ANSWER_TIMEOUT);
    out.push(check);
    match status.as_ref().filter(|st| !st.listeners.is_empty()) {
        // The agent knows each listener's state: a closed port (no grants) is not a fault.
        Some(st) => out.extend(st.listeners.iter().map(listener_check)),
        None => out.extend(gateway(ctx)),
    }
    out.extend(sinks::checks(ctx, status.as_ref()));
    out
}

fn dir_fix(e: &SocketError) -> String {
    match e {
        SocketError::UnsafeDir { dir, .. } => format!("chmod 700 {dir}"),
        SocketError::WrongOwner { dir, .. } => {
            format!("remove {dir} (it is not yours), or set another socket with --socket or KEYFERRY_SOCK")
        }
        SocketError::NotDir { dir } => {
            format!("remove {dir}, or set another socket with --socket or KEYFERRY_SOCK")
        }
        _ => "choose another socket path with --socket or KEYFERRY_SOCK".into(),
    }
}

/// The socket's directory private and ours, the socket a 0600 socket of ours.
fn socket_modes(socket: &Path) -> Vec<Check> {
    let dir = socket.parent().unwrap_or(Path::new("/"));
    let shown_dir = paths::display(dir);
    if std::fs::symlink_metadata(dir).is_err() {
        return vec![Check::skip(
            SOCKET,
            format!("{shown_dir} does not exist yet (the agent creates it 0700)"),
        )];
    }
    if let Err(e) = check_private_dir(dir) {
        return vec![Check::fail(SOCKET, e.to_string(), dir_fix(&e))];
    }
    let shown = paths::display(socket);
    let meta = match std::fs::symlink_metadata(socket) {
        Ok(m) => m,
        Err(_) => {
            return vec![Check::ok(
                SOCKET,
                format!("{shown_dir} is 0700 and yours; no socket yet"),
            )]
        }
    };
    let mode = meta.mode() & 0o777;
    let check = if !meta.file_type().is_socket() {
        Check::fail(
            SOCKET,
            format!("{shown} is not a socket"),
            format!("remove {shown}; the agent creates the socket when it starts"),
        )
    } else if meta.uid() != paths::current_uid() {
        Check::fail(
            SOCKET,
            format!("{shown} belongs to uid {}, not to you", meta.uid()),
            format!("stop whatever serves {shown} and remove it"),
        )
    } else if mode & 0o077 != 0 {
        Check::fail(
            SOCKET,
            format!("{shown} is open to other users (mode {mode:o})"),
            format!("chmod 600 {shown}"),
        )
    } else {
        Check::ok(SOCKET, format!("{shown_dir} 0700, {shown} 0600, yours"))
    };
    vec![check]
}

/// [`agent`] with a deadline: the client's own read timeout is minutes, fit for a `watch`.
fn agent_within(socket: &Path, timeout: Duration) -> (Check, Option<Status>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = socket.to_path_buf();
    // Left behind if it never returns; it holds nothing but the connection.
    std::thread::spawn(move || {
        let _ = tx.send(agent(&path));
    });
    rx.recv_timeout(timeout).unwrap_or_else(|_| {
        let shown = paths::display(socket);
        (
            Check::fail(
                AGENT,
                format!(
                    "something accepts connections on {shown} but gave no answer within {} s \
                     (a stopped or hung agent?)",
                    timeout.as_secs()
                ),
                format!(
                    "find it (`fuser {shown}`), stop or continue it (`kill -CONT PID`), or \
                     restart the agent"
                ),
            ),
            None,
        )
    })
}

/// Whether an agent answers on the socket, and its status when it does.
fn agent(socket: &Path) -> (Check, Option<Status>) {
    let shown = paths::display(socket);
    let start = "start it: `keyferry agent` (or `keyferry agent install` to run it at login)";
    let mut client = match Client::connect(socket) {
        Ok(c) => c,
        Err(ClientError::NotRunning { .. }) => {
            return (
                Check::fail(AGENT, format!("no agent answers on {shown}"), start),
                None,
            )
        }
        Err(e @ ClientError::ForeignAgent { .. }) => {
            return (
                Check::fail(AGENT, e.to_string(), format!("stop it and remove {shown}")),
                None,
            )
        }
        Err(e) => {
            return (
                Check::fail(
                    AGENT,
                    e.to_string(),
                    format!("restart the agent (a different version answers?); {start}"),
                ),
                None,
            )
        }
    };
    let hello = client.hello.clone();
    match client.status() {
        Ok(st) if st.locked => (
            Check::warn(
                AGENT,
                format!(
                    "{} (pid {}) is locked: it serves no token",
                    hello.agent, hello.pid
                ),
                "keyferry unlock",
            ),
            Some(st),
        ),
        Ok(st) => (
            Check::ok(
                AGENT,
                format!(
                    "{} (pid {}) answers on {shown}, up {} s",
                    hello.agent, hello.pid, st.uptime_secs
                ),
            ),
            Some(st),
        ),
        Err(e) => (
            Check::fail(AGENT, format!("the agent answered, then: {e}"), start),
            None,
        ),
    }
}

/// One listener as the agent reports it.
fn listener_check(l: &crate::domain::ListenerInfo) -> Check {
    use crate::domain::ListenerState as S;
    let name = format!("{GATEWAY} {}", l.listen);
    let shown = l.to_string().escape_default().to_string();
    match &l.state {
        S::Listening { .. } | S::Closed => Check::ok(name, shown),
        S::Waiting { .. } => Check::warn(
            name,
            shown,
            "bring the interface up (or free the port); the agent binds it within seconds,              or change [gateway] listen",
        ),
        S::Failed { .. } => Check::fail(name, shown, "fix [gateway] listen in config.toml"),
    }
}

/// Every `[gateway]` listen address accepts a connection; no `[gateway]` is fine.
fn gateway(ctx: &Context<'_>) -> Vec<Check> {
    let g = &ctx.config.gateway;
    if g.listen.is_empty() && !g.unix_socket {
        return vec![Check::skip(
            GATEWAY,
            "off ([gateway] listen = [] and unix_socket = false)",
        )];
    }
    let dir = ctx.socket.parent().unwrap_or(Path::new("/"));
    let specs = match g.specs(dir) {
        Ok(s) => s,
        Err(e) => {
            return vec![Check::fail(
                GATEWAY,
                e.to_string(),
                "fix [gateway] listen in config.toml",
            )]
        }
    };
    specs
        .iter()
        // Port 0 asks for any free port: nothing to probe from outside the agent.
        .filter(|spec| !matches!(spec, ListenSpec::Tcp(a) if a.port() == 0))
        .map(|spec| {
            let name = format!("{GATEWAY} {spec}");
            let reached = match spec {
                ListenSpec::Tcp(addr) => {
                    TcpStream::connect_timeout(addr, CONNECT_TIMEOUT).map(drop)
                }
                ListenSpec::Unix(p) => UnixStream::connect(p).map(drop),
            };
            match reached {
                Ok(()) => Check::ok(name, "listening"),
                Err(e) => Check::fail(
                    name,
                    format!("nothing listens on {spec} ({e})"),
                    "start the agent, which serves the gateway (`keyferry agent`); if it runs, \
                     its log names the bind error (address in use, no such interface) — or \
                     change [gateway] listen",
                ),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::doctor::State;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn socket_modes_name_the_chmod() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("kf");
        let sock = dir.join("agent.sock");
        assert_eq!(socket_modes(&sock)[0].state, State::Skip);
        std::fs::create_dir(&dir).unwrap();
        chmod(&dir, 0o755);
        let c = &socket_modes(&sock)[0];
        assert_eq!(c.state, State::Fail);
        assert_eq!(
            c.fix.as_deref(),
            Some(&*format!("chmod 700 {}", dir.display()))
        );
        chmod(&dir, 0o700);
        assert_eq!(socket_modes(&sock)[0].state, State::Ok);
        // A regular file where the socket should be.
        std::fs::write(&sock, "").unwrap();
        let c = &socket_modes(&sock)[0];
        assert_eq!(c.state, State::Fail);
        assert!(c.detail.contains("not a socket"), "{c:?}");
        std::fs::remove_file(&sock).unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        chmod(&sock, 0o666);
        let c = &socket_modes(&sock)[0];
        assert_eq!(c.state, State::Fail);
        assert!(c.fix.as_deref().unwrap().starts_with("chmod 600"), "{c:?}");
    }

    #[test]
    fn nobody_on_the_socket_is_no_agent() {
        let tmp = tempfile::tempdir().unwrap();
        let (c, status) = agent_within(&tmp.path().join("agent.sock"), Duration::from_secs(5));
        assert_eq!(c.state, State::Fail);
        assert!(c.detail.contains("no agent answers"), "{c:?}");
        assert!(status.is_none());
    }

    #[test]
    fn a_listener_that_never_answers_is_reported_at_the_deadline() {
        let tmp = tempfile::tempdir().unwrap();
        let sock = tmp.path().join("agent.sock");
        let _silent = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let (c, _) = agent_within(&sock, Duration::from_millis(300));
        assert_eq!(c.state, State::Fail);
        assert!(c.detail.contains("gave no answer"), "{c:?}");
    }
}
