//! Protocol v1: newline-delimited JSON between the agent and its clients (CLI, tray, scripts).
//! One definition for both ends. Documented for other client authors in `docs/protocol.md`.
//!
//! A connection starts with `hello`; every reply is `{"ok":true,"result":…}` or
//! `{"ok":false,"error":{"code","message"}}`, echoing the request's optional `id`.
//! After `watch` (or `approvals`) the agent streams `{"event":…}` lines.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::domain::{
    Access, ApprovalRequest, CredentialStatus, CredentialUsage, Decision, ErrorBody, GrantInfo,
    SinkStatus,
};
use crate::secret::Secret;

/// Bumped on any incompatible change; the handshake compares it exactly.
pub const VERSION: u32 = 1;
/// Longest accepted request line; longer lines are refused and the connection closed.
pub const MAX_LINE: usize = 64 * 1024;

/// A token on the wire. `Serialize` here is the protocol's one place a secret is written;
/// `Debug` stays redacted.
#[derive(Clone)]
pub struct WireSecret(pub Secret);

impl fmt::Debug for WireSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl Serialize for WireSecret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.expose())
    }
}

impl<'de> Deserialize<'de> for WireSecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| Self(Secret::new(s)))
    }
}

/// A request line: `{"op":"get","name":"claude","id":7}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(flatten)]
    pub request: Request,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Must come first. `version` must equal the agent's [`VERSION`].
    Hello {
        version: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<String>,
    },
    /// Every credential's state; no secrets. `usage`: also each Claude login's subscription
    /// usage (fetched at most every 5 minutes; a slow endpoint is waited for a few seconds).
    Status {
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        usage: bool,
        /// With `usage`: only this credential's figures (no call, no audit entry for others).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage_of: Option<String>,
    },
    /// The token of one credential.
    Get { name: String },
    /// Stream of [`Event`]s until the client disconnects.
    Watch {},
    /// Store a token in the credential's keychain item (as `keyferry setup`).
    Store { name: String, token: WireSecret },
    /// Remove the stored token.
    Clear { name: String },
    /// Refuse every `get` until `unlock`; an optional passphrase must then be repeated.
    Lock {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        passphrase: Option<WireSecret>,
    },
    Unlock {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        passphrase: Option<WireSecret>,
    },
    /// Write a credentials snapshot to `path` now and keep it current.
    Snapshot {
        name: String,
        path: String,
        #[serde(default)]
        include_refresh_token: bool,
    },
    /// Stop keeping the snapshot at `path` current.
    Forget { path: String },
    /// Change the agent's notification settings now and save them in config.toml.
    Settings {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        notifications: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        notify_on_access: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expiry_thresholds: Option<Vec<String>>,
    },
    /// Become an approver: receive `approval` events for `ask`-policy requests.
    Approvals {},
    /// Answer an approval request.
    Approve { request: u64, decision: Decision },
    /// Create (or replace) a gateway grant on `credential` for `ttl_secs`.
    Grant {
        name: String,
        credential: String,
        ttl_secs: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_concurrent: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        daily_token_budget: Option<u64>,
    },
    /// Every live grant with its usage.
    Grants {},
    /// Revoke a grant now.
    Revoke { name: String },
    /// Subscription usage (5-hour and 7-day utilisation) of a Claude login.
    Usage { name: String },
    /// Refresh Claude Code's login now (or say what would happen).
    Refresh {
        name: String,
        #[serde(default)]
        dry_run: bool,
    },
}

impl Request {
    #[must_use]
    pub fn op(&self) -> crate::domain::Op {
        use crate::domain::Op;
        match self {
            Self::Hello { .. } => Op::Hello,
            Self::Status { .. } => Op::Status,
            Self::Get { .. } => Op::Get,
            Self::Watch {} => Op::Watch,
            Self::Store { .. } => Op::Store,
            Self::Clear { .. } => Op::Clear,
            Self::Lock { .. } => Op::Lock,
            Self::Unlock { .. } => Op::Unlock,
            Self::Snapshot { .. } => Op::Snapshot,
            Self::Forget { .. } => Op::Forget,
            Self::Settings { .. } => Op::Settings,
            Self::Approvals {} => Op::Approvals,
            Self::Approve { .. } => Op::Approve,
            Self::Grant { .. } => Op::Grant,
            Self::Grants {} => Op::Grants,
            Self::Revoke { .. } => Op::Revoke,
            Self::Refresh { .. } => Op::Refresh,
            Self::Usage { .. } => Op::Usage,
        }
    }
}

/// A reply line as a client reads it: the result stays raw JSON text until the caller says
/// which typed result it expects (see [`Reply::result`]).
#[derive(Debug, Deserialize)]
pub struct Reply {
    #[serde(default)]
    pub id: Option<u64>,
    pub ok: bool,
    #[serde(default)]
    result: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    pub error: Option<ErrorBody>,
}

impl Reply {
    /// The typed result of a successful reply.
    ///
    /// # Errors
    /// The result does not have the expected shape (names the column, never the value).
    pub fn result<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        let raw = self
            .result
            .as_deref()
            .map_or("null", serde_json::value::RawValue::get);
        serde_json::from_str(raw)
    }
}

/// `grant`'s result: what a sandbox needs, shown once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrantIssued {
    pub grant: GrantInfo,
    /// `ANTHROPIC_BASE_URL` for the sandbox.
    pub base_url: String,
    /// The gateway's Unix socket, for sandboxes without a network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unix_socket: Option<String>,
    /// `ANTHROPIC_AUTH_TOKEN` for the sandbox: a placeholder, not the token.
    pub placeholder: WireSecret,
    /// A grant of that name existed and was replaced: its placeholder is refused now.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replaced: bool,
    /// The provider whose CLI the grant serves (`anthropic`, `openai`, `google`): it
    /// decides what the sandbox is given. Older agents send none: Anthropic's.
    #[serde(default = "anthropic")]
    pub provider: String,
}

fn anthropic() -> String {
    "anthropic".to_owned()
}

/// `refresh`'s result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RefreshReport {
    pub name: String,
    /// What happened (or would), in words.
    pub outcome: String,
    pub needs_login: bool,
}

/// `revoke`'s result.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Revoked {
    pub revoked: bool,
}

/// `clear`'s result.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Cleared {
    pub cleared: bool,
}

/// `lock`'s and `unlock`'s result.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockState {
    pub locked: bool,
}

/// `snapshot`'s result: the path written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Written {
    pub written: String,
}

/// `forget`'s result.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Forgotten {
    pub forgotten: bool,
}

/// `approve`'s result.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Delivered {
    pub delivered: bool,
}

/// `watch`'s and `approvals`' result: the connection now streams events.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Streaming {
    Watching,
    Approving,
}

/// A reply serialized straight from a typed result (the agent's hot path: no
/// intermediate `Value`).
#[derive(Serialize)]
struct ReplyOut<'a, T: Serialize> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a ErrorBody>,
}

/// `{"id":…,"ok":true,"result":…}` as one line (without the newline).
#[must_use]
pub fn ok_line<T: Serialize>(id: Option<u64>, result: &T) -> String {
    serde_json::to_string(&ReplyOut {
        id,
        ok: true,
        result: Some(result),
        error: None,
    })
    .unwrap_or_default()
}

/// `{"id":…,"ok":false,"error":{"code","message"}}` as one line.
#[must_use]
pub fn err_line(id: Option<u64>, error: &ErrorBody) -> String {
    serde_json::to_string(&ReplyOut::<()> {
        id,
        ok: false,
        result: None,
        error: Some(error),
    })
    .unwrap_or_default()
}

/// `hello`'s result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Hello {
    pub version: u32,
    pub agent: String,
    pub pid: u32,
}

/// `get`'s result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Token {
    pub name: String,
    pub source: String,
    pub kind: crate::credential::Kind,
    pub env_var: String,
    pub token: WireSecret,
    pub expires_at: Option<String>,
}

/// `status`'s result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub agent: Hello,
    pub locked: bool,
    pub uptime_secs: u64,
    pub credentials: Vec<CredentialStatus>,
    #[serde(default)]
    pub last_access: Option<Access>,
    /// How many times credentials were re-resolved since start (watch-loop diagnostics).
    #[serde(default)]
    pub resolutions: u64,
    /// Every sink the agent keeps current, with the last failure if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sinks: Vec<SinkStatus>,
    /// Each Claude credential's subscription usage, when asked for (`usage: true`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usage: Vec<CredentialUsage>,
    /// Each configured gateway listener and its state (`listening`, `waiting`, `closed`,
    /// `failed`), in config order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<crate::domain::ListenerInfo>,
}

/// Streamed after `watch` as `{"event":{"kind":…}}`. Never carries a secret.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    Changed {
        status: CredentialStatus,
    },
    Expiring {
        name: String,
        expires_at: String,
        expires_in: String,
        threshold: String,
    },
    Expired {
        name: String,
        expires_at: String,
    },
    Rerolled {
        name: String,
        fingerprint: String,
    },
    Cleared {
        name: String,
    },
    Locked,
    Unlocked,
    Access {
        access: Access,
    },
    Approval {
        approval: ApprovalRequest,
    },
    /// A sink (`.env`, snapshot) was rewritten with the current token.
    SinkWritten {
        name: String,
        path: String,
    },
    /// A sink could not be written.
    SinkFailed {
        name: String,
        path: String,
        error: ErrorBody,
    },
    /// A desktop notification was sent; `shown` is false when no notification service
    /// took it (the text is then only in the log and here).
    Notified {
        summary: String,
        body: String,
        shown: bool,
    },
    /// Keyferry refreshed Claude Code's login; every sink and the gateway already follow.
    Refreshed {
        name: String,
        expires_at: String,
        /// From the written-back login to the last sink rewritten, in microseconds.
        followed_us: u64,
    },
    /// The refresh token was refused: only `claude /login` helps.
    NeedsLogin {
        name: String,
        message: String,
    },
    /// The subscriber fell behind and missed this many events; re-read `status`.
    Lagged {
        missed: u64,
    },
}

/// The line wrapper for events.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventLine {
    pub event: Event,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_from_hand_written_json() {
        let e: Envelope = serde_json::from_str(r#"{"op":"get","name":"claude","id":3}"#).unwrap();
        assert_eq!(e.id, Some(3));
        assert!(matches!(e.request, Request::Get { ref name } if name == "claude"));
        let e: Envelope = serde_json::from_str(r#"{"op":"hello","version":1}"#).unwrap();
        assert!(matches!(e.request, Request::Hello { version: 1, .. }));
        assert!(serde_json::from_str::<Envelope>(r#"{"op":"launch_missiles"}"#).is_err());
        let e: Envelope = serde_json::from_str(r#"{"op":"status"}"#).unwrap();
        assert!(matches!(
            e.request,
            Request::Status {
                usage: false,
                usage_of: None,
            }
        ));
        assert!(serde_json::from_str::<Envelope>(r#"{"op":"status","verbose":true}"#).is_err());
        assert_eq!(
            serde_json::to_string(&Request::Watch {}).unwrap(),
            r#"{"op":"watch"}"#
        );
    }

    #[test]
    fn secrets_on_the_wire_are_redacted_in_debug() {
        let r = Request::Store {
            name: "claude".into(),
            token: WireSecret(Secret::new("sk-ant-oat01-WIRE".into())),
        };
        assert!(!format!("{r:?}").contains("WIRE"));
        assert!(serde_json::to_string(&r)
            .unwrap()
            .contains("sk-ant-oat01-WIRE"));
    }

    #[test]
    fn typed_reply_lines_parse_as_replies() {
        let line = ok_line(
            Some(7),
            &Hello {
                version: 1,
                agent: "a".into(),
                pid: 2,
            },
        );
        let r: Reply = serde_json::from_str(&line).unwrap();
        assert!(r.ok && r.id == Some(7));
        assert_eq!(r.result::<Hello>().unwrap().pid, 2);
        assert!(r.result::<Status>().is_err());
        let e = ErrorBody::new(crate::domain::ErrorCode::Other("x".into()), "y");
        let r: Reply = serde_json::from_str(&err_line(None, &e)).unwrap();
        assert_eq!(r.error, Some(e));
        assert!(r.id.is_none() && !r.ok);
    }

    #[test]
    fn events_are_tagged_by_kind() {
        let line = serde_json::to_string(&EventLine {
            event: Event::Locked,
        })
        .unwrap();
        assert_eq!(line, r#"{"event":{"kind":"locked"}}"#);
    }

    #[test]
    fn acknowledgements_keep_their_v1_wire_form() {
        assert_eq!(
            ok_line(Some(1), &Streaming::Watching),
            r#"{"id":1,"ok":true,"result":"watching"}"#
        );
        assert_eq!(
            ok_line(None, &Cleared { cleared: true }),
            r#"{"ok":true,"result":{"cleared":true}}"#
        );
    }
}
