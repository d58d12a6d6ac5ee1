//! The one interface to Keyferry — a running agent (over its socket, or in this process as
//! the tray embeds it) or, with no agent, the sources themselves — used by the CLI and the
//! tray alike, so each operation is written once.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;

use crate::agent::Agent;
use crate::broker::Broker;
use crate::client::{Client, ClientError};
use crate::credential::rfc3339;
use crate::domain::{
    CredentialStatus, Decision, ErrorBody, ErrorCode, Peer, Settings, StoreOutcome,
};
use crate::protocol::{Hello, Status, Token, WireSecret};
use crate::secret::Secret;

/// Whether to use a running agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentUse {
    /// Use one if it answers, else read the sources.
    Auto,
    /// Read the sources even when an agent runs (`--no-agent`).
    Never,
    /// Fail unless an agent answers (`--require-agent`).
    Required,
}

/// Where the answers come from.
pub enum Api {
    /// The agent in this process (the tray).
    Embedded(Arc<Agent>),
    /// A running agent at a socket; the connection is made on first use and remade once
    /// if the agent restarted.
    Socket {
        path: PathBuf,
        name: String,
        client: Box<Mutex<Option<Client>>>,
    },
    /// No agent: the sources and the keychain directly.
    Direct(Box<Broker>),
}

/// This process, as the audit log records in-process requests.
#[must_use]
pub fn this_process() -> Peer {
    Peer {
        uid: crate::paths::current_uid(),
        pid: i32::try_from(std::process::id()).ok(),
        exe: std::env::current_exe()
            .ok()
            .map(|p| p.display().to_string()),
        sandbox: None,
    }
}

fn cerr(e: ClientError) -> ErrorBody {
    e.body()
}

fn blocking<T>(fut: impl std::future::Future<Output = T>) -> T {
    match tokio::runtime::Handle::try_current() {
        // Called from a blocking thread of the embedding runtime (the tray's commands).
        Ok(handle) => handle.block_on(fut),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_or_else(
                |e| panic!("cannot start a runtime: {e}"),
                |rt| rt.block_on(fut),
            ),
    }
}

impl Api {
    /// Connects to the agent at `socket` as `client_name`, or falls back to `broker`.
    /// `warn` hears why a fallback happened (an agent of another version).
    ///
    /// # Errors
    /// `Required` and no agent; a foreign agent; an I/O failure.
    pub fn open(
        socket: &Path,
        client_name: &str,
        agent: AgentUse,
        broker: Broker,
        warn: impl Fn(&str),
    ) -> Result<Self, ClientError> {
        if agent == AgentUse::Never {
            return Ok(Self::Direct(Box::new(broker)));
        }
        match Client::connect_named(socket, client_name) {
            Ok(c) => Ok(Self::Socket {
                path: socket.to_path_buf(),
                name: client_name.to_owned(),
                client: Box::new(Mutex::new(Some(c))),
            }),
            Err(ClientError::NotRunning { .. }) if agent == AgentUse::Auto => {
                Ok(Self::Direct(Box::new(broker)))
            }
            Err(ClientError::Refused(e))
                if e.code == ErrorCode::VersionMismatch && agent == AgentUse::Auto =>
            {
                warn(&format!("{}; reading the sources directly", e.message));
                Ok(Self::Direct(Box::new(broker)))
            }
            Err(e) => Err(e),
        }
    }

    /// A client for a socket, connected lazily (the tray attached to a headless agent).
    #[must_use]
    pub fn socket(path: PathBuf, client_name: &str) -> Self {
        Self::Socket {
            path,
            name: client_name.to_owned(),
            client: Box::new(Mutex::new(None)),
        }
    }

    /// The agent's pid, when there is an agent.
    #[must_use]
    pub fn agent_pid(&self) -> Option<u32> {
        match self {
            Self::Embedded(_) => Some(std::process::id()),
            Self::Socket { client, .. } => client
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_ref()
                .map(|c| c.hello.pid),
            Self::Direct(_) => None,
        }
    }

    /// Runs `f` on the socket's client, reconnecting once if the agent went away.
    fn with_client<T>(
        &self,
        f: impl Fn(&mut Client) -> Result<T, ClientError>,
    ) -> Result<T, ErrorBody> {
        let Self::Socket { path, name, client } = self else {
            unreachable!("only called for Socket")
        };
        let mut guard = client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for attempt in 0..2 {
            if guard.is_none() {
                *guard = Some(Client::connect_named(path, name).map_err(cerr)?);
            }
            let c = guard.as_mut().expect("connected above");
            match f(c) {
                Err(ClientError::Closed { .. } | ClientError::Io { .. }) if attempt == 0 => {
                    *guard = None;
                }
                other => return other.map_err(cerr),
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// Every credential's state (and the agent's, when there is one).
    ///
    /// # Errors
    /// The agent refused or went away.
    pub fn status(&self) -> Result<Status, ErrorBody> {
        match self {
            Self::Embedded(a) => Ok(a.status()),
            Self::Socket { .. } => self.with_client(Client::status),
            Self::Direct(b) => {
                let now = OffsetDateTime::now_utc();
                let thresholds = b.config.agent.thresholds();
                let credentials = b
                    .config
                    .names()
                    .into_iter()
                    .map(|n| crate::report::status_of(&n, &b.resolve(&n), now, &thresholds))
                    .collect();
                Ok(Status {
                    agent: Hello {
                        version: crate::protocol::VERSION,
                        agent: "none (reading the sources directly)".into(),
                        pid: 0,
                    },
                    locked: false,
                    uptime_secs: 0,
                    credentials,
                    last_access: None,
                    resolutions: 0,
                    sinks: Vec::new(),
                    usage: Vec::new(),
                    listeners: Vec::new(),
                })
            }
        }
    }

    /// [`Api::status`] plus each Claude credential's subscription usage (or why there is
    /// none), or only `only`'s. Only an agent fetches usage: with no agent, `usage` is empty.
    ///
    /// # Errors
    /// As [`Api::status`].
    pub fn status_with_usage(&self, only: Option<&str>) -> Result<Status, ErrorBody> {
        match self {
            Self::Embedded(a) => Ok(blocking(a.status_with_usage(None, only))),
            Self::Socket { .. } => self.with_client(|c| c.status_with_usage(only)),
            Self::Direct(_) => self.status(),
        }
    }

    /// The token of `name`, through the lock and policy when an agent serves it.
    ///
    /// # Errors
    /// Not found, refused, locked, expired.
    pub fn get(&self, name: &str) -> Result<Token, ErrorBody> {
        match self {
            Self::Embedded(a) => blocking(a.get(name, &this_process(), None)),
            Self::Socket { .. } => self.with_client(|c| c.get(name)),
            Self::Direct(b) => {
                let found = b.resolve(name).map_err(|e| e.body())?;
                let c = &found.resolved.credential;
                let env_var = b
                    .spec(name)
                    .ok()
                    .and_then(|s| s.env_var)
                    .unwrap_or_else(|| c.kind.env_var().to_owned());
                Ok(Token {
                    name: name.to_owned(),
                    source: found.resolved.origin.clone(),
                    kind: c.kind,
                    env_var,
                    token: WireSecret(c.token.clone()),
                    expires_at: c.expires_at.and_then(rfc3339),
                })
            }
        }
    }

    /// Stores `token` under `name`; the new status and where it went.
    ///
    /// # Errors
    /// A locked or failing keychain, an unknown name.
    pub fn store(
        &self,
        name: &str,
        token: Secret,
    ) -> Result<(CredentialStatus, String), ErrorBody> {
        self.store_outcome(name, token)
            .map(|(o, place)| (o.status, place))
    }

    /// [`Api::store`], with what the keychain item held before (to say "replaced").
    ///
    /// # Errors
    /// As [`Api::store`].
    pub fn store_outcome(
        &self,
        name: &str,
        token: Secret,
    ) -> Result<(StoreOutcome, String), ErrorBody> {
        match self {
            Self::Embedded(a) => {
                let st = blocking(a.store(name, token, &this_process()))?;
                Ok((st, "the agent in this app".into()))
            }
            Self::Socket { .. } => {
                // A retry after a reconnect sends the same token again (a zeroized copy).
                let st = self.with_client(|c| c.store(name, token.clone()))?;
                Ok((
                    st,
                    format!("the agent (pid {})", self.agent_pid().unwrap_or(0)),
                ))
            }
            Self::Direct(b) => {
                let s = b.store_token(name, token).map_err(|e| e.body())?;
                let now = OffsetDateTime::now_utc();
                let status = crate::report::status_of(
                    name,
                    &b.resolve(name),
                    now,
                    &b.config.agent.thresholds(),
                );
                let inspected = CredentialStatus {
                    inspection: Some(s.credential.inspect(now)),
                    ..status
                };
                let outcome = StoreOutcome {
                    status: inspected,
                    previous: s.previous,
                };
                Ok((outcome, format!("{} {}", s.backend, s.item)))
            }
        }
    }

    /// Removes the stored token; whether there was one.
    ///
    /// # Errors
    /// A locked or failing keychain, an unknown name.
    pub fn clear(&self, name: &str) -> Result<bool, ErrorBody> {
        match self {
            Self::Embedded(a) => blocking(a.clear(name, &this_process())),
            Self::Socket { .. } => self.with_client(|c| c.clear(name)),
            Self::Direct(b) => b.clear(name).map(|i| i.is_some()).map_err(|e| e.body()),
        }
    }

    /// Locks or unlocks the agent.
    ///
    /// # Errors
    /// No agent, or a wrong passphrase.
    pub fn set_locked(&self, locked: bool, passphrase: Option<Secret>) -> Result<(), ErrorBody> {
        match self {
            Self::Embedded(a) if locked => {
                blocking(a.lock(passphrase, &this_process()));
                Ok(())
            }
            Self::Embedded(a) => blocking(a.unlock(passphrase, &this_process())),
            Self::Socket { .. } => self
                .with_client(|c| c.set_locked(locked, passphrase.clone()))
                .map(drop),
            Self::Direct(_) => Err(no_agent("lock")),
        }
    }

    /// Changes and saves run-time settings.
    ///
    /// # Errors
    /// No agent, a bad threshold, an unwritable config.
    pub fn save_settings(&self, s: &Settings) -> Result<(), ErrorBody> {
        match self {
            Self::Embedded(a) => a.update_settings(s, &this_process()),
            Self::Socket { .. } => self.with_client(|c| c.settings(s)).map(drop),
            Self::Direct(_) => Err(no_agent("settings")),
        }
    }

    /// Answers an approval request.
    ///
    /// # Errors
    /// No agent; the request is over; this process may not approve.
    pub fn approve(&self, request: u64, decision: Decision) -> Result<(), ErrorBody> {
        match self {
            Self::Embedded(a) if a.approve(request, decision) => Ok(()),
            Self::Embedded(_) => Err(ErrorBody::new(
                ErrorCode::NoSuchRequest,
                format!("approval request {request} is over (answered or timed out)"),
            )),
            Self::Socket { .. } => self.with_client(|c| c.approve(request, decision)),
            Self::Direct(_) => Err(no_agent("approve")),
        }
    }
}

impl Api {
    /// Writes a credentials snapshot at `path`; an agent keeps it current afterwards.
    /// Returns whether an agent will keep it current.
    ///
    /// # Errors
    /// Refused by the lock or policy, an unsafe or non-credentials target, no token.
    pub fn snapshot(
        &self,
        name: &str,
        path: &Path,
        include_refresh_token: bool,
    ) -> Result<bool, ErrorBody> {
        match self {
            Self::Embedded(a) => blocking(a.register_snapshot(
                name,
                path,
                include_refresh_token,
                &this_process(),
                None,
            ))
            .map(|()| true),
            Self::Socket { .. } => {
                let shown = path.display().to_string();
                self.with_client(|c| c.snapshot(name, &shown, include_refresh_token))
                    .map(|_| true)
            }
            Self::Direct(b) => {
                // One writer per file, as the agent has it: a `[[sink]]`'s file is its own.
                let wanted = crate::sink::Target::snapshot(name, path, include_refresh_token);
                crate::sink::claim(&b.config.sinks, &b.config.path, &wanted)
                    .map_err(|e| e.body())?;
                let found = b.resolve(name).map_err(|e| e.body())?;
                let c = &found.resolved.credential;
                let text = crate::snapshot::render(name, c, include_refresh_token)
                    .map_err(|e| crate::Error::from(e).body())?;
                crate::sink::write_in_place(path, c.kind, &text).map_err(|e| e.body())?;
                Ok(false)
            }
        }
    }

    /// Stops an agent keeping the snapshot at `path` current; whether it did.
    ///
    /// # Errors
    /// No agent; the registry cannot be written.
    pub fn forget(&self, path: &Path) -> Result<bool, ErrorBody> {
        match self {
            Self::Embedded(a) => a.forget_snapshot(path, &this_process()),
            Self::Socket { .. } => {
                let shown = path.display().to_string();
                self.with_client(|c| c.forget(&shown))
            }
            Self::Direct(_) => Err(ErrorBody::new(
                ErrorCode::NoAgent,
                format!(
                    "no agent is running, so nothing keeps {} current; nothing to forget",
                    path.display()
                ),
            )),
        }
    }

    /// Creates (or replaces) a gateway grant.
    ///
    /// # Errors
    /// No agent; refused; the gateway is not listening.
    pub fn grant(
        &self,
        spec: &crate::gateway::NewGrant,
    ) -> Result<crate::protocol::GrantIssued, ErrorBody> {
        match self {
            Self::Embedded(a) => blocking(a.grant(spec.clone(), &this_process(), None)),
            Self::Socket { .. } => self.with_client(|c| c.grant(spec)),
            Self::Direct(_) => Err(no_agent("grant")),
        }
    }

    /// Every live grant with its usage.
    ///
    /// # Errors
    /// No agent.
    pub fn grants(&self) -> Result<Vec<crate::domain::GrantInfo>, ErrorBody> {
        match self {
            Self::Embedded(a) => Ok(a.grants()),
            Self::Socket { .. } => self.with_client(Client::grants),
            Self::Direct(_) => Err(no_agent("grants")),
        }
    }

    /// Revokes a grant; whether there was one.
    ///
    /// # Errors
    /// No agent.
    pub fn revoke(&self, name: &str) -> Result<bool, ErrorBody> {
        match self {
            Self::Embedded(a) => a.revoke_grant(name, &this_process()),
            Self::Socket { .. } => self.with_client(|c| c.revoke(name)),
            Self::Direct(_) => Err(no_agent("revoke")),
        }
    }

    /// Subscribes to the agent's events on a fresh connection (the CLI's `watch`).
    ///
    /// # Errors
    /// No agent, or it refused.
    pub fn watch(&self) -> Result<Client, ErrorBody> {
        let Self::Socket { path, name, .. } = self else {
            return Err(no_agent("watch"));
        };
        let mut c = Client::connect_named(path, name).map_err(cerr)?;
        c.watch().map_err(cerr)?;
        Ok(c)
    }
}

fn no_agent(op: &str) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::NoAgent,
        format!("`{op}` needs a running agent; start one with `keyferry agent`"),
    )
}
