//! Domain types shared by the agent, its clients and the tray: a credential's status and
//! health, who asked (peer) and what was served (access), settings, approvals, and the typed
//! `{code, message}` error with its code enum. No I/O; wire framing lives in `protocol`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod access;
mod credential;
pub use access::{Access, AuditOutcome, Op};
pub use credential::{rfc3339, Expiry, Inspection, Kind};

macro_rules! error_codes {
    ($($variant:ident = $text:literal => $exit:ident,)*) => {
        /// Every error code the agent and the library give. Unknown codes (from a newer
        /// agent) are kept as [`ErrorCode::Other`] instead of failing the reply.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($variant,)*
            Other(String),
        }

        impl ErrorCode {
            #[must_use]
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)*
                    Self::Other(s) => s,
                }
            }

            #[must_use]
            pub fn parse(text: &str) -> Self {
                match text {
                    $($text => Self::$variant,)*
                    other => Self::Other(other.to_owned()),
                }
            }

            /// The CLI's exit status for this error (documented in the README).
            #[must_use]
            pub fn exit_status(&self) -> i32 {
                match self {
                    $(Self::$variant => exit::$exit,)*
                    Self::Other(_) => exit::ERROR,
                }
            }
        }
    };
}

error_codes! {
    NotFound = "not_found" => NOT_FOUND,
    UnknownCredential = "unknown_credential" => ERROR,
    Expired = "expired" => ERROR,
    NoAgent = "no_agent" => NO_AGENT,
    AgentLocked = "agent_locked" => REFUSED,
    NotAllowed = "not_allowed" => REFUSED,
    ApprovalRequired = "approval_required" => REFUSED,
    ApprovalTimeout = "approval_timeout" => REFUSED,
    Denied = "denied" => REFUSED,
    ForbiddenUser = "forbidden_user" => REFUSED,
    ForbiddenOp = "forbidden_op" => REFUSED,
    SandboxedPeer = "sandboxed_peer" => REFUSED,
    ForeignAgent = "foreign_agent" => REFUSED,
    BadPassphrase = "bad_passphrase" => REFUSED,
    NotAnApprover = "not_an_approver" => REFUSED,
    NoSuchRequest = "no_such_request" => ERROR,
    KeychainLocked = "keychain_locked" => KEYCHAIN,
    KeychainUnavailable = "keychain_unavailable" => KEYCHAIN,
    KeychainDenied = "keychain_denied" => KEYCHAIN,
    KeychainAmbiguous = "keychain_ambiguous" => KEYCHAIN,
    KeychainBadData = "keychain_bad_data" => KEYCHAIN,
    KeychainUnwritable = "keychain_unwritable" => KEYCHAIN,
    KeychainError = "keychain_error" => KEYCHAIN,
    Malformed = "malformed" => ERROR,
    Unreadable = "unreadable" => ERROR,
    UnsafeFile = "unsafe_file" => ERROR,
    NotCredentials = "not_credentials" => ERROR,
    ConfigSink = "config_sink" => ERROR,
    Unsupported = "unsupported" => ERROR,
    WriteFailed = "write_failed" => ERROR,
    Config = "config" => ERROR,
    Invalid = "invalid" => ERROR,
    GatewayDown = "gateway_down" => ERROR,
    NeedsLogin = "needs_login" => ERROR,
    NoUsageScope = "usage_no_profile_scope" => ERROR,
    // The refresher's failures (events, audit entries, `refresh` replies).
    RefreshRejected = "refresh_rejected" => ERROR,
    RefreshTimeout = "refresh_timeout" => ERROR,
    RefreshBadAnswer = "refresh_bad_answer" => ERROR,
    RefreshUnavailable = "refresh_unavailable" => ERROR,
    LoginUnreadable = "login_unreadable" => ERROR,
    WritebackFailed = "writeback_failed" => ERROR,
    CliRefreshing = "cli_refreshing" => ERROR,
    JournalFailed = "journal_failed" => ERROR,
    UsageUnavailable = "usage_unavailable" => ERROR,
    NoSuchGrant = "no_such_grant" => ERROR,
    ProvisionFailed = "provision_failed" => ERROR,
    RerollFailed = "reroll_failed" => ERROR,
    BadRequest = "bad_request" => ERROR,
    HandshakeRequired = "handshake_required" => ERROR,
    VersionMismatch = "version_mismatch" => ERROR,
    LineTooLong = "line_too_long" => ERROR,
    IdleTimeout = "idle_timeout" => ERROR,
    Protocol = "protocol" => ERROR,
    Io = "io" => ERROR,
    Internal = "internal" => ERROR,
}

impl ErrorCode {
    /// Any keychain failure (exit 4).
    #[must_use]
    pub fn is_keychain(&self) -> bool {
        self.exit_status() == exit::KEYCHAIN
    }
}

/// Comparing with the wire spelling (`code == "agent_locked"`), for clients and tests.
impl PartialEq<str> for ErrorCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(Self::parse(&text))
    }
}

/// Exit statuses, documented in the README.
pub mod exit {
    pub const OK: i32 = 0;
    pub const ERROR: i32 = 1;
    pub const USAGE: i32 = 2;
    /// No token found: cfauth's soft failure.
    pub const NOT_FOUND: i32 = 3;
    /// The keychain is locked, unavailable or denied access.
    pub const KEYCHAIN: i32 = 4;
    /// `--require-agent` and no agent answers.
    pub const NO_AGENT: i32 = 5;
    /// The agent refused: policy, lock, or another user.
    pub const REFUSED: i32 = 6;
    /// `exec`: the command exists but cannot be run (as a shell exits).
    pub const NOT_EXECUTABLE: i32 = 126;
    /// `exec`: no such command (as a shell exits).
    pub const COMMAND_NOT_FOUND: i32 = 127;
}

/// The wire and UI form of any error: a code and a message that names the fix.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorBody {
    #[must_use]
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ErrorBody {}

/// Health of one credential, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Ok,
    Expiring,
    Missing,
    Error,
    Expired,
}

/// One credential in `status` and `changed` events.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CredentialStatus {
    pub name: String,
    pub health: Health,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inspection: Option<Inspection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// What `setup` found in the keychain item before writing it, by fingerprint only.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Previous {
    /// The item was empty.
    Empty,
    /// It held this very token: nothing changed, its first-seen time is kept.
    Same,
    /// It held another token, now replaced.
    Replaced { fingerprint: String },
}

/// The `store` reply: the credential's status and what the item held before. `previous` is
/// absent from older agents and when the item could not be read first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoreOutcome {
    #[serde(flatten)]
    pub status: CredentialStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Previous>,
}

/// Who is on the other end of a connection, from the kernel.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub pid: Option<i32>,
    pub exe: Option<String>,
    /// Set when the peer runs in a sandbox (other namespaces than the agent's, or a macOS
    /// sandbox profile); `None` for a process on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxKind>,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exe = self.exe.as_deref().unwrap_or("unknown executable");
        match self.pid {
            Some(pid) => write!(f, "{exe} (pid {pid}, uid {}", self.uid)?,
            None => write!(f, "{exe} (uid {}", self.uid)?,
        }
        match self.sandbox {
            Some(kind) => write!(f, ", in a {} sandbox)", kind.label()),
            None => f.write_str(")"),
        }
    }
}

/// What kind of sandbox a peer runs in, as far as the agent can tell from outside it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum SandboxKind {
    Bubblewrap,
    Flatpak,
    /// toolbox or distrobox: a container that is the user's own workspace.
    Toolbox,
    Docker,
    Podman,
    /// macOS Seatbelt / App Sandbox.
    Seatbelt,
    /// Other namespaces (`unshare`, an unknown runtime) or namespaces that could not be read.
    Unknown,
}

impl SandboxKind {
    pub const ALL: [Self; 7] = [
        Self::Bubblewrap,
        Self::Flatpak,
        Self::Toolbox,
        Self::Docker,
        Self::Podman,
        Self::Seatbelt,
        Self::Unknown,
    ];

    /// The config spelling (`sandboxed_peers = ["toolbox"]`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bubblewrap => "bubblewrap",
            Self::Flatpak => "flatpak",
            Self::Toolbox => "toolbox",
            Self::Docker => "docker",
            Self::Podman => "podman",
            Self::Seatbelt => "seatbelt",
            Self::Unknown => "unknown",
        }
    }

    /// How a person names it.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Bubblewrap => "bubblewrap",
            Self::Flatpak => "Flatpak",
            Self::Toolbox => "toolbox/distrobox",
            Self::Docker => "Docker",
            Self::Podman => "Podman",
            Self::Seatbelt => "macOS (Seatbelt)",
            Self::Unknown => "unknown",
        }
    }

    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// The settings a client may change at run time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Settings {
    pub notifications: bool,
    pub notify_on_access: bool,
    pub expiry_thresholds: Vec<String>,
}

/// An `ask`-policy request waiting for an approver.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApprovalRequest {
    pub request: u64,
    pub credential: String,
    pub peer: Peer,
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    AllowOnce,
    AlwaysAllow,
    Deny,
}

/// The state of one sink (a `.env` key or a snapshot the agent keeps current).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SinkStatus {
    pub credential: String,
    pub path: String,
    /// `dotenv` or `snapshot`.
    pub kind: String,
    /// The last write failed (and why); `None` after a good write or before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_at: Option<String>,
}

/// One gateway listener's state, as `status` and `doctor` show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ListenerState {
    /// Bound and accepting at `url`.
    Listening { url: String },
    /// Not bindable yet (the address is not on this machine, the port is taken): retried.
    Waiting { reason: String },
    /// A TCP listener with no grant to serve: no port is open.
    Closed,
    /// Will not be retried (a bad socket directory, an unspecified address).
    Failed { reason: String },
}

/// A configured listen address and its state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ListenerInfo {
    pub listen: String,
    #[serde(flatten)]
    pub state: ListenerState,
}

impl fmt::Display for ListenerInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            ListenerState::Listening { url } => write!(f, "listening {url}"),
            ListenerState::Waiting { reason } => {
                write!(f, "waiting {} ({reason}; retrying)", self.listen)
            }
            ListenerState::Closed => write!(f, "closed {} (no grants)", self.listen),
            ListenerState::Failed { reason } => write!(f, "failed {}: {reason}", self.listen),
        }
    }
}

/// A gateway grant as `grants` lists it: never its placeholder.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GrantInfo {
    pub name: String,
    pub credential: String,
    pub created: String,
    pub expires: String,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_use: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_token_budget: Option<u64>,
    /// Use per UTC hour over the last 7 days, oldest first (hours without use left out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HourUse>,
}

/// One hour of a grant's use.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HourUse {
    /// The hour's start, RFC 3339.
    pub hour: String,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
}

/// One subscription rate-limit window (`/api/oauth/usage`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageWindow {
    /// Percent of the window used (0–100, may exceed 100 when over the limit).
    pub utilization: f64,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub resets_at: Option<time::OffsetDateTime>,
}

/// A Claude login's subscription usage; a window the server does not report is `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionUsage {
    pub five_hour: Option<UsageWindow>,
    pub seven_day: Option<UsageWindow>,
}

impl SubscriptionUsage {
    /// `(label, window)` for each reported window, shortest first.
    pub fn windows(&self) -> impl Iterator<Item = (&'static str, &UsageWindow)> {
        [("5-hour", &self.five_hour), ("7-day", &self.seven_day)]
            .into_iter()
            .filter_map(|(label, w)| Some((label, w.as_ref()?)))
    }

    /// One line per window: `5-hour: 42% used, resets 2026-12-01T12:00:00Z`.
    #[must_use]
    pub fn lines(&self) -> Vec<String> {
        self.windows()
            .map(|(label, w)| {
                let resets = w
                    .resets_at
                    .and_then(rfc3339)
                    .map(|r| format!(", resets {r}"))
                    .unwrap_or_default();
                format!("{label}: {:.0}% used{resets}", w.utilization)
            })
            .collect()
    }
}

/// Usage figures, or why there are none (a setup-token lacks `user:profile`; the endpoint
/// failed or has not answered yet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageState {
    Known(SubscriptionUsage),
    Unavailable(ErrorBody),
}

/// One credential's usage in `status` when asked for (`{"op":"status","usage":true}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CredentialUsage {
    pub name: String,
    #[serde(flatten)]
    pub state: UsageState,
}

/// What a new grant is made of.
#[derive(Clone, Debug)]
pub struct NewGrant {
    pub name: String,
    pub credential: String,
    pub ttl: std::time::Duration,
    pub max_concurrent: Option<u32>,
    pub daily_token_budget: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_codes_are_kept() {
        let c: ErrorCode = serde_json::from_str(r#""agent_locked""#).unwrap();
        assert_eq!(c, ErrorCode::AgentLocked);
        assert_eq!(serde_json::to_string(&c).unwrap(), r#""agent_locked""#);
        let future: ErrorCode = serde_json::from_str(r#""quantum_flux""#).unwrap();
        assert_eq!(future, ErrorCode::Other("quantum_flux".into()));
        assert_eq!(serde_json::to_string(&future).unwrap(), r#""quantum_flux""#);
        assert_eq!(future.exit_status(), exit::ERROR);
    }

    #[test]
    fn exit_statuses_follow_the_code() {
        assert_eq!(ErrorCode::NotFound.exit_status(), exit::NOT_FOUND);
        assert_eq!(ErrorCode::NoAgent.exit_status(), exit::NO_AGENT);
        assert_eq!(ErrorCode::Denied.exit_status(), exit::REFUSED);
        assert_eq!(ErrorCode::KeychainLocked.exit_status(), exit::KEYCHAIN);
        assert!(ErrorCode::KeychainDenied.is_keychain());
        assert_eq!(ErrorCode::Expired.exit_status(), exit::ERROR);
    }

    #[test]
    fn health_orders_worst_last() {
        assert!(Health::Expired > Health::Error);
        assert!(Health::Expiring > Health::Ok);
    }

    #[test]
    fn usage_has_a_flat_typed_wire_form() {
        let known = CredentialUsage {
            name: "claude".into(),
            state: UsageState::Known(SubscriptionUsage {
                five_hour: Some(UsageWindow {
                    utilization: 37.0,
                    resets_at: Some(time::macros::datetime!(2026-12-01 11:00 UTC)),
                }),
                seven_day: None,
            }),
        };
        let text = serde_json::to_string(&known).unwrap();
        assert_eq!(
            text,
            r#"{"name":"claude","known":{"five_hour":{"utilization":37.0,"resets_at":"2026-12-01T11:00:00Z"},"seven_day":null}}"#
        );
        assert_eq!(
            serde_json::from_str::<CredentialUsage>(&text).unwrap(),
            known
        );
        let UsageState::Known(u) = &known.state else {
            unreachable!()
        };
        assert_eq!(u.lines(), ["5-hour: 37% used, resets 2026-12-01T11:00:00Z"]);
        let none = CredentialUsage {
            name: "claude".into(),
            state: UsageState::Unavailable(ErrorBody::new(ErrorCode::Unsupported, "no scope")),
        };
        let text = serde_json::to_string(&none).unwrap();
        assert!(
            text.contains(r#""unavailable":{"code":"unsupported""#),
            "{text}"
        );
        assert_eq!(
            serde_json::from_str::<CredentialUsage>(&text).unwrap(),
            none
        );
    }
}
