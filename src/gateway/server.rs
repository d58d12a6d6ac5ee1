//! The accept loops: one task per listener, one per connection, a semaphore capping open
//! connections, and one cancellation that every task ends on.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::absorb::Absorb;
use super::clock::{Clock, ConnTimer};
use super::listen::Listener;
use super::opening;
use super::proxy::{self, Shared};
use super::refusals::{PeerAddr, Refused};
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
    loops.spawn(flush_refusals(Arc::clone(&shared), cancel.clone()));
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

/// Serves every listener `listeners` manages (bound, retried, opened and closed by it)
/// until `shutdown`, then closes every connection.
pub async fn run_managed(
    listeners: Arc<super::Listeners>,
    ctx: Arc<dyn GatewayContext>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let shared = Arc::new(Shared::new(ctx, limits));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let cancel = CancellationToken::new();
    let builder = Arc::new(builder(limits));
    let flusher = tokio::spawn(flush_refusals(Arc::clone(&shared), cancel.clone()));
    let serve = {
        let permits = Arc::clone(&permits);
        move |listener: Listener, session: CancellationToken| {
            accept_loop(
                listener,
                Arc::clone(&shared),
                Arc::clone(&permits),
                Arc::clone(&builder),
                session,
            )
        }
    };
    let manager = tokio::spawn(listeners.run(cancel.clone(), serve));
    shutdown.await;
    cancel.cancel();
    let _ = manager.await;
    let _ = flusher.await;
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
}

/// Every window, one audit entry per peer for the refusals counted in it; and the last
/// partial window's when the gateway stops.
async fn flush_refusals(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(shared.limits.refusal_window);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => shared.flush_refusals(),
            () = cancel.cancelled() => break,
        }
    }
    shared.flush_refusals();
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
            Ok((Conn::Tcp(s), peer)) => {
                let _ = s.set_nodelay(true);
                conns.spawn(serve(
                    s,
                    peer,
                    Arc::clone(&shared),
                    Arc::clone(&builder),
                    permit,
                    cancel.clone(),
                ));
            }
            Ok((Conn::Unix(s), peer)) => {
                conns.spawn(serve(
                    s,
                    peer,
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

async fn accept(listener: &Listener) -> std::io::Result<(Conn, PeerAddr)> {
    match listener {
        Listener::Tcp(l) => {
            let (s, addr) = l.accept().await?;
            Ok((Conn::Tcp(s), PeerAddr::Ip(addr.ip().to_canonical())))
        }
        Listener::Unix { listener, .. } => {
            let (s, _) = listener.accept().await?;
            // The socket's folder is 0700: this is the user, or root.
            let uid = s.peer_cred().map_or(u32::MAX, |c| c.uid());
            Ok((Conn::Unix(s), PeerAddr::Unix { uid }))
        }
    }
}

async fn serve<I>(
    io: I,
    peer: PeerAddr,
    shared: Arc<Shared>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    permit: OwnedSemaphorePermit,
    cancel: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let deadline = shared.limits.first_byte_timeout;
    let opened = tokio::select! {
        o = opening::read(io, deadline) => Some(o),
        () = cancel.cancelled() => None,
    };
    let io = match opened {
        Some(Ok(io)) => io,
        // Silent past the deadline: its permit and descriptor go back now, and it counts.
        Some(Err(opening::Unopened::Silent)) => {
            tracing::debug!(%peer, "gateway connection closed: no request within the first-byte deadline");
            shared.refusals.count(peer, Refused::Silent);
            return;
        }
        Some(Err(opening::Unopened::Closed)) | None => return,
    };
    let limits = shared.limits;
    if io.is_h2() {
        let svc = service_fn(move |req| proxy::handle(Arc::clone(&shared), peer, None, req));
        let conn = builder.serve_connection(TokioIo::new(io), svc);
        until_cancelled(Absorb::new(conn), &cancel).await;
    } else {
        // HTTP/1: one request at a time, so one timer for all their deadlines (`clock`).
        let clock = Clock::default();
        let mut b = http1::Builder::new();
        b.timer(ConnTimer(clock.clone()))
            .header_read_timeout(limits.header_timeout)
            .keep_alive(true);
        let svc = service_fn(move |req| {
            proxy::handle(Arc::clone(&shared), peer, Some(clock.clone()), req)
        });
        until_cancelled(
            Absorb::new(b.serve_connection(TokioIo::new(io), svc)),
            &cancel,
        )
        .await;
    }
    drop(permit);
}

/// Serves `conn` to its end, or until the gateway stops.
async fn until_cancelled<E: std::fmt::Display>(
    conn: impl Future<Output = Result<(), E>>,
    cancel: &CancellationToken,
) {
    tokio::select! {
        r = conn => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "gateway connection ended with an error");
            }
        }
        () = cancel.cancelled() => {}
    }
}
