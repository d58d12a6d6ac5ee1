//! The agent client: connect, check the agent is ours, handshake, call, read events.
//! Blocking I/O: the CLI makes one or two calls and exits.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::domain::{Decision, ErrorBody, ErrorCode, Settings, StoreOutcome};
use crate::protocol::{
    Cleared, Delivered, Envelope, Event, EventLine, Forgotten, Hello, LockState, Reply, Request,
    Status, Streaming, Token, WireSecret, Written, MAX_LINE, VERSION,
};
use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no keyferry agent is running at {socket} (start one with `keyferry agent`)")]
    NotRunning { socket: String },
    #[error(
        "{socket}: the process serving it runs as uid {uid}, not as you; refusing to talk to it"
    )]
    ForeignAgent { socket: String, uid: u32 },
    #[error("{socket}: {source}")]
    Io {
        socket: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the agent at {socket} closed the connection (was it stopped?)")]
    Closed { socket: String },
    #[error("agent sent an unexpected reply: {0}")]
    Protocol(String),
    #[error("{}", .0.message)]
    Refused(ErrorBody),
}

impl ClientError {
    /// The `{code}` this maps to, for exit statuses.
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotRunning { .. } => ErrorCode::NoAgent,
            Self::ForeignAgent { .. } => ErrorCode::ForeignAgent,
            Self::Io { .. } | Self::Closed { .. } => ErrorCode::Io,
            Self::Protocol(_) => ErrorCode::Protocol,
            Self::Refused(e) => e.code.clone(),
        }
    }

    /// The `{code, message}` form, for the UI.
    #[must_use]
    pub fn body(&self) -> ErrorBody {
        match self {
            Self::Refused(e) => e.clone(),
            other => ErrorBody::new(other.code(), other.to_string()),
        }
    }
}

pub struct Client {
    socket: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
    events: VecDeque<Event>,
    pub hello: Hello,
}

impl Client {
    /// Connects and handshakes. The agent must run as our own uid.
    ///
    /// # Errors
    /// No agent, a foreign agent, a version mismatch, I/O.
    pub fn connect(socket: &Path) -> Result<Self, ClientError> {
        Self::handshake(
            socket,
            VERSION,
            &format!("keyferry-cli/{}", env!("CARGO_PKG_VERSION")),
        )
    }

    /// As [`Client::connect`], announcing `name` as the client (the tray: `keyferry-tray/…`).
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub fn connect_named(socket: &Path, name: &str) -> Result<Self, ClientError> {
        Self::handshake(socket, VERSION, name)
    }

    /// As [`Client::connect`], announcing `version` (tests of the handshake).
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub fn connect_as(socket: &Path, version: u32) -> Result<Self, ClientError> {
        Self::handshake(socket, version, "keyferry-test")
    }

    fn handshake(socket: &Path, version: u32, name: &str) -> Result<Self, ClientError> {
        let shown = socket.display().to_string();
        let stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                ClientError::NotRunning {
                    socket: shown.clone(),
                }
            }
            _ => ClientError::Io {
                socket: shown.clone(),
                source: e,
            },
        })?;
        let uid = crate::sys::peer_uid(&stream).map_err(|e| ClientError::Io {
            socket: shown.clone(),
            source: e,
        })?;
        if uid != crate::paths::current_uid() {
            return Err(ClientError::ForeignAgent { socket: shown, uid });
        }
        let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
        let writer = stream.try_clone().map_err(|e| ClientError::Io {
            socket: shown.clone(),
            source: e,
        })?;
        let mut client = Self {
            socket: socket.to_path_buf(),
            reader: BufReader::new(stream),
            writer,
            next_id: 0,
            events: VecDeque::new(),
            hello: Hello {
                version: 0,
                agent: String::new(),
                pid: 0,
            },
        };
        client.hello = client.call(Request::Hello {
            version,
            client: Some(name.to_owned()),
        })?;
        Ok(client)
    }

    fn io(&self, source: std::io::Error) -> ClientError {
        ClientError::Io {
            socket: self.socket.display().to_string(),
            source,
        }
    }

    fn read_line(&mut self) -> Result<String, ClientError> {
        let mut line = String::new();
        let n = (&mut self.reader)
            .take(MAX_LINE as u64 * 16)
            .read_line(&mut line)
            .map_err(|e| self.io(e))?;
        if n == 0 {
            return Err(ClientError::Closed {
                socket: self.socket.display().to_string(),
            });
        }
        Ok(line)
    }

    /// Sends a request and waits for its reply, queueing events that arrive meanwhile.
    ///
    /// # Errors
    /// The agent refused (`Refused` with its `{code, message}`), or I/O.
    pub fn call<T: DeserializeOwned>(&mut self, request: Request) -> Result<T, ClientError> {
        // The request line may hold a token (`store`, `unlock`): zeroized once sent.
        self.next_id += 1;
        let id = self.next_id;
        let mut line = zeroize::Zeroizing::new(
            serde_json::to_string(&Envelope {
                id: Some(id),
                request,
            })
            .map_err(|e| ClientError::Protocol(e.to_string()))?,
        );
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| self.io(e))?;
        loop {
            // The reply may hold a token: zeroized once parsed.
            let text = zeroize::Zeroizing::new(self.read_line()?);
            if let Ok(ev) = serde_json::from_str::<EventLine>(&text) {
                self.events.push_back(ev.event);
                continue;
            }
            let reply: Reply = serde_json::from_str(&text)
                .map_err(|e| ClientError::Protocol(format!("column {}", e.column())))?;
            if reply.id.is_some() && reply.id != Some(id) {
                continue;
            }
            if !reply.ok {
                return Err(ClientError::Refused(reply.error.unwrap_or(ErrorBody::new(
                    ErrorCode::Other("unknown".into()),
                    "the agent refused without saying why",
                ))));
            }
            // Shape errors name the position only: the result may hold a token.
            return reply.result().map_err(|e| {
                ClientError::Protocol(format!("unexpected result (column {})", e.column()))
            });
        }
    }

    /// The next event (after `watch`/`approvals`), blocking for at most the read timeout
    /// the caller set with [`Client::set_timeout`] (none after [`Client::watch`]).
    ///
    /// # Errors
    /// The connection ended, timed out (`Io` with `WouldBlock`/`TimedOut`) or sent garbage.
    pub fn next_event(&mut self) -> Result<Event, ClientError> {
        if let Some(e) = self.events.pop_front() {
            return Ok(e);
        }
        loop {
            let text = self.read_line()?;
            if let Ok(ev) = serde_json::from_str::<EventLine>(&text) {
                return Ok(ev.event);
            }
        }
    }

    /// Sets how long a read may block (None = forever).
    pub fn set_timeout(&self, timeout: Option<Duration>) {
        let _ = self.reader.get_ref().set_read_timeout(timeout);
    }

    /// Every credential's state.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn status(&mut self) -> Result<Status, ClientError> {
        self.call(Request::Status {
            usage: false,
            usage_of: None,
        })
    }

    /// Every credential's state, with each Claude login's subscription usage (or `only`'s).
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn status_with_usage(&mut self, only: Option<&str>) -> Result<Status, ClientError> {
        match self.call(Request::Status {
            usage: true,
            usage_of: only.map(str::to_owned),
        }) {
            // An agent from before usage figures (same protocol version) refuses the field:
            // its plain status, with no figures, until it is restarted.
            Err(ClientError::Refused(e)) if e.code == ErrorCode::BadRequest => self.status(),
            other => other,
        }
    }

    /// The token of `name`.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn get(&mut self, name: &str) -> Result<Token, ClientError> {
        self.call(Request::Get {
            name: name.to_owned(),
        })
    }

    /// Stores `token` under `name`.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn store(&mut self, name: &str, token: Secret) -> Result<StoreOutcome, ClientError> {
        self.call(Request::Store {
            name: name.to_owned(),
            token: WireSecret(token),
        })
    }

    /// Removes the stored token; whether there was one.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn clear(&mut self, name: &str) -> Result<bool, ClientError> {
        self.call::<Cleared>(Request::Clear {
            name: name.to_owned(),
        })
        .map(|c| c.cleared)
    }

    /// Locks (`Some`) or unlocks the agent, with an optional passphrase.
    ///
    /// # Errors
    /// As [`Client::call`]; a wrong passphrase is `Refused` with `bad_passphrase`.
    pub fn set_locked(
        &mut self,
        locked: bool,
        passphrase: Option<Secret>,
    ) -> Result<bool, ClientError> {
        let passphrase = passphrase.map(WireSecret);
        let request = if locked {
            Request::Lock { passphrase }
        } else {
            Request::Unlock { passphrase }
        };
        self.call::<LockState>(request).map(|s| s.locked)
    }

    /// Registers a snapshot at `path`.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn snapshot(
        &mut self,
        name: &str,
        path: &str,
        include_refresh_token: bool,
    ) -> Result<String, ClientError> {
        self.call::<Written>(Request::Snapshot {
            name: name.to_owned(),
            path: path.to_owned(),
            include_refresh_token,
        })
        .map(|w| w.written)
    }

    /// Forgets the snapshot at `path`; whether it was registered.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn forget(&mut self, path: &str) -> Result<bool, ClientError> {
        self.call::<Forgotten>(Request::Forget {
            path: path.to_owned(),
        })
        .map(|f| f.forgotten)
    }

    /// Changes (and saves) run-time settings; the settings now in force.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn settings(&mut self, s: &Settings) -> Result<Settings, ClientError> {
        self.call(Request::Settings {
            notifications: Some(s.notifications),
            notify_on_access: Some(s.notify_on_access),
            expiry_thresholds: Some(s.expiry_thresholds.clone()),
        })
    }

    /// Subscribes this connection to events; reads then block until one arrives.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn watch(&mut self) -> Result<(), ClientError> {
        self.call::<Streaming>(Request::Watch {})?;
        self.set_timeout(None);
        Ok(())
    }

    /// Registers this connection as an approver.
    ///
    /// # Errors
    /// As [`Client::call`]; refused unless this executable is a configured approver.
    pub fn approvals(&mut self) -> Result<(), ClientError> {
        self.call::<Streaming>(Request::Approvals {})?;
        self.set_timeout(None);
        Ok(())
    }

    /// Creates (or replaces) a gateway grant.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn grant(
        &mut self,
        spec: &crate::domain::NewGrant,
    ) -> Result<crate::protocol::GrantIssued, ClientError> {
        self.call(Request::Grant {
            name: spec.name.clone(),
            credential: spec.credential.clone(),
            ttl_secs: spec.ttl.as_secs(),
            max_concurrent: spec.max_concurrent,
            daily_token_budget: spec.daily_token_budget,
        })
    }

    /// Every live grant.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn grants(&mut self) -> Result<Vec<crate::domain::GrantInfo>, ClientError> {
        self.call(Request::Grants {})
    }

    /// Revokes a grant; whether there was one.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn revoke(&mut self, name: &str) -> Result<bool, ClientError> {
        self.call::<crate::protocol::Revoked>(Request::Revoke {
            name: name.to_owned(),
        })
        .map(|r| r.revoked)
    }

    /// Answers an approval request.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn approve(&mut self, request: u64, decision: Decision) -> Result<(), ClientError> {
        self.call::<Delivered>(Request::Approve { request, decision })
            .map(drop)
    }
}
