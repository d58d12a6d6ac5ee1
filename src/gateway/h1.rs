//! HTTP/1.1 to a plain-http upstream (loopback only, by `http::parse_upstream`'s rule)
//! with no connection task: the request that holds a connection drives its I/O itself,
//! first while waiting for the answer head ([`send`]), then from the answer body
//! (`body::MeteredBody` polls its [`Lease`]). hyper-util's pooled client hands each request
//! to the connection's own task and the answer back, two task wake-ups a request that
//! nginx does not have (measured: ~15 µs of the gateway's added latency).
//!
//! HTTPS upstreams keep hyper-util's client: there ALPN may pick HTTP/2, whose streams
//! share one connection and so need a task of their own.

use std::fmt;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::future::poll_fn;
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::IdleTimer;
use crate::http::{BoxError, OutBody};

/// An idle connection unused this long is closed rather than reused (hyper-util's default
/// pool timeout, which the HTTPS client keeps).
const IDLE_FOR: Duration = Duration::from_secs(60);
/// Idle connections kept at most; one finishing beyond this is closed. Each holds a
/// descriptor, and `fit_to_file_limit` counts one upstream connection per client one.
const MAX_IDLE: usize = 256;

/// The idle connections to one upstream.
pub struct Pool {
    host: String,
    port: u16,
    /// The `Host` header every request gets (hyper's client sets none at this level).
    pub authority: HeaderValue,
    idle: Mutex<Vec<Idle>>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

/// Boxed wherever it is kept (the pool, a lease): hyper's connection is ~700 bytes, which
/// every move between them, and every future holding one, would otherwise copy.
struct Conn {
    send: SendRequest<OutBody>,
    driver: Connection<TokioIo<TcpStream>, OutBody>,
    /// The driver has resolved (the connection closed): it must not be polled again.
    closed: bool,
}

impl Conn {
    /// Moves the connection's I/O along; true once it has closed.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.closed && Pin::new(&mut self.driver).poll(cx).is_ready() {
            self.closed = true;
        }
        self.closed
    }

    /// Open, between exchanges and ready for the next request.
    fn reusable(&mut self, cx: &mut Context<'_>) -> bool {
        !self.drive(cx) && self.send.is_ready()
    }
}

/// Why no answer head came.
pub enum Failure {
    /// Nothing (connected, answered) within the request's idle deadline.
    Timeout,
    Failed(BoxError),
}

impl Pool {
    /// The pool for a plain-http `base` (`None` for https: see the module's comment).
    #[must_use]
    pub fn for_base(base: &Uri) -> Option<Arc<Self>> {
        if base.scheme_str() != Some("http") {
            return None;
        }
        let authority = base.authority()?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        Some(Arc::new(Self {
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(80),
            authority: HeaderValue::from_str(authority.as_str()).ok()?,
            idle: Mutex::default(),
        }))
    }

    fn take(&self) -> Option<Box<Conn>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let i = idle.pop()?;
        if i.since.elapsed() >= IDLE_FOR {
            // The most recent is the last: every one before it is older still.
            idle.clear();
            return None;
        }
        Some(i.conn)
    }

    fn put(&self, conn: Box<Conn>) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    async fn connect(&self) -> Result<Box<Conn>, BoxError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
        tcp.set_nodelay(true)?;
        let (send, driver) = http1::handshake(TokioIo::new(tcp)).await?;
        Ok(Box::new(Conn {
            send,
            driver,
            closed: false,
        }))
    }

    /// An open idle connection, else a new one, within `idle`.
    async fn checkout(&self, idle: &mut IdleTimer) -> Result<(Box<Conn>, bool), Failure> {
        while let Some(mut conn) = self.take() {
            // A connection upstream closed while idle shows it here, when driven.
            if poll_fn(|cx| Poll::Ready(conn.reusable(cx))).await {
                return Ok((conn, true));
            }
        }
        // Boxed: dialling is rare, and its state would otherwise be in every request's.
        let mut dial = Box::pin(self.connect());
        let conn = within(idle, dial.as_mut()).await?;
        conn.map(|c| (c, false)).map_err(Failure::Failed)
    }
}

/// `fut`, unless `idle` fires first.
///
/// # Errors
/// [`Failure::Timeout`].
pub async fn within<F: Future + Unpin>(
    idle: &mut IdleTimer,
    mut fut: F,
) -> Result<F::Output, Failure> {
    poll_fn(|cx| {
        if let Poll::Ready(out) = Pin::new(&mut fut).poll(cx) {
            return Poll::Ready(Ok(out));
        }
        if idle.expired(cx) {
            return Poll::Ready(Err(Failure::Timeout));
        }
        Poll::Pending
    })
    .await
}

/// The origin-form URI (`/prefix/path?query`) of an incoming path and query under
/// `base`'s path prefix: what an HTTP/1.1 request line to the upstream itself carries.
///
/// # Errors
/// The joined URI is invalid (cannot happen for a path hyper already parsed).
pub fn origin_form(base: &Uri, path_and_query: Option<&PathAndQuery>) -> Result<Uri, http::Error> {
    let prefix = base.path().trim_end_matches('/');
    let pq = match path_and_query {
        // No prefix (the usual case): the client's own, shared rather than copied.
        Some(pq) if prefix.is_empty() => pq.clone(),
        Some(pq) => format!("{prefix}{pq}").parse()?,
        None => PathAndQuery::from_static("/"),
    };
    Ok(Uri::from(pq))
}

/// The connection an answer is being read from, until its body ends: then it goes back
/// to the pool; dropped before that, it closes (and upstream sees the request cancelled).
pub struct Lease {
    conn: Option<Box<Conn>>,
    pool: Arc<Pool>,
}

impl Lease {
    fn new(conn: Box<Conn>, pool: Arc<Pool>) -> Self {
        Self {
            conn: Some(conn),
            pool,
        }
    }

    /// Drives the connection, then `f` (what waits on it: the answer head, a body frame),
    /// in the same poll: what upstream sent is in hyper's channels when `f` looks. The
    /// wakes hyper's hand-over causes are the task's own (see `absorb`).
    pub fn poll_with<T>(
        &mut self,
        cx: &mut Context<'_>,
        mut f: impl FnMut(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        if let Some(c) = &mut self.conn {
            c.drive(cx);
        }
        f(cx)
    }

    /// The answer has ended: the connection goes back to the pool if it is fit to.
    pub fn release(&mut self, cx: &mut Context<'_>) {
        if let Some(mut c) = self.conn.take() {
            if c.reusable(cx) {
                self.pool.put(c);
            }
        }
    }

    /// [`Lease::release`] where no task is polling (a body dropped at its end): nothing
    /// needs waking, the next request to take the connection drives it again.
    pub fn release_now(&mut self) {
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        self.release(&mut cx);
    }
}

/// Sends `req` (origin-form URI) on an idle connection or a new one and drives it until
/// the answer head, all within `idle`. A request a reused connection never took (it had
/// closed meanwhile) is sent again on a new one.
///
/// # Errors
/// [`Failure`]: the deadline passed, or connecting or the exchange failed.
pub async fn send(
    pool: &Arc<Pool>,
    mut req: Request<OutBody>,
    idle: &mut IdleTimer,
) -> Result<(Response<Incoming>, Lease), Failure> {
    req.headers_mut()
        .insert(http::header::HOST, pool.authority.clone());
    loop {
        let (mut conn, reused) = pool.checkout(idle).await?;
        // The future owns what it needs: the connection moves into the lease beside it.
        let mut answer = pin!(conn.send.try_send_request(req));
        let mut lease = Lease::new(conn, Arc::clone(pool));
        let got = poll_fn(|cx| {
            lease.poll_with(cx, |icx| {
                if let Poll::Ready(r) = answer.as_mut().poll(icx) {
                    return Poll::Ready(Some(r));
                }
                if idle.expired(icx) {
                    return Poll::Ready(None);
                }
                Poll::Pending
            })
        })
        .await;
        match got {
            None => return Err(Failure::Timeout),
            Some(Ok(resp)) => return Ok((resp, lease)),
            Some(Err(mut e)) => match e.take_message() {
                Some(back) if reused => req = back,
                _ => return Err(Failure::Failed(e.into_error().into())),
            },
        }
    }
}

#[cfg(test)]
#[path = "h1_tests.rs"]
mod tests;
