//! The agent behind the tray: started in-process on the normal socket, or — when a headless
//! `keyferry agent` already answers there — reached as a client. Each operation is a thin
//! call into the library.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keyferry::agent::socket::{self, SocketError};
use keyferry::agent::{Agent, AgentError, Role, Running};
use keyferry::api::Api;
use keyferry::client::{Client, ClientError};
use keyferry::config::Config;
use keyferry::domain::ErrorBody;
use keyferry::domain::{CredentialStatus, Decision};
use keyferry::protocol::{Event, Status};
use keyferry::secret::Secret;
use tokio::sync::broadcast;

use keyferry::tray::AgentLink;

pub enum Backend {
    Embedded(Embedded),
    Attached(Api),
    Down,
}

pub struct Embedded {
    pub agent: Arc<Agent>,
    api: Api,
    /// Keeps this app registered as the embedded agent's approver.
    approver: Mutex<Option<keyferry::agent::ApproverHandle>>,
    running: Mutex<Option<Running>>,
}

/// How the tray introduces itself in the protocol handshake.
const CLIENT_NAME: &str = concat!("keyferry-tray/", env!("CARGO_PKG_VERSION"));

fn message(e: ErrorBody) -> String {
    e.message
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
                        Self::Attached(Api::socket(path, CLIENT_NAME)),
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
                Err(AgentError::Socket(SocketError::AlreadyRunning { .. })) if attempt < 2 => {
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

    fn api(&self) -> Result<&Api, String> {
        match self {
            Self::Embedded(e) => Ok(&e.api),
            Self::Attached(api) => Ok(api),
            Self::Down => Err("the agent is not running".into()),
        }
    }

    pub fn status(&self) -> Result<Status, String> {
        self.api()?.status().map_err(message)
    }

    pub fn set_locked(&self, locked: bool) -> Result<(), String> {
        self.api()?.set_locked(locked, None).map_err(message)
    }

    pub fn save_settings(&self, s: &keyferry::domain::Settings) -> Result<(), String> {
        self.api()?.save_settings(s).map_err(message)
    }

    pub fn approve(&self, request: u64, decision: Decision) -> Result<(), String> {
        self.api()?.approve(request, decision).map_err(message)
    }

    /// Each Claude credential's subscription usage (the agent fetches it at most every 5
    /// minutes). Attached, on its own connection, so a slow usage endpoint never holds up
    /// the window's other calls on the shared one.
    pub async fn usage(&self) -> Result<Vec<keyferry::domain::CredentialUsage>, String> {
        let api = self.own_api()?;
        tauri::async_runtime::spawn_blocking(move || api.status_with_usage(None))
            .await
            .map_err(|e| e.to_string())?
            .map(|st| st.usage)
            .map_err(message)
    }

    /// An interface of its own for a call off the main thread: the embedded agent, or a
    /// fresh connection to the attached one (so a slow call holds up no other).
    pub fn own_api(&self) -> Result<Api, String> {
        match self {
            Self::Embedded(e) => Ok(Api::Embedded(Arc::clone(&e.agent))),
            Self::Attached(Api::Socket { path, .. }) => Ok(Api::socket(path.clone(), CLIENT_NAME)),
            _ => Err("the agent is not running".into()),
        }
    }

    /// The gateway's grants (empty when the agent runs no gateway).
    pub fn grants(&self) -> Vec<keyferry::domain::GrantInfo> {
        self.api()
            .ok()
            .and_then(|api| api.grants().ok())
            .unwrap_or_default()
    }

    pub fn revoke_grant(&self, name: &str) -> Result<(), String> {
        match self.api()?.revoke(name).map_err(message)? {
            true => Ok(()),
            false => Err(format!("no grant named {name}")),
        }
    }

    pub async fn store(&self, name: &str, token: Secret) -> Result<CredentialStatus, String> {
        let api = self.own_api()?;
        let name = name.to_owned();
        tauri::async_runtime::spawn_blocking(move || api.store(&name, token))
            .await
            .map_err(|e| e.to_string())?
            .map(|(status, _)| status)
            .map_err(message)
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
            Self::Attached(Api::Socket { path, .. }) => {
                stream(path.clone(), true, move |ev| sink(ev));
            }
            Self::Attached(_) => {}
            Self::Down => {}
        }
    }

    /// Stops the embedded agent and removes its socket.
    pub fn shutdown(&self) {
        let Self::Embedded(e) = self else { return };
        let running = e
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(mut running) = running {
            tauri::async_runtime::block_on(async move { running.stop().await });
        }
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
                    c.watch()?;
                    // Whatever happened while we were away: re-read the status.
                    sink(Event::Lagged { missed: 0 });
                }
                // A headless agent takes this app as an approver when it is listed in
                // `[policy] approvers` (by default the keyferry-tray next to keyferry).
                if let Err(e) = c.approvals() {
                    tracing::info!(error = %e, "not an approver of the running agent");
                }
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
    fn start(config: Config, path: &Path) -> Result<Self, AgentError> {
        let running =
            tauri::async_runtime::block_on(keyferry::agent::start(config, path, Role::Embedded))?;
        tracing::info!(socket = %path.display(), "serving in-process");
        let agent = Arc::clone(&running.agent);
        Ok(Self {
            api: Api::Embedded(Arc::clone(&agent)),
            agent,
            approver: Mutex::new(None),
            running: Mutex::new(Some(running)),
        })
    }
}
