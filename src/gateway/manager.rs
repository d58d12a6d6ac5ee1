//! The listener manager: one task per configured address that binds it, retries while it
//! cannot be bound (an address not on this machine yet, a port in use), serves it, drops it
//! when its address goes away, and keeps TCP closed while no grant exists. Unix sockets are
//! always open: only their owner can reach them.

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::listen::{ListenError, ListenSpec, Listener};
use crate::domain::{ListenerInfo, ListenerState};

/// The shared view of every configured listener and the TCP open/closed switch.
pub struct Listeners {
    specs: Vec<ListenSpec>,
    states: Mutex<Vec<ListenerState>>,
    changed: watch::Sender<u64>,
    open: watch::Sender<bool>,
    allow_unspecified: bool,
    retry: Duration,
}

impl Listeners {
    /// TCP starts open only when `open` (a grant already exists).
    #[must_use]
    pub fn new(
        specs: Vec<ListenSpec>,
        allow_unspecified: bool,
        retry: Duration,
        open: bool,
    ) -> Arc<Self> {
        let states = specs
            .iter()
            .map(|_| ListenerState::Waiting {
                reason: "starting".into(),
            })
            .collect();
        Arc::new(Self {
            specs,
            states: Mutex::new(states),
            changed: watch::channel(0).0,
            open: watch::channel(open).0,
            allow_unspecified,
            retry: retry.max(Duration::from_millis(50)),
        })
    }

    /// Every listener with its state, in config order.
    #[must_use]
    pub fn list(&self) -> Vec<ListenerInfo> {
        let states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        self.specs
            .iter()
            .zip(states.iter())
            .map(|(s, st)| ListenerInfo {
                listen: s.to_string(),
                state: st.clone(),
            })
            .collect()
    }

    /// Opens (or closes) the TCP listeners.
    pub fn set_open(&self, open: bool) {
        self.open
            .send_if_modified(|o| std::mem::replace(o, open) != open);
    }

    /// Opens the TCP listeners and waits until each has tried once (bound, or waiting with
    /// a reason), so the caller can name a bound URL. Bounded: a bind is one syscall.
    pub async fn open_and_settle(&self) {
        self.set_open(true);
        let mut rx = self.changed.subscribe();
        let settled = |me: &Self| {
            me.states
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .zip(&me.specs)
                .all(|(st, spec)| match st {
                    ListenerState::Closed => false,
                    ListenerState::Waiting { reason } => {
                        !(reason == "starting" && matches!(spec, ListenSpec::Tcp(_)))
                    }
                    _ => true,
                })
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while !settled(self) {
                if rx.changed().await.is_err() {
                    break;
                }
            }
        })
        .await;
    }

    fn set(&self, i: usize, state: ListenerState) {
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        if states[i] != state {
            match &state {
                ListenerState::Waiting { reason } | ListenerState::Failed { reason } => {
                    tracing::warn!(listen = %self.specs[i], reason, "gateway listener not bound");
                }
                ListenerState::Listening { url } => tracing::info!(%url, "gateway listening"),
                ListenerState::Closed => {
                    tracing::info!(listen = %self.specs[i], "gateway port closed (no grants)")
                }
            }
            states[i] = state;
            drop(states);
            self.changed.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// The base URL a grant prints: `wanted` if it listens, else the first listening TCP
    /// address in config order, else the Unix socket's loopback face.
    #[must_use]
    pub fn base_url(&self, wanted: Option<&str>) -> Option<String> {
        let list = self.list();
        let urls = || {
            list.iter().filter_map(|l| match &l.state {
                ListenerState::Listening { url } if url.starts_with("http://") => Some(url.clone()),
                _ => None,
            })
        };
        if let Some(w) = wanted {
            if let Some(u) = urls().find(|u| u.trim_start_matches("http://") == w || u == w) {
                return Some(u);
            }
        }
        urls()
            .next()
            .or_else(|| self.unix_socket().map(|_| "http://localhost".into()))
    }

    /// The Unix socket's path, when one listens.
    #[must_use]
    pub fn unix_socket(&self) -> Option<String> {
        self.list().into_iter().find_map(|l| match l.state {
            ListenerState::Listening { url } if url.starts_with("unix:") => {
                Some(url.trim_start_matches("unix:").to_owned())
            }
            _ => None,
        })
    }

    /// A short reason for a grant that finds nothing listening.
    #[must_use]
    pub fn why_down(&self) -> String {
        self.list()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Runs one task per listener until `cancel`; each bound session is served by `serve`
    /// (an accept loop that ends on the token it is given).
    pub async fn run<F, Fut>(self: Arc<Self>, cancel: CancellationToken, serve: F)
    where
        F: Fn(Listener, CancellationToken) -> Fut + Clone + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..self.specs.len() {
            tasks.spawn(Arc::clone(&self).one(i, cancel.clone(), serve.clone()));
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn one<F, Fut>(self: Arc<Self>, i: usize, cancel: CancellationToken, serve: F)
    where
        F: Fn(Listener, CancellationToken) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let spec = self.specs[i].clone();
        let tcp = match &spec {
            ListenSpec::Tcp(a) => Some(*a),
            ListenSpec::Unix(_) => None,
        };
        let mut open = self.open.subscribe();
        while !cancel.is_cancelled() {
            if tcp.is_some() && !*open.borrow_and_update() {
                self.set(i, ListenerState::Closed);
                tokio::select! {
                    r = open.changed() => if r.is_err() { return },
                    () = cancel.cancelled() => return,
                }
                continue;
            }
            let listener = match Listener::bind(&spec, self.allow_unspecified).await {
                Ok(l) => l,
                Err(e) => {
                    let (state, retry) = classify(&e);
                    self.set(i, state);
                    if !retry {
                        return;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(self.retry) => {}
                        _ = open.changed() => {}
                        () = cancel.cancelled() => return,
                    }
                    continue;
                }
            };
            let url = match listener.spec() {
                ListenSpec::Tcp(a) => format!("http://{a}"),
                ListenSpec::Unix(p) => format!("unix:{}", p.display()),
            };
            self.set(i, ListenerState::Listening { url });
            let session = cancel.child_token();
            let served = serve(listener, session.clone());
            tokio::pin!(served);
            // (why it stopped, whether the accept loop already ended): a finished future
            // must not be polled again, and at shutdown it may end in the same poll as
            // `cancel` (select! picks either).
            let (why, ended) = loop {
                tokio::select! {
                    () = &mut served => break (None, true),
                    () = cancel.cancelled() => break (None, false),
                    r = open.changed(), if tcp.is_some() => {
                        if r.is_err() || !*open.borrow() { break (None, false) }
                    }
                    () = tokio::time::sleep(self.retry), if tcp.is_some() => {
                        if let Some(reason) = tcp.and_then(gone) { break (Some(reason), false) }
                    }
                }
            };
            // Closing the session ends the accept loop and its open connections.
            session.cancel();
            if !ended {
                served.await;
            }
            if let Some(reason) = why {
                self.set(i, ListenerState::Waiting { reason });
            }
        }
    }
}

/// Whether a bound address has left this machine: a listening socket on a deleted address
/// stays open (and silent) in Linux, so ask the kernel by binding a throwaway UDP socket to
/// the same address — a syscall, no `ip`, no parsing of `/proc`.
fn gone(addr: SocketAddr) -> Option<String> {
    if addr.ip().is_unspecified() || addr.ip().is_loopback() {
        return None;
    }
    match UdpSocket::bind(SocketAddr::new(addr.ip(), 0)) {
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
            Some("address no longer on this machine".into())
        }
        _ => None,
    }
}

/// A bind error as a state, and whether to retry it.
fn classify(e: &ListenError) -> (ListenerState, bool) {
    match e {
        ListenError::Bind { source, .. } => match source.kind() {
            std::io::ErrorKind::AddrNotAvailable => (
                ListenerState::Waiting {
                    reason: "address not on this machine yet".into(),
                },
                true,
            ),
            std::io::ErrorKind::AddrInUse => (
                ListenerState::Waiting {
                    reason: "port in use by another program".into(),
                },
                true,
            ),
            _ => (
                ListenerState::Waiting {
                    reason: source.to_string(),
                },
                true,
            ),
        },
        other => (
            ListenerState::Failed {
                reason: other.to_string(),
            },
            false,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An accept loop that ends by itself is served again, and never polled after it ended
    /// (that panicked: "`async fn` resumed after completion", seen at the app's shutdown).
    #[tokio::test]
    async fn a_session_that_ends_by_itself_is_not_polled_again() {
        let l = Listeners::new(
            vec![ListenSpec::Tcp("127.0.0.1:0".parse().unwrap())],
            false,
            Duration::from_millis(20),
            true,
        );
        let cancel = CancellationToken::new();
        let served = Arc::new(AtomicUsize::new(0));
        let (count, stop) = (Arc::clone(&served), cancel.clone());
        let serve = move |_l: Listener, _s: CancellationToken| {
            let n = count.fetch_add(1, Ordering::SeqCst);
            let stop = stop.clone();
            async move {
                if n >= 2 {
                    stop.cancel();
                }
            }
        };
        tokio::time::timeout(
            Duration::from_secs(10),
            Arc::clone(&l).one(0, cancel, serve),
        )
        .await
        .expect("it ends once cancelled");
        assert_eq!(served.load(Ordering::SeqCst), 3);
    }
}
