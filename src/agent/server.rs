//! Serving: `run(listener, shutdown)` after mini-redis — a semaphore caps connections, a
//! broadcast tells every task to stop, and `run` returns only when all of them have — and
//! [`start`], the one way both `keyferry agent` and the tray bring an agent up.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::{broadcast, mpsc, oneshot, Semaphore};

use super::socket::{self, InstanceLock, SocketError};
use super::{conn, watch, Agent, Role, Scope};
use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Socket(#[from] SocketError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// Accepts and serves connections on every listener (each with its [`Scope`]) until
/// `shutdown` completes, then waits for every connection and background task to finish.
pub async fn run(
    agent: Arc<Agent>,
    listeners: Vec<(UnixListener, Scope)>,
    shutdown: impl Future<Output = ()>,
) {
    let (notify, _) = broadcast::channel::<()>(1);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    watch::spawn_all(&agent, &notify, &done_tx);
    // One cap for all listeners: a flood on the restricted socket cannot starve the host.
    let limit = Arc::new(Semaphore::new(agent.cfg.max_connections.max(1)));
    let accept_on = |listener: UnixListener, scope: Scope| {
        let (agent, limit, notify, done_tx) = (
            Arc::clone(&agent),
            Arc::clone(&limit),
            notify.clone(),
            done_tx.clone(),
        );
        let scope = Arc::new(scope);
        async move {
            loop {
                let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
                    return;
                };
                let stream = match listener.accept().await {
                    Ok((s, _)) => s,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::error!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let agent = Arc::clone(&agent);
                let shutdown = notify.subscribe();
                let done = done_tx.clone();
                let scope = Arc::clone(&scope);
                tokio::spawn(async move {
                    conn::handle(agent, stream, scope, shutdown).await;
                    drop(permit);
                    drop(done);
                });
            }
        }
    };
    let accepts = futures_util::future::join_all(
        listeners
            .into_iter()
            .map(|(l, scope)| Box::pin(accept_on(l, scope))),
    );
    tokio::select! {
        _ = accepts => {}
        () = shutdown => tracing::info!("shutting down"),
    }
    drop(notify);
    drop(done_tx);
    let _ = done_rx.recv().await;
}

/// Resolves when SIGTERM or SIGINT arrives.
async fn signals() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// A running agent: its socket prepared, locked and bound, and [`run`] spawned on the
/// runtime that called [`start`]. The CLI's `keyferry agent` and the tray both start here.
pub struct Running {
    pub agent: Arc<Agent>,
    socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
    _lock: InstanceLock,
}

/// Prepares the socket directory (0700, ours, no symlink), takes the instance lock, binds
/// the socket (0600) and serves it in the background. Every credential is resolved before
/// the first client is accepted: early clients wait in the listen backlog, not refused.
///
/// # Errors
/// An unsafe socket directory, another agent running, a bind failure.
pub async fn start(
    mut config: Config,
    socket_path: &Path,
    role: Role,
) -> Result<Running, AgentError> {
    // Before any token is read: the user's other processes (a sandbox sharing the pid
    // namespace, an `exec` child) must not read this process's memory.
    crate::harden::process();
    fit_connection_caps(&mut config);
    let dir = socket::prepare_dir(socket_path)?;
    let lock = InstanceLock::acquire(&dir, socket_path)?;
    let mut listeners = vec![(socket::bind(socket_path)?, Scope::Full)];
    if let Some(path) = config.agent.restricted_socket.as_deref() {
        // gpg-agent's extra socket: made to be forwarded (`ssh -R`), serving only `get`
        // and `status` of the listed credentials.
        let path = crate::paths::expand(path);
        socket::prepare_dir(&path)?;
        let allowed = config.agent.restricted_credentials.clone();
        listeners.push((socket::bind(&path)?, Scope::Restricted { allowed }));
    }
    let refresher = match super::refresh::build(&config) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "the refresher cannot start; logins are left to the host CLI");
            None
        }
    };
    let agent = Agent::new(config, role);
    if let Some(r) = refresher {
        agent.logins.set_refresher(r);
    }
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn({
        let agent = Arc::clone(&agent);
        async move {
            let warm = Arc::clone(&agent);
            let _ = tokio::task::spawn_blocking(move || warm.refresh_all()).await;
            // One stop signal for the socket server and the gateway.
            let (stop_all, _) = broadcast::channel::<()>(1);
            let mut gw_stop = stop_all.subscribe();
            let gateway = agent.serve_gateway(&dir, async move {
                let _ = gw_stop.recv().await;
            });
            let server = run(Arc::clone(&agent), listeners, async move {
                let _ = stopped.await;
                let _ = stop_all.send(());
            });
            let refresher = Arc::clone(&agent).run_refresher();
            tokio::select! {
                _ = async { tokio::join!(server, gateway) } => {}
                () = refresher => {}
            }
        }
    });
    Ok(Running {
        agent,
        socket: socket_path.to_path_buf(),
        stop: Some(stop),
        served: Some(served),
        _lock: lock,
    })
}

impl Running {
    #[must_use]
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Serves until `until` completes, then stops.
    pub async fn serve_until(mut self, until: impl Future<Output = ()>) {
        let served = self.served.take();
        tokio::select! {
            () = until => tracing::info!("shutting down"),
            _ = async { if let Some(s) = served { let _ = s.await; } } => {}
        }
        self.stop().await;
    }

    /// Tells every connection and task to end, waits (at most 2 s) and removes the socket.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), served).await;
        }
        // Metering since the last periodic flush is kept even when the gateway's task was
        // still closing connections at the deadline.
        self.agent.flush_grants();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Raises the soft open-file limit to the hard one and shrinks both connection caps to fit
/// it: a flood of connections must fail at the cap, never at `accept` or a source read
/// with "Too many open files".
fn fit_connection_caps(config: &mut Config) {
    let soft = match crate::sys::raise_nofile_limit() {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit; connection caps as configured");
            return;
        }
    };
    let (agent, gateway) = crate::gateway::fit_to_file_limit(
        soft,
        config.agent.max_connections,
        config.gateway.max_connections,
    );
    if (agent, gateway) != (config.agent.max_connections, config.gateway.max_connections) {
        tracing::info!(
            open_file_limit = soft,
            agent_connections = agent,
            gateway_connections = gateway,
            "connection caps lowered to fit the open-file limit"
        );
    }
    config.agent.max_connections = agent;
    config.gateway.max_connections = gateway;
}

/// `keyferry agent`: serves the socket until SIGTERM or SIGINT, then removes it.
///
/// # Errors
/// Unsafe socket directory, another agent running, bind failure.
pub fn serve(config: Config, socket_flag: Option<&Path>) -> Result<(), AgentError> {
    let path = socket::path(socket_flag, config.agent.socket.as_deref());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("keyferry-agent")
        .build()
        .map_err(AgentError::Runtime)?;
    let restricted = config.agent.restricted_socket.as_deref().map(|p| {
        let allowed = &config.agent.restricted_credentials;
        let serves = if allowed.is_empty() {
            "no credential: [agent] restricted_credentials is empty".to_owned()
        } else {
            format!("get and status of: {}", allowed.join(", "))
        };
        (crate::paths::expand(p), serves)
    });
    let result = runtime.block_on(async {
        let running = start(config, &path, Role::Headless).await?;
        // One line per socket it answers on; the gateway announces its own listeners
        // ("gateway listening") as each binds.
        eprintln!(
            "keyferry agent: serving {} (pid {})",
            path.display(),
            std::process::id()
        );
        if let Some((socket, serves)) = &restricted {
            eprintln!(
                "keyferry agent: serving the restricted socket {} ({serves})",
                socket.display()
            );
        }
        running.serve_until(signals()).await;
        Ok::<(), AgentError>(())
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}
