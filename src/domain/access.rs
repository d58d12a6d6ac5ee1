//! One audited request: what was asked (`Op`), by whom, and how it ended (`AuditOutcome`). Both
//! are typed where code decides on them (a refused `get` notifies, refusals of strangers
//! go to their own file) and spelled as the plain words the audit log has always held, so
//! old lines read back unchanged.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{ErrorCode, Peer};

/// What was asked: a protocol request, or the agent's own work (a connection, a gateway
/// request, a refresh, a sink write).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Hello,
    Status,
    Get,
    Watch,
    Store,
    Clear,
    Lock,
    Unlock,
    Snapshot,
    Forget,
    Settings,
    Approvals,
    Approve,
    Grant,
    Grants,
    Revoke,
    Refresh,
    Usage,
    /// A connection, refused before any request (another uid).
    Connect,
    /// One request through the gateway, or a summary of refused ones.
    Gateway,
    /// A sink the agent keeps current.
    Sink,
    /// A request on the restricted socket (`remote-get`): the request's own op name.
    Remote(&'static str),
    /// An op a newer Keyferry wrote.
    Unknown,
}

const NAMED: [Op; 21] = [
    Op::Hello,
    Op::Status,
    Op::Get,
    Op::Watch,
    Op::Store,
    Op::Clear,
    Op::Lock,
    Op::Unlock,
    Op::Snapshot,
    Op::Forget,
    Op::Settings,
    Op::Approvals,
    Op::Approve,
    Op::Grant,
    Op::Grants,
    Op::Revoke,
    Op::Refresh,
    Op::Usage,
    Op::Connect,
    Op::Gateway,
    Op::Sink,
];

impl Op {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hello => "hello",
            Self::Status => "status",
            Self::Get => "get",
            Self::Watch => "watch",
            Self::Store => "store",
            Self::Clear => "clear",
            Self::Lock => "lock",
            Self::Unlock => "unlock",
            Self::Snapshot => "snapshot",
            Self::Forget => "forget",
            Self::Settings => "settings",
            Self::Approvals => "approvals",
            Self::Approve => "approve",
            Self::Grant => "grant",
            Self::Grants => "grants",
            Self::Revoke => "revoke",
            Self::Refresh => "refresh",
            Self::Usage => "usage",
            Self::Connect => "connect",
            Self::Gateway => "gateway",
            Self::Sink => "sink",
            Self::Remote(op) => op,
            Self::Unknown => "unknown",
        }
    }

    /// The same request, asked on the restricted socket.
    #[must_use]
    pub fn remote(self) -> Self {
        Self::Remote(self.as_str())
    }

    fn parse(s: &str) -> Self {
        if let Some(inner) = s.strip_prefix("remote-") {
            return match Self::parse(inner) {
                Self::Unknown => Self::Unknown,
                op => op.remote(),
            };
        }
        NAMED
            .into_iter()
            .find(|op| op.as_str() == s)
            .unwrap_or(Self::Unknown)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Remote(op) => write!(f, "remote-{op}"),
            _ => f.write_str(self.as_str()),
        }
    }
}

/// An op as the audit log spells it (`"get"`, `"remote-get"`).
impl From<&str> for Op {
    fn from(s: &str) -> Self {
        Self::parse(s)
    }
}

impl Serialize for Op {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Op {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| Self::parse(&s))
    }
}

/// How a request ended. `Allowed`, `Refused` and `Failed` are what code decides on; `Done`
/// is what happened, in words ("stored", "created box", "200 POST /v1/messages in=3 …").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditOutcome {
    Allowed,
    Refused,
    Failed,
    Done(String),
}

impl AuditOutcome {
    #[must_use]
    pub fn done(words: impl Into<String>) -> Self {
        Self::Done(words.into())
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Self::Allowed => "allowed",
            Self::Refused => "refused",
            Self::Failed => "failed",
            Self::Done(w) => w,
        }
    }

    fn parse(s: String) -> Self {
        match s.as_str() {
            "allowed" => Self::Allowed,
            "refused" => Self::Refused,
            "failed" => Self::Failed,
            _ => Self::Done(s),
        }
    }
}

impl fmt::Display for AuditOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An outcome as the audit log spells it.
impl From<&str> for AuditOutcome {
    fn from(s: &str) -> Self {
        Self::parse(s.to_owned())
    }
}

impl Serialize for AuditOutcome {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for AuditOutcome {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::parse)
    }
}

/// One served or refused request, as the audit log and the tray show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Access {
    pub ts: String,
    pub op: Op,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    pub outcome: AuditOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
    pub peer: Peer,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_words_of_old_lines_read_back_typed() {
        let line = r#"{"ts":"2026-01-01T00:00:00Z","op":"get","credential":"claude","outcome":"refused","code":"forbidden","peer":{"uid":1,"pid":2,"exe":"/bin/x"}}"#;
        let a: Access = serde_json::from_str(line).unwrap();
        assert_eq!((a.op, &a.outcome), (Op::Get, &AuditOutcome::Refused));
        assert_eq!(serde_json::to_string(&a).unwrap(), line);
        let g: Access = serde_json::from_str(
            r#"{"ts":"t","op":"gateway","outcome":"200 POST /v1/messages in=1","peer":{"uid":1}}"#,
        )
        .unwrap();
        assert_eq!(g.outcome, AuditOutcome::done("200 POST /v1/messages in=1"));
        let later: Access =
            serde_json::from_str(r#"{"ts":"t","op":"teleport","outcome":"ok","peer":{"uid":1}}"#)
                .unwrap();
        assert_eq!(later.op, Op::Unknown);
        let r: Access = serde_json::from_str(
            r#"{"ts":"t","op":"remote-get","outcome":"answered","peer":{"uid":1}}"#,
        )
        .unwrap();
        assert_eq!(r.op, Op::Get.remote());
        assert_eq!(r.op.to_string(), "remote-get");
        for op in NAMED {
            assert_eq!(Op::parse(&op.to_string()), op);
        }
    }
}
