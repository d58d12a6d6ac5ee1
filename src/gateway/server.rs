//! The accept loops: one task per listener, one per connection, a semaphore capping open
//! connections, and one cancellation that every task ends on.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::listen::Listener;
use super::proxy::{self, Shared};
use super::{GatewayContext, Limits};

/// Serves `listeners` until `shutdown` resolves, then closes every connection (a stream in
/// progress is cut: the agent is stopping) and returns once all tasks have ended.
pub async fn run(
    listeners: Vec<Listener>,
    ctx: Arc<dyn GatewayContext>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let shared = Arc::new(Shared::new(ctx, limits));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let cancel = CancellationToken::new();
    let builder = Arc::new(builder(limits));
    let mut loops = JoinSet::new();
    for listener in listeners {
        tracing::info!(listen = %listener.spec(), "gateway listening");
        loops.spawn(accept_loop(
            listener,
            Arc::clone(&shared),
            Arc::clone(&permits),
            Arc::clone(&builder),
            cancel.clone(),
        ));
    }
    shutdown.await;
    cancel.cancel();
    while loops.join_next().await.is_some() {}
    // Every connection task holds a permit until it has ended.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
}

fn builder(limits: Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)));
    b
}

async fn accept_loop(
    listener: Listener,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    cancel: CancellationToken,
) {
    let mut conns = JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = cancel.cancelled() => break,
        };
        let accepted = tokio::select! {
            a = accept(&listener) => a,
            () = cancel.cancelled() => break,
        };
        match accepted {
            Ok(Conn::Tcp(s)) => {
                let _ = s.set_nodelay(true);
                conns.spawn(serve(
                    s,
                    Arc::clone(&shared),
                    Arc::clone(&builder),
                    permit,
                    cancel.clone(),
                ));
            }
            Ok(Conn::Unix(s)) => {
                conns.spawn(serve(
                    s,
                    Arc::clone(&shared),
                    Arc::clone(&builder),
                    permit,
                    cancel.clone(),
                ));
            }
            Err(e) => {
                // Out of descriptors and the like: back off rather than spin.
                tracing::warn!(error = %e, "gateway accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // Reap finished connections so the set stays as small as the open ones.
        while conns.try_join_next().is_some() {}
    }
    while conns.join_next().await.is_some() {}
}

enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> std::io::Result<Conn> {
    match listener {
        Listener::Tcp(l) => l.accept().await.map(|(s, _)| Conn::Tcp(s)),
        Listener::Unix { listener, .. } => listener.accept().await.map(|(s, _)| Conn::Unix(s)),
    }
}

async fn serve<I>(
    io: I,
    shared: Arc<Shared>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    permit: OwnedSemaphorePermit,
    cancel: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| proxy::handle(Arc::clone(&shared), req));
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::select! {
        r = conn => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "gateway connection ended with an error");
            }
        }
        () = cancel.cancelled() => {}
    }
    drop(permit);
}
