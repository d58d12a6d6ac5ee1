//! The agent client: connect, check the agent is ours, handshake, call, read events.
//! Blocking I/O: the CLI makes one or two calls and exits.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::error::ErrorBody;
use crate::protocol::{Envelope, Event, EventLine, Hello, Reply, Request, MAX_LINE, VERSION};

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
    pub fn code(&self) -> &str {
        match self {
            Self::NotRunning { .. } => "no_agent",
            Self::ForeignAgent { .. } => "foreign_agent",
            Self::Io { .. } | Self::Closed { .. } => "io",
            Self::Protocol(_) => "protocol",
            Self::Refused(e) => &e.code,
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
        let uid = crate::agent::peer::uid_of(&stream).map_err(|e| ClientError::Io {
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
        self.next_id += 1;
        let id = self.next_id;
        let mut line = serde_json::to_string(&Envelope {
            id: Some(id),
            request,
        })
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| self.io(e))?;
        loop {
            let text = self.read_line()?;
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
                return Err(ClientError::Refused(reply.error.unwrap_or(ErrorBody {
                    code: "unknown".into(),
                    message: "the agent refused without saying why".into(),
                })));
            }
            return serde_json::from_value(reply.result.unwrap_or_default())
                .map_err(|e| ClientError::Protocol(e.to_string()));
        }
    }

    /// The next event (after `watch`/`approvals`), blocking.
    ///
    /// # Errors
    /// The connection ended or sent garbage.
    pub fn next_event(&mut self) -> Result<Event, ClientError> {
        if let Some(e) = self.events.pop_front() {
            return Ok(e);
        }
        let _ = self.writer.set_read_timeout(None);
        let _ = self.reader.get_ref().set_read_timeout(None);
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
}
