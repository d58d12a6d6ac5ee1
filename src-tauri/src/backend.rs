//! The agent behind the tray: started in-process on the normal socket, or — when a headless
//! `keyferry agent` already answers there — reached as a client. Each operation is a thin
//! call into the library.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keyferry::agent::socket::{self, InstanceLock, SocketError};
use keyferry::agent::Agent;
use keyferry::client::{Client, ClientError};
use keyferry::config::Config;
use keyferry::domain::{CredentialStatus, Decision, Peer};
use keyferry::protocol::{Event, Request, Status, WireSecret};
use keyferry::secret::Secret;
use tokio::sync::{broadcast, oneshot};

use keyferry::tray::AgentLink;

pub enum Backend {
    Embedded(Embedded),
    Attached { socket: PathBuf },
    Down,
}

pub struct Embedded {
    pub agent: Arc<Agent>,
    /// Keeps this app registered as the embedded agent's approver.
    approver: Mutex<Option<keyferry::agent::ApproverHandle>>,
    socket: PathBuf,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    served: Mutex<Option<tauri::async_runtime::JoinHandle<()>>>,
    _lock: InstanceLock,
}

/// How the tray introduces itself in the protocol handshake.
const CLIENT_NAME: &str = concat!("keyferry-tray/", env!("CARGO_PKG_VERSION"));

/// This process, as the agent's audit log records the tray's own requests.
fn me() -> Peer {
    Peer {
        uid: keyferry::paths::current_uid(),
        pid: i32::try_from(std::process::id()).ok(),
        exe: std::env::current_exe()
            .ok()
            .map(|p| p.display().to_string()),
    }
}

fn client_err(e: ClientError) -> String {
    e.to_string()
}

impl Backend {
    /// Attaches to an agent already serving the socket, else starts one in this process.
    pub fn start(config: Config) -> (Self, AgentLink) {
        let path = socket::path(None, config.agent.socket.as_deref());
        for attempt in 0..3 {
            match Client::connect_named(&path, CLIENT_NAME) {
                Ok(c) => {
                    tracing::info!(socket = %path.display(), pid = c.hello.pid, "attached to a running agent");
                    return (
                        Self::Attached { socket: path },
                        AgentLink::Attached { pid: c.hello.pid },
                    );
                }
                Err(ClientError::NotRunning { .. }) => {}
                Err(e) => {
                    return (
                        Self::Down,
                        AgentLink::Down {
                            reason: e.to_string(),
                        },
                    )
                }
            }
            match Embedded::start(config.clone(), &path) {
                Ok(e) => {
                    let link = AgentLink::Embedded {
                        pid: std::process::id(),
                    };
                    return (Self::Embedded(e), link);
                }
                // Another agent is starting up right now: attach to it once it answers.
                Err(SocketError::AlreadyRunning { .. }) if attempt < 2 => {
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => {
                    return (
                        Self::Down,
                        AgentLink::Down {
                            reason: e.to_string(),
                        },
                    )
                }
            }
        }
        let reason = format!(
            "{} is locked by another agent that does not answer; stop it and start Keyferry again",
            path.display()
        );
        (Self::Down, AgentLink::Down { reason })
    }

    pub fn socket(&self) -> Option<&Path> {
        match self {
            Self::Embedded(e) => Some(&e.socket),
            Self::Attached { socket } => Some(socket),
            Self::Down => None,
        }
    }

    fn client(&self) -> Result<Client, String> {
        let socket = self.socket().ok_or("the agent is not running")?;
        Client::connect_named(socket, CLIENT_NAME).map_err(client_err)
    }

    pub fn status(&self) -> Result<Status, String> {
        match self {
            Self::Embedded(e) => Ok(e.agent.status()),
            _ => self.client()?.call(Request::Status {}).map_err(client_err),
        }
    }

    pub fn set_locked(&self, locked: bool) -> Result<(), String> {
        match (self, locked) {
            (Self::Embedded(e), true) => {
                e.agent.lock(None, &me());
                Ok(())
            }
            (Self::Embedded(e), false) => e.agent.unlock(None, &me()).map_err(|b| b.message),
            (_, true) => self.call(Request::Lock { passphrase: None }),
            (_, false) => self.call(Request::Unlock { passphrase: None }),
        }
    }

    pub fn save_settings(&self, s: &keyferry::domain::Settings) -> Result<(), String> {
        match self {
            Self::Embedded(e) => e.agent.update_settings(s, &me()).map_err(|b| b.message),
            _ => self.call(Request::Settings {
                notifications: Some(s.notifications),
                notify_on_access: Some(s.notify_on_access),
                expiry_thresholds: Some(s.expiry_thresholds.clone()),
            }),
        }
    }

    pub fn approve(&self, request: u64, decision: Decision) -> Result<(), String> {
        match self {
            Self::Embedded(e) if e.agent.approve(request, decision) => Ok(()),
            Self::Embedded(_) => Err(format!(
                "approval request {request} is over (answered or timed out)"
            )),
            _ => self.call(Request::Approve { request, decision }),
        }
    }

    pub async fn store(&self, name: &str, token: Secret) -> Result<CredentialStatus, String> {
        match self {
            Self::Embedded(e) => e
                .agent
                .store(name, token, &me())
                .await
                .map_err(|b| b.message),
            _ => {
                let mut c = self.client()?;
                let request = Request::Store {
                    name: name.to_owned(),
                    token: WireSecret(token),
                };
                tauri::async_runtime::spawn_blocking(move || c.call(request).map_err(client_err))
                    .await
                    .map_err(|e| e.to_string())?
            }
        }
    }

    fn call(&self, request: Request) -> Result<(), String> {
        let _: serde_json::Value = self.client()?.call(request).map_err(client_err)?;
        Ok(())
    }

    /// Streams the agent's events to `sink` (a `Lagged` after a reconnect asks for a resync),
    /// and makes this app an approver for `ask`-policy requests.
    pub fn pump(&self, sink: impl Fn(Event) + Send + Sync + 'static) {
        let sink = Arc::new(sink);
        match self {
            Self::Embedded(e) => {
                let mut rx = e.agent.subscribe();
                let s = Arc::clone(&sink);
                tauri::async_runtime::spawn(async move {
                    loop {
                        match rx.recv().await {
                            Ok(ev) => s(ev),
                            Err(broadcast::error::RecvError::Lagged(missed)) => {
                                s(Event::Lagged { missed })
                            }
                            Err(broadcast::error::RecvError::Closed) => return,
                        }
                    }
                });
                *e.approver
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some(e.agent.register_approver());
            }
            Self::Attached { socket } => stream(socket.clone(), true, move |ev| sink(ev)),
            Self::Down => {}
        }
    }

    /// Stops the embedded agent and removes its socket.
    pub fn shutdown(&self) {
        let Self::Embedded(e) = self else { return };
        if let Some(stop) = e
            .stop
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            let _ = stop.send(());
        }
        let served = e
            .served
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(served) = served {
            let _ = tauri::async_runtime::block_on(async {
                tokio::time::timeout(Duration::from_secs(2), served).await
            });
        }
        let _ = std::fs::remove_file(&e.socket);
    }
}

/// One `watch` + `approvals` connection, reconnecting after the agent restarts.
fn stream(socket: PathBuf, watch: bool, sink: impl Fn(Event) + Send + 'static) {
    std::thread::Builder::new()
        .name("keyferry-events".into())
        .spawn(move || loop {
            let run = || -> Result<(), ClientError> {
                let mut c = Client::connect_named(&socket, CLIENT_NAME)?;
                if watch {
                    let _: serde_json::Value = c.call(Request::Watch {})?;
                    // Whatever happened while we were away: re-read the status.
                    sink(Event::Lagged { missed: 0 });
                }
                let _: serde_json::Value = c.call(Request::Approvals {})?;
                loop {
                    sink(c.next_event()?);
                }
            };
            if let Err(e) = run() {
                tracing::debug!(error = %e, "event stream ended; reconnecting");
            }
            std::thread::sleep(Duration::from_secs(1));
        })
        .expect("spawn the event thread");
}

impl Embedded {
    fn start(config: Config, path: &Path) -> Result<Self, SocketError> {
        let dir = socket::prepare_dir(path)?;
        let lock = InstanceLock::acquire(&dir, path)?;
        let listener = tauri::async_runtime::block_on(async { socket::bind(path) })?;
        let agent = Agent::new(config);
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tauri::async_runtime::spawn({
            let agent = Arc::clone(&agent);
            async move {
                // As `keyferry agent`: resolve everything before the first client is
                // accepted (early clients wait in the listen backlog, they are not refused).
                let warm = Arc::clone(&agent);
                let _ = tokio::task::spawn_blocking(move || warm.refresh_all()).await;
                keyferry::agent::run(agent, listener, async move {
                    let _ = stopped.await;
                })
                .await;
            }
        });
        tracing::info!(socket = %path.display(), "serving in-process");
        Ok(Self {
            agent,
            approver: Mutex::new(None),
            socket: path.to_path_buf(),
            stop: Mutex::new(Some(stop)),
            served: Mutex::new(Some(served)),
            _lock: lock,
        })
    }
}
