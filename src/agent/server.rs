//! Serving: `run(listener, shutdown)` after mini-redis — a semaphore caps connections, a
//! broadcast tells every task to stop, and `run` returns only when all of them have.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::{broadcast, mpsc, Semaphore};

use super::socket::{self, InstanceLock, SocketError};
use super::{conn, tasks, Agent};
use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Socket(#[from] SocketError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// Accepts and serves connections until `shutdown` completes, then waits for every
/// connection and background task to finish.
pub async fn run(agent: Arc<Agent>, listener: UnixListener, shutdown: impl Future<Output = ()>) {
    let (notify, _) = broadcast::channel::<()>(1);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    tasks::spawn_all(&agent, &notify, &done_tx);
    let limit = Arc::new(Semaphore::new(agent.cfg.max_connections.max(1)));
    let accept = async {
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
            tokio::spawn(async move {
                conn::handle(agent, stream, shutdown).await;
                drop(permit);
                drop(done);
            });
        }
    };
    tokio::select! {
        () = accept => {}
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

/// `keyferry agent`: prepares the socket, resolves every credential, serves until a signal,
/// then removes the socket.
///
/// # Errors
/// Unsafe socket directory, another agent running, bind failure.
pub fn serve(config: Config, socket_flag: Option<&Path>) -> Result<(), AgentError> {
    let path = socket::path(socket_flag, config.agent.socket.as_deref());
    let dir = socket::prepare_dir(&path)?;
    let _lock = InstanceLock::acquire(&dir, &path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("keyferry-agent")
        .build()
        .map_err(AgentError::Runtime)?;
    let result = runtime.block_on(async {
        let listener = socket::bind(&path)?;
        let agent = Agent::new(config);
        let warm = Arc::clone(&agent);
        let _ = tokio::task::spawn_blocking(move || warm.refresh_all()).await;
        eprintln!(
            "keyferry agent: serving {} (pid {})",
            path.display(),
            std::process::id()
        );
        run(agent, listener, signals()).await;
        Ok::<(), AgentError>(())
    });
    let _ = std::fs::remove_file(&path);
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}
