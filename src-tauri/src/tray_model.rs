//! The tray's logic, free of any GUI toolkit: the state the tray keeps from the agent's
//! events, the menu it shows (lines, labels, enabled states), the icon state, countdown and
//! "2 min ago" texts, and the window's view. The Tauri side only turns [`MenuModel`] into
//! menu items and [`IconState`] into an image.
//!
//! Written to move verbatim into the library as `src/tray.rs`: replace `keyferry::` with
//! `crate::` and add `pub mod tray;` to `lib.rs`. Depends only on the protocol and
//! credential types, serde and time.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use keyferry::credential::{human_duration, Credential, Kind};
use keyferry::protocol::{Access, ApprovalRequest, CredentialStatus, Event, Health, Peer, Status};
use keyferry::secret::Secret;

/// How many access records the window's log keeps.
pub const RECENT_MAX: usize = 50;

/// Below this, "ago" reads "just now".
const JUST_NOW_SECS: i64 = 5;

// ---- icon ---------------------------------------------------------------------------------

/// The tray icon: the worst state over every credential, or `Locked` while serving is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IconState {
    Ok,
    Expiring,
    Expired,
    Locked,
}

impl IconState {
    /// `Locked` wins; otherwise the worst health, where `Error` counts as `Expired` and a
    /// `Missing` credential (a CLI this user does not use) counts for nothing — unless every
    /// credential is missing, when nothing can be served. Nothing known yet is `Ok`.
    #[must_use]
    pub fn of<'a>(
        credentials: impl IntoIterator<Item = &'a CredentialStatus>,
        locked: bool,
    ) -> Self {
        if locked {
            return Self::Locked;
        }
        let (mut worst, mut seen, mut found) = (Self::Ok, false, false);
        for c in credentials {
            seen = true;
            let state = match c.health {
                Health::Ok => Self::Ok,
                Health::Expiring => Self::Expiring,
                Health::Expired | Health::Error => Self::Expired,
                Health::Missing => continue,
            };
            found = true;
            worst = worst.max(state);
        }
        if seen && !found {
            return Self::Expired;
        }
        worst
    }

    /// The icon file's stem: `icons/tray/<stem>.png`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Expiring => "expiring",
            Self::Expired => "expired",
            Self::Locked => "locked",
        }
    }
}

// ---- texts --------------------------------------------------------------------------------

/// How fine a countdown is written: the menu rounds to minutes (so it need not redraw every
/// second), the window shows seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Minutes,
    Seconds,
}

fn duration_text(secs: i64, precision: Precision) -> String {
    if precision == Precision::Minutes && secs.abs() < 60 {
        return "less than 1 min".to_owned();
    }
    human_duration(secs.abs())
}

/// "expires in 3 d 4 h", "expired 2 h ago", "no expiry".
#[must_use]
pub fn expiry_text(secs_left: Option<i64>, precision: Precision) -> String {
    match secs_left {
        None => "no expiry".to_owned(),
        Some(s) if s >= 0 => format!("expires in {}", duration_text(s, precision)),
        Some(s) => format!("expired {} ago", duration_text(s, precision)),
    }
}

/// "just now", "2 min ago", "3 d 4 h ago".
#[must_use]
pub fn ago_text(secs_ago: i64, precision: Precision) -> String {
    let limit = match precision {
        Precision::Minutes => 60,
        Precision::Seconds => JUST_NOW_SECS,
    };
    if secs_ago < limit {
        "just now".to_owned()
    } else {
        format!("{} ago", human_duration(secs_ago))
    }
}

/// Seconds until a text written with [`human_duration`] for `secs` changes, where `secs`
/// is a time left (`decreasing` as time passes, negative once past) or an age (growing).
/// Drives the one timer that keeps the menu's countdowns current without polling.
#[must_use]
pub fn text_changes_in(secs: i64, decreasing: bool, precision: Precision) -> i64 {
    let v = secs.abs();
    let unit = match v {
        v if v >= 86_400 => 3_600,
        v if v >= 60 => 60,
        _ if precision == Precision::Minutes => 60,
        _ => 1,
    };
    match (decreasing, secs) {
        // "expires in …" becomes "expired … ago".
        (true, 0) => 1,
        (true, s) if s > 0 => v % unit + 1,
        _ => unit - v % unit,
    }
}

fn parse_ts(ts: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(ts, &Rfc3339).ok()
}

/// Seconds until this credential expires (negative once expired), from `expires_at` so the
/// countdown is exact for any `now`; falls back to the agent's own count.
#[must_use]
pub fn seconds_left(status: &CredentialStatus, now: OffsetDateTime) -> Option<i64> {
    let i = status.inspection.as_ref()?;
    i.expires_at
        .as_deref()
        .and_then(parse_ts)
        .map(|at| (at - now).whole_seconds())
        .or(i.expires_in_secs)
}

/// "ok", "expiring", "missing", "error", "expired".
#[must_use]
pub fn health_word(h: Health) -> &'static str {
    match h {
        Health::Ok => "ok",
        Health::Expiring => "expiring",
        Health::Missing => "missing",
        Health::Error => "error",
        Health::Expired => "expired",
    }
}

/// A credential's tray line: `claude: ok · expires in 3 d 4 h · keychain:cf-claude-token`.
#[must_use]
pub fn credential_line(s: &CredentialStatus, now: OffsetDateTime, precision: Precision) -> String {
    match (&s.source, &s.inspection) {
        (Some(source), Some(_)) => format!(
            "{}: {} · {} · {source}",
            s.name,
            health_word(s.health),
            expiry_text(seconds_left(s, now), precision)
        ),
        _ if s.health == Health::Missing => format!("{}: not found", s.name),
        _ => format!(
            "{}: {} · {}",
            s.name,
            health_word(s.health),
            s.error.as_ref().map_or("unknown", |e| e.code.as_str())
        ),
    }
}

/// The executable's file name, else `pid N`, else "a process".
#[must_use]
pub fn peer_name(peer: &Peer) -> String {
    match (&peer.exe, peer.pid) {
        (Some(exe), _) => exe.rsplit('/').next().unwrap_or(exe).to_owned(),
        (None, Some(pid)) => format!("pid {pid}"),
        (None, None) => "a process".to_owned(),
    }
}

/// `cf read claude 2 min ago`, `cf was refused claude (agent_locked) just now`.
#[must_use]
pub fn access_line(a: &Access, now: OffsetDateTime, precision: Precision) -> String {
    let who = peer_name(&a.peer);
    let what = a.credential.as_deref().unwrap_or("the agent");
    let ago = parse_ts(&a.ts).map_or_else(
        || a.ts.clone(),
        |at| ago_text((now - at).whole_seconds(), precision),
    );
    let code = a
        .code
        .as_deref()
        .map(|c| format!(" ({c})"))
        .unwrap_or_default();
    match (a.op.as_str(), a.outcome.as_str()) {
        ("get", "allowed") => format!("{who} read {what} {ago}"),
        ("get", _) => format!("{who} was refused {what}{code} {ago}"),
        ("store", "stored") => format!("{who} stored {what} {ago}"),
        ("clear", "cleared") => format!("{who} cleared {what} {ago}"),
        (op, outcome) => format!("{who} {op} {what}: {outcome}{code} {ago}"),
    }
}

/// `cf (pid 4211, /usr/local/bin/cf) wants `claude``.
#[must_use]
pub fn approval_text(a: &ApprovalRequest) -> String {
    let who = peer_name(&a.peer);
    let detail = match (a.peer.pid, &a.peer.exe) {
        (Some(pid), Some(exe)) => format!("pid {pid}, {exe}"),
        (Some(pid), None) => format!("pid {pid}, unknown executable"),
        (None, Some(exe)) => exe.clone(),
        (None, None) => format!("uid {}", a.peer.uid),
    };
    format!("{who} ({detail}) wants `{}`", a.credential)
}

// ---- state --------------------------------------------------------------------------------

/// Where the agent the tray shows lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AgentLink {
    /// Started inside the app.
    Embedded { pid: u32 },
    /// A headless `keyferry agent` already served the socket; the app is its client.
    Attached { pid: u32 },
    /// Neither: the reason carries the fix.
    Down { reason: String },
}

impl AgentLink {
    #[must_use]
    pub fn line(&self) -> String {
        match self {
            Self::Embedded { pid } => format!("Serving from this app (pid {pid})"),
            Self::Attached { pid } => format!("Attached to keyferry agent (pid {pid})"),
            Self::Down { reason } => format!("Agent not running: {reason}"),
        }
    }
}

/// An approval request the tray is showing, with the moment the agent gives up on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingApproval {
    pub request: ApprovalRequest,
    pub deadline: OffsetDateTime,
}

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Nothing visible changed.
    Nothing,
    /// Redraw the menu and the window.
    Changed,
    /// Events were missed: re-read `status`, then redraw.
    Resync,
}

/// Agent settings the window shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Settings {
    pub expiry_thresholds: Vec<String>,
    pub notifications: bool,
    pub notify_on_access: bool,
    pub approval_timeout_secs: u64,
    pub config_path: String,
}

/// Everything the tray knows, kept current from the agent's events.
#[derive(Debug, Clone)]
pub struct TrayState {
    pub link: AgentLink,
    pub credentials: BTreeMap<String, CredentialStatus>,
    pub locked: bool,
    pub last_access: Option<Access>,
    /// Oldest first, at most [`RECENT_MAX`].
    pub recent: VecDeque<Access>,
    pub approvals: Vec<PendingApproval>,
    /// A message that could not be shown as a desktop notification (no notification
    /// service), or the last error; shown as a menu line and in the window.
    pub notice: Option<String>,
    /// The latest expiry warning (credential, text): a menu line that opens the reroll
    /// wizard, whether or not a desktop notification could be shown. Cleared when that
    /// credential is healthy again.
    pub alert: Option<(String, String)>,
    pub autostart: bool,
    pub settings: Settings,
}

impl TrayState {
    #[must_use]
    pub fn new(link: AgentLink) -> Self {
        Self {
            link,
            credentials: BTreeMap::new(),
            locked: false,
            last_access: None,
            recent: VecDeque::new(),
            approvals: Vec::new(),
            notice: None,
            alert: None,
            autostart: false,
            settings: Settings::default(),
        }
    }

    /// Replaces what `status` reports (at start and after [`Applied::Resync`]).
    pub fn reset(&mut self, status: &Status) {
        self.credentials = status
            .credentials
            .iter()
            .map(|c| (c.name.clone(), c.clone()))
            .collect();
        self.locked = status.locked;
        if status.last_access.is_some() {
            self.last_access.clone_from(&status.last_access);
        }
    }

    /// Seeds the access log (from the audit file's tail), oldest first.
    pub fn seed_recent(&mut self, accesses: impl IntoIterator<Item = Access>) {
        for a in accesses {
            self.push_access(a);
        }
        if self.last_access.is_none() {
            self.last_access = self
                .recent
                .iter()
                .rev()
                .find(|a| a.credential.is_some())
                .cloned();
        }
    }

    fn push_access(&mut self, a: Access) {
        if self.recent.len() == RECENT_MAX {
            self.recent.pop_front();
        }
        self.recent.push_back(a);
    }

    /// Folds one agent event into the state.
    pub fn apply(&mut self, event: &Event, now: OffsetDateTime) -> Applied {
        match event {
            Event::Changed { status } => {
                if self.credentials.get(&status.name) == Some(status) {
                    return Applied::Nothing;
                }
                if status.health == Health::Ok
                    && self.alert.as_ref().is_some_and(|(n, _)| *n == status.name)
                {
                    self.alert = None;
                }
                self.credentials.insert(status.name.clone(), status.clone());
            }
            Event::Locked => self.locked = true,
            Event::Unlocked => self.locked = false,
            Event::Access { access } => {
                if access.op == "get" {
                    // The waiting request was decided (by us, another approver, or timeout).
                    self.approvals.retain(|p| {
                        !(p.request.credential.as_str()
                            == access.credential.as_deref().unwrap_or("")
                            && p.request.peer.pid == access.peer.pid)
                    });
                }
                if access.credential.is_some() {
                    self.last_access = Some(access.clone());
                }
                self.push_access(access.clone());
            }
            Event::Approval { approval } => {
                let secs = i64::try_from(approval.timeout_secs).unwrap_or(i64::MAX / 2);
                self.approvals.push(PendingApproval {
                    request: approval.clone(),
                    deadline: now + time::Duration::seconds(secs),
                });
            }
            Event::Expiring {
                name, expires_in, ..
            } => {
                self.alert = Some((
                    name.clone(),
                    format!("{name} token expires in {expires_in}: Reroll…"),
                ));
            }
            Event::Expired { name, .. } => {
                self.alert = Some((name.clone(), format!("{name} token expired: Reroll…")));
            }
            Event::Lagged { .. } => return Applied::Resync,
            // A `changed` event follows each of these.
            Event::Rerolled { .. } | Event::Cleared { .. } => return Applied::Nothing,
        }
        Applied::Changed
    }

    /// Forgets an approval request this app answered; false if it was not pending.
    pub fn answered(&mut self, request: u64) -> bool {
        let before = self.approvals.len();
        self.approvals.retain(|p| p.request.request != request);
        self.approvals.len() != before
    }

    /// Drops approval requests whose deadline passed (the agent denied them).
    pub fn expire_approvals(&mut self, now: OffsetDateTime) -> bool {
        let before = self.approvals.len();
        self.approvals.retain(|p| p.deadline > now);
        self.approvals.len() != before
    }

    #[must_use]
    pub fn icon(&self) -> IconState {
        if matches!(self.link, AgentLink::Down { .. }) {
            return IconState::Expired;
        }
        IconState::of(self.credentials.values(), self.locked)
    }

    /// "Keyferry: all tokens ok", "Keyferry: claude expires in 2 d 1 h", "Keyferry: locked".
    #[must_use]
    pub fn tooltip(&self, now: OffsetDateTime) -> String {
        let worst = self
            .credentials
            .values()
            .filter(|c| c.health != Health::Missing)
            .max_by_key(|c| (c.health, std::cmp::Reverse(seconds_left(c, now))));
        let text = match (&self.link, self.icon(), worst) {
            (AgentLink::Down { .. }, ..) => "agent not running".to_owned(),
            (_, IconState::Locked, _) => "locked, serving no tokens".to_owned(),
            (_, IconState::Ok, _) => "all tokens ok".to_owned(),
            (_, _, Some(c)) if c.health == Health::Error => format!("{} cannot be read", c.name),
            (_, _, Some(c)) => format!(
                "{} {}",
                c.name,
                expiry_text(seconds_left(c, now), Precision::Minutes)
            ),
            (_, _, None) => "no token found".to_owned(),
        };
        format!("Keyferry: {text}")
    }

    /// The menu for `now`.
    #[must_use]
    pub fn menu(&self, now: OffsetDateTime) -> MenuModel {
        let p = Precision::Minutes;
        let mut items = Vec::new();
        let down = matches!(self.link, AgentLink::Down { .. });
        if self.credentials.is_empty() {
            items.push(MenuEntry::label("cred:none", "No credentials yet"));
        }
        for c in self.credentials.values() {
            items.push(MenuEntry::item(
                &MenuAction::Credential(c.name.clone()).id(),
                credential_line(c, now, p),
                true,
            ));
        }
        items.push(MenuEntry::separator("sep:status"));
        items.push(MenuEntry::label("agent", self.link.line()));
        items.push(MenuEntry::label(
            "last-access",
            self.last_access.as_ref().map_or_else(
                || "No token served yet".to_owned(),
                |a| access_line(a, now, p),
            ),
        ));
        if let Some((_, text)) = &self.alert {
            items.push(MenuEntry::item(
                &MenuAction::Alert.id(),
                text.clone(),
                !down,
            ));
        }
        if let Some(n) = &self.notice {
            items.push(MenuEntry::label("notice", n.clone()));
        }
        if !self.approvals.is_empty() {
            let n = self.approvals.len();
            items.push(MenuEntry::item(
                &MenuAction::Approvals.id(),
                if n == 1 {
                    format!("Approve: {}…", approval_text(&self.approvals[0].request))
                } else {
                    format!("{n} approval requests waiting…")
                },
                true,
            ));
        }
        items.push(MenuEntry::separator("sep:actions"));
        items.push(MenuEntry::item(&MenuAction::Reroll.id(), "Reroll…", !down));
        items.push(MenuEntry::item(
            &MenuAction::ToggleLock.id(),
            if self.locked {
                "Unlock serving"
            } else {
                "Lock serving"
            },
            !down,
        ));
        items.push(MenuEntry::separator("sep:app"));
        items.push(MenuEntry::item(
            &MenuAction::Open.id(),
            "Open Keyferry",
            true,
        ));
        items.push(MenuEntry {
            id: MenuAction::ToggleAutostart.id(),
            label: "Start at login".to_owned(),
            enabled: true,
            kind: EntryKind::Check {
                checked: self.autostart,
            },
        });
        items.push(MenuEntry::separator("sep:quit"));
        items.push(MenuEntry::item(
            &MenuAction::Quit.id(),
            "Quit Keyferry",
            true,
        ));
        MenuModel { items }
    }

    /// How long until some menu text changes by itself (a countdown or "ago" crossing a
    /// unit, an approval timing out). `None`: nothing changes until the next event.
    #[must_use]
    pub fn next_refresh(&self, now: OffsetDateTime) -> Option<time::Duration> {
        let p = Precision::Minutes;
        let countdowns = self
            .credentials
            .values()
            .filter_map(|c| seconds_left(c, now))
            .map(|s| text_changes_in(s, true, p));
        let ago = self
            .last_access
            .as_ref()
            .and_then(|a| parse_ts(&a.ts))
            .map(|at| text_changes_in((now - at).whole_seconds().max(0), false, p));
        let approvals = self
            .approvals
            .iter()
            .map(|a| (a.deadline - now).whole_seconds().max(0) + 1);
        countdowns
            .chain(ago)
            .chain(approvals)
            .min()
            .map(time::Duration::seconds)
    }

    /// The window's data for `now` (it redraws countdowns every second while visible).
    #[must_use]
    pub fn view(&self, now: OffsetDateTime) -> WindowView {
        let p = Precision::Seconds;
        WindowView {
            agent: self.link.clone(),
            agent_line: self.link.line(),
            locked: self.locked,
            icon: self.icon(),
            tooltip: self.tooltip(now),
            credentials: self
                .credentials
                .values()
                .map(|c| CredentialRow::of(c, now))
                .collect(),
            approvals: self
                .approvals
                .iter()
                .map(|a| ApprovalRow {
                    request: a.request.request,
                    credential: a.request.credential.clone(),
                    text: approval_text(&a.request),
                    seconds_left: (a.deadline - now).whole_seconds().max(0),
                })
                .collect(),
            recent: self
                .recent
                .iter()
                .rev()
                .map(|a| AccessRow {
                    ts: a.ts.clone(),
                    line: access_line(a, now, p),
                    op: a.op.clone(),
                    credential: a.credential.clone(),
                    outcome: a.outcome.clone(),
                    code: a.code.clone(),
                    peer: a.peer.to_string(),
                    refused: a.outcome == "refused",
                })
                .collect(),
            notice: self.notice.clone(),
            alert: self.alert.as_ref().map(|(_, t)| t.clone()),
            autostart: self.autostart,
            settings: self.settings.clone(),
        }
    }
}

// ---- menu ---------------------------------------------------------------------------------

/// What a menu item does, parsed back from its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MenuAction {
    /// A credential line: opens the window on it.
    Credential(String),
    /// The "approval requests waiting" line: opens the window.
    Approvals,
    /// The expiry warning line: opens the reroll wizard for that credential.
    Alert,
    Reroll,
    ToggleLock,
    Open,
    ToggleAutostart,
    Quit,
}

impl MenuAction {
    #[must_use]
    pub fn id(&self) -> String {
        match self {
            Self::Credential(name) => format!("cred:{name}"),
            Self::Approvals => "approvals".into(),
            Self::Alert => "alert".into(),
            Self::Reroll => "reroll".into(),
            Self::ToggleLock => "lock".into(),
            Self::Open => "open".into(),
            Self::ToggleAutostart => "autostart".into(),
            Self::Quit => "quit".into(),
        }
    }

    #[must_use]
    pub fn from_id(id: &str) -> Option<Self> {
        Some(match id {
            "approvals" => Self::Approvals,
            "alert" => Self::Alert,
            "reroll" => Self::Reroll,
            "lock" => Self::ToggleLock,
            "open" => Self::Open,
            "autostart" => Self::ToggleAutostart,
            "quit" => Self::Quit,
            _ => Self::Credential(id.strip_prefix("cred:")?.to_owned()),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EntryKind {
    Item,
    Check { checked: bool },
    Separator,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MenuEntry {
    /// Stable across redraws; [`MenuAction::from_id`] parses the clickable ones.
    pub id: String,
    pub label: String,
    pub enabled: bool,
    pub kind: EntryKind,
}

impl MenuEntry {
    fn item(id: &str, label: impl Into<String>, enabled: bool) -> Self {
        Self {
            id: id.to_owned(),
            label: label.into(),
            enabled,
            kind: EntryKind::Item,
        }
    }

    /// Information only: shown greyed out.
    fn label(id: &str, label: impl Into<String>) -> Self {
        Self::item(id, label, false)
    }

    fn separator(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            label: String::new(),
            enabled: false,
            kind: EntryKind::Separator,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MenuModel {
    pub items: Vec<MenuEntry>,
}

impl MenuModel {
    /// Same ids and kinds in the same order: the toolkit may update labels, enabled and
    /// checked states in place instead of rebuilding the menu.
    #[must_use]
    pub fn same_shape(&self, other: &Self) -> bool {
        self.items.len() == other.items.len()
            && self.items.iter().zip(&other.items).all(|(a, b)| {
                a.id == b.id && std::mem::discriminant(&a.kind) == std::mem::discriminant(&b.kind)
            })
    }

    #[must_use]
    pub fn get(&self, id: &str) -> Option<&MenuEntry> {
        self.items.iter().find(|e| e.id == id)
    }
}

// ---- window -------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CredentialRow {
    pub name: String,
    pub health: Health,
    pub state: &'static str,
    pub line: String,
    pub source: Option<String>,
    pub kind: Option<String>,
    pub masked: Option<String>,
    pub fingerprint: Option<String>,
    pub expires_at: Option<String>,
    pub seconds_left: Option<i64>,
    /// "expires in 2 h 5 min" / "expired 3 min ago" / "no expiry", to the second.
    pub countdown: String,
    pub expiry_assumed: bool,
    pub plan: Option<String>,
    pub scopes: Vec<String>,
    pub error: Option<String>,
    pub warnings: Vec<String>,
}

impl CredentialRow {
    #[must_use]
    pub fn of(c: &CredentialStatus, now: OffsetDateTime) -> Self {
        let i = c.inspection.as_ref();
        let left = seconds_left(c, now);
        Self {
            name: c.name.clone(),
            health: c.health,
            state: health_word(c.health),
            line: credential_line(c, now, Precision::Seconds),
            source: c.source.clone(),
            kind: i.map(|i| i.kind.to_string()),
            masked: i.map(|i| i.masked.clone()),
            fingerprint: i.map(|i| i.fingerprint.clone()),
            expires_at: i.and_then(|i| i.expires_at.clone()),
            seconds_left: left,
            countdown: expiry_text(left, Precision::Seconds),
            expiry_assumed: i
                .is_some_and(|i| matches!(i.expiry, keyferry::credential::Expiry::Assumed { .. })),
            plan: i.and_then(|i| i.plan.clone()),
            scopes: i.map(|i| i.scopes.clone()).unwrap_or_default(),
            error: c.error.as_ref().map(|e| e.message.clone()),
            warnings: c.warnings.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalRow {
    pub request: u64,
    pub credential: String,
    pub text: String,
    pub seconds_left: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessRow {
    pub ts: String,
    pub line: String,
    pub op: String,
    pub credential: Option<String>,
    pub outcome: String,
    pub code: Option<String>,
    pub peer: String,
    pub refused: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WindowView {
    pub agent: AgentLink,
    pub agent_line: String,
    pub locked: bool,
    pub icon: IconState,
    pub tooltip: String,
    pub credentials: Vec<CredentialRow>,
    pub approvals: Vec<ApprovalRow>,
    /// Newest first.
    pub recent: Vec<AccessRow>,
    pub notice: Option<String>,
    pub alert: Option<String>,
    pub autostart: bool,
    pub settings: Settings,
}

// ---- reroll -------------------------------------------------------------------------------

/// A token about to be stored by the reroll wizard: what it is, never what it says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    pub kind: Kind,
    pub masked: String,
    pub fingerprint: String,
}

/// Checks a captured or pasted token before it replaces the stored one: it must parse and be
/// a Claude setup-token or API key (a refresh token or anything else is refused with the fix).
///
/// # Errors
/// Why the token cannot be used, with what to do instead. Never contains the token.
pub fn check_reroll_token(token: &Secret, now: OffsetDateTime) -> Result<Candidate, String> {
    let c = Credential::parse(token, "the token").map_err(|e| e.to_string())?;
    match c.kind {
        Kind::SetupToken | Kind::ApiKey => {
            let i = c.inspect(now);
            Ok(Candidate {
                kind: c.kind,
                masked: i.masked,
                fingerprint: i.fingerprint,
            })
        }
        other => Err(format!(
            "the token is a {other}, not a Claude setup-token (sk-ant-oat01-…) or API key \
             (sk-ant-api03-…); copy the whole line `claude setup-token` printed"
        )),
    }
}

/// The wizard's last page, and the notification after a reroll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RerollDone {
    pub name: String,
    pub fingerprint: String,
    pub masked: String,
    pub source: String,
    pub expires: String,
    pub summary: String,
    pub body: String,
}

#[must_use]
pub fn reroll_done(s: &CredentialStatus, now: OffsetDateTime) -> RerollDone {
    let i = s.inspection.as_ref();
    let fingerprint = i.map_or_else(|| "unknown".to_owned(), |i| i.fingerprint.clone());
    let expires = match (i.and_then(|i| i.expires_at.clone()), seconds_left(s, now)) {
        (Some(at), left) => format!("{at} ({})", expiry_text(left, Precision::Minutes)),
        (None, _) => "no expiry".to_owned(),
    };
    RerollDone {
        name: s.name.clone(),
        masked: i.map_or_else(String::new, |i| i.masked.clone()),
        source: s.source.clone().unwrap_or_default(),
        summary: format!("{} token rerolled", s.name),
        body: format!("New token {fingerprint}; {expires}"),
        fingerprint,
        expires,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyferry::credential::{Expiry, Inspection};
    use keyferry::ErrorBody;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    fn ts(at: OffsetDateTime) -> String {
        at.format(&Rfc3339).unwrap()
    }

    fn cred(name: &str, health: Health, left: Option<i64>) -> CredentialStatus {
        CredentialStatus {
            name: name.into(),
            health,
            source: Some("keychain:cf-claude-token".into()),
            inspection: Some(Inspection {
                kind: Kind::SetupToken,
                masked: "sk-ant-oat01-…abcd".into(),
                fingerprint: "sha256:0011223344556677".into(),
                expires_at: left.map(|s| ts(now() + time::Duration::seconds(s))),
                // Deliberately stale: the model must count from expires_at.
                expires_in_secs: left.map(|s| s + 999),
                expires_in: None,
                expiry: Expiry::Embedded,
                plan: None,
                rate_limit_tier: None,
                scopes: vec!["user:inference".into()],
                has_refresh_token: false,
            }),
            error: None,
            warnings: Vec::new(),
        }
    }

    fn missing(name: &str) -> CredentialStatus {
        CredentialStatus {
            name: name.into(),
            health: Health::Missing,
            source: None,
            inspection: None,
            error: Some(ErrorBody {
                code: "not_found".into(),
                message: "no token".into(),
            }),
            warnings: Vec::new(),
        }
    }

    fn access(op: &str, outcome: &str, code: Option<&str>, secs_ago: i64) -> Access {
        Access {
            ts: ts(now() - time::Duration::seconds(secs_ago)),
            op: op.into(),
            credential: Some("claude".into()),
            outcome: outcome.into(),
            code: code.map(Into::into),
            peer: Peer {
                uid: 1000,
                pid: Some(4211),
                exe: Some("/usr/local/bin/cf".into()),
            },
        }
    }

    fn state(creds: Vec<CredentialStatus>) -> TrayState {
        let mut s = TrayState::new(AgentLink::Embedded { pid: 7 });
        for c in creds {
            s.apply(&Event::Changed { status: c }, now());
        }
        s
    }

    const D: i64 = 86_400;
    const H: i64 = 3_600;

    #[test]
    fn icon_is_the_worst_state_and_lock_wins() {
        let ok = cred("a", Health::Ok, Some(30 * D));
        let soon = cred("b", Health::Expiring, Some(2 * D));
        let gone = cred("c", Health::Expired, Some(-H));
        let broken = CredentialStatus {
            health: Health::Error,
            ..missing("d")
        };
        assert_eq!(IconState::of([&ok], false), IconState::Ok);
        assert_eq!(IconState::of([&ok, &soon], false), IconState::Expiring);
        assert_eq!(
            IconState::of([&soon, &gone, &ok], false),
            IconState::Expired
        );
        assert_eq!(IconState::of([&ok, &broken], false), IconState::Expired);
        assert_eq!(IconState::of([&gone], true), IconState::Locked);
        // An unused CLI's missing credential does not turn the icon red…
        assert_eq!(
            IconState::of([&ok, &missing("codex")], false),
            IconState::Ok
        );
        // …but nothing at all to serve does.
        assert_eq!(
            IconState::of([&missing("claude")], false),
            IconState::Expired
        );
        assert_eq!(IconState::of([], false), IconState::Ok);
        assert_eq!(IconState::Expiring.as_str(), "expiring");
        let mut s = state(vec![ok]);
        s.link = AgentLink::Down { reason: "x".into() };
        assert_eq!(s.icon(), IconState::Expired);
    }

    #[test]
    fn countdown_texts() {
        let m = Precision::Minutes;
        assert_eq!(
            expiry_text(Some(3 * D + 4 * H + 59), m),
            "expires in 3 d 4 h"
        );
        assert_eq!(expiry_text(Some(-2 * H), m), "expired 2 h ago");
        assert_eq!(expiry_text(Some(42), m), "expires in less than 1 min");
        assert_eq!(expiry_text(Some(42), Precision::Seconds), "expires in 42 s");
        assert_eq!(expiry_text(None, m), "no expiry");
        assert_eq!(ago_text(120, m), "2 min ago");
        assert_eq!(ago_text(30, m), "just now");
        assert_eq!(ago_text(30, Precision::Seconds), "30 s ago");
        assert_eq!(ago_text(2, Precision::Seconds), "just now");
    }

    #[test]
    fn text_change_times_match_the_texts() {
        let m = Precision::Minutes;
        // Brute force: the text must stay the same until exactly the predicted second.
        let expiry = |v: i64| expiry_text(Some(v), m);
        let age = |v: i64| ago_text(v, m);
        let cases: [(i64, bool); 9] = [
            (3 * D + 4 * H + 17, true),
            (2 * H + 5 * 60 + 3, true),
            (3 * 60, true),
            (61, true),
            (42, true),
            (0, true),
            (-(2 * H) - 7, true),
            (125, false),
            (0, false),
        ];
        for (start, decreasing) in cases {
            let value = |k: i64| if decreasing { start - k } else { start + k };
            let text = |k: i64| {
                if decreasing {
                    expiry(value(k))
                } else {
                    age(value(k))
                }
            };
            let wait = text_changes_in(start, decreasing, m);
            for k in 0..wait {
                assert_eq!(text(k), text(0), "start {start}, +{k}s");
            }
            assert_ne!(text(wait), text(0), "start {start}: change at +{wait}s");
        }
    }

    #[test]
    fn credential_and_access_lines() {
        let n = now();
        let c = cred("claude", Health::Ok, Some(3 * D + 4 * H + 10));
        assert_eq!(
            credential_line(&c, n, Precision::Minutes),
            "claude: ok · expires in 3 d 4 h · keychain:cf-claude-token"
        );
        assert_eq!(
            credential_line(&missing("codex"), n, Precision::Minutes),
            "codex: not found"
        );
        let err = CredentialStatus {
            health: Health::Error,
            error: Some(ErrorBody {
                code: "keychain_locked".into(),
                message: "…".into(),
            }),
            ..missing("claude")
        };
        assert_eq!(
            credential_line(&err, n, Precision::Minutes),
            "claude: error · keychain_locked"
        );
        let m = Precision::Minutes;
        assert_eq!(
            access_line(&access("get", "allowed", None, 125), n, m),
            "cf read claude 2 min ago"
        );
        assert_eq!(
            access_line(&access("get", "refused", Some("agent_locked"), 1), n, m),
            "cf was refused claude (agent_locked) just now"
        );
        assert_eq!(
            access_line(&access("store", "stored", None, 3 * H), n, m),
            "cf stored claude 3 h ago"
        );
        let req = ApprovalRequest {
            request: 3,
            credential: "claude".into(),
            peer: access("get", "allowed", None, 0).peer,
            timeout_secs: 60,
        };
        assert_eq!(
            approval_text(&req),
            "cf (pid 4211, /usr/local/bin/cf) wants `claude`"
        );
    }

    #[test]
    fn menu_has_every_line_in_order_with_enabled_states() {
        let mut s = state(vec![
            cred("claude", Health::Expiring, Some(2 * D + 3 * H + 5)),
            missing("codex"),
        ]);
        s.apply(
            &Event::Access {
                access: access("get", "allowed", None, 120),
            },
            now(),
        );
        let m = s.menu(now());
        let labels: Vec<(&str, &str, bool)> = m
            .items
            .iter()
            .map(|e| (e.id.as_str(), e.label.as_str(), e.enabled))
            .collect();
        assert_eq!(
            labels,
            [
                (
                    "cred:claude",
                    "claude: expiring · expires in 2 d 3 h · keychain:cf-claude-token",
                    true
                ),
                ("cred:codex", "codex: not found", true),
                ("sep:status", "", false),
                ("agent", "Serving from this app (pid 7)", false),
                ("last-access", "cf read claude 2 min ago", false),
                ("sep:actions", "", false),
                ("reroll", "Reroll…", true),
                ("lock", "Lock serving", true),
                ("sep:app", "", false),
                ("open", "Open Keyferry", true),
                ("autostart", "Start at login", true),
                ("sep:quit", "", false),
                ("quit", "Quit Keyferry", true),
            ]
        );
        assert_eq!(
            m.get("autostart").unwrap().kind,
            EntryKind::Check { checked: false }
        );
        assert_eq!(
            MenuAction::from_id("cred:claude"),
            Some(MenuAction::Credential("claude".into()))
        );
        for e in &m.items {
            if e.enabled {
                let action = MenuAction::from_id(&e.id).unwrap();
                assert_eq!(action.id(), e.id);
            }
        }
        assert_eq!(MenuAction::from_id("sep:quit"), None);

        // Locking changes a label, not the shape: the menu can be updated in place.
        assert_eq!(s.apply(&Event::Locked, now()), Applied::Changed);
        s.autostart = true;
        let locked = s.menu(now());
        assert!(locked.same_shape(&m));
        assert_eq!(locked.get("lock").unwrap().label, "Unlock serving");
        assert_eq!(
            locked.get("autostart").unwrap().kind,
            EntryKind::Check { checked: true }
        );
        assert_eq!(s.icon(), IconState::Locked);
        assert_eq!(s.tooltip(now()), "Keyferry: locked, serving no tokens");

        // A down agent greys out what needs it.
        s.link = AgentLink::Down {
            reason: "socket dir is open; chmod 700 it".into(),
        };
        let down = s.menu(now());
        assert!(!down.get("reroll").unwrap().enabled);
        assert!(!down.get("lock").unwrap().enabled);
        assert!(down.get("agent").unwrap().label.contains("chmod 700"));
    }

    #[test]
    fn events_update_state_and_approvals_come_and_go() {
        let mut s = state(vec![cred("claude", Health::Ok, Some(30 * D))]);
        let same = Event::Changed {
            status: cred("claude", Health::Ok, Some(30 * D)),
        };
        assert_eq!(s.apply(&same, now()), Applied::Nothing);
        assert_eq!(
            s.apply(&Event::Lagged { missed: 3 }, now()),
            Applied::Resync
        );
        let req = ApprovalRequest {
            request: 9,
            credential: "claude".into(),
            peer: access("get", "allowed", None, 0).peer,
            timeout_secs: 60,
        };
        let ev = Event::Approval {
            approval: req.clone(),
        };
        assert_eq!(s.apply(&ev, now()), Applied::Changed);
        let m = s.menu(now());
        assert_eq!(
            m.get("approvals").unwrap().label,
            "Approve: cf (pid 4211, /usr/local/bin/cf) wants `claude`…"
        );
        assert_eq!(s.view(now()).approvals[0].seconds_left, 60);
        assert_eq!(
            s.next_refresh(now()),
            Some(time::Duration::seconds(61)),
            "the approval's deadline is the next change"
        );
        assert!(!s.expire_approvals(now() + time::Duration::seconds(59)));
        assert!(s.expire_approvals(now() + time::Duration::seconds(60)));
        s.apply(&ev, now());
        assert!(s.answered(9));
        assert!(!s.answered(9));
        // A served `get` from the same process closes the request (another approver answered).
        s.apply(&ev, now());
        s.apply(
            &Event::Access {
                access: access("get", "allowed", None, 0),
            },
            now(),
        );
        assert!(s.approvals.is_empty());
        assert_eq!(s.recent.len(), 1);
        let v = s.view(now());
        assert_eq!(v.recent[0].line, "cf read claude just now");
        assert_eq!(v.credentials[0].countdown, "expires in 30 d");
    }

    #[test]
    fn expiry_warnings_become_a_menu_line_until_the_credential_is_healthy() {
        let mut s = state(vec![cred("claude", Health::Expiring, Some(2 * D))]);
        let ev = Event::Expiring {
            name: "claude".into(),
            expires_at: ts(now() + time::Duration::days(2)),
            expires_in: "2 d".into(),
            threshold: "3d".into(),
        };
        assert_eq!(s.apply(&ev, now()), Applied::Changed);
        let m = s.menu(now());
        let line = m.get("alert").unwrap();
        assert_eq!(line.label, "claude token expires in 2 d: Reroll…");
        assert!(line.enabled);
        assert_eq!(MenuAction::from_id("alert"), Some(MenuAction::Alert));
        s.apply(
            &Event::Changed {
                status: cred("claude", Health::Ok, Some(365 * D)),
            },
            now(),
        );
        assert!(s.alert.is_none());
        assert!(s.menu(now()).get("alert").is_none());
    }

    #[test]
    fn recent_log_is_bounded_and_seeds_last_access() {
        let mut s = state(vec![]);
        s.seed_recent((0..RECENT_MAX + 5).map(|i| access("get", "allowed", None, 1000 - i as i64)));
        assert_eq!(s.recent.len(), RECENT_MAX);
        assert_eq!(
            s.last_access.as_ref().unwrap().ts,
            ts(now() - time::Duration::seconds(1000 - (RECENT_MAX as i64 + 4)))
        );
        assert_eq!(s.menu(now()).items[0].label, "No credentials yet");
    }

    #[test]
    fn next_refresh_follows_the_nearest_text_change() {
        let s = state(vec![
            cred("a", Health::Ok, Some(30 * D + 17)),
            cred("b", Health::Expiring, Some(2 * H + 5 * 60 + 30)),
        ]);
        assert_eq!(s.next_refresh(now()), Some(time::Duration::seconds(31)));
        let quiet = state(vec![missing("codex")]);
        assert_eq!(quiet.next_refresh(now()), None);
    }

    #[test]
    fn reroll_tokens_are_checked_without_revealing_them() {
        let ok = check_reroll_token(
            &Secret::new("sk-ant-oat01-abcdefghijklmnopqrstuvwxyz0123".into()),
            now(),
        )
        .unwrap();
        assert_eq!(ok.kind, Kind::SetupToken);
        assert_eq!(ok.masked, "sk-ant-oat01-…0123");
        let refresh = check_reroll_token(&Secret::new("sk-ant-ort01-SECRETSECRET".into()), now())
            .unwrap_err();
        assert!(refresh.contains("claude setup-token"), "{refresh}");
        assert!(!refresh.contains("SECRETSECRET"));
        let other = check_reroll_token(&Secret::new("hello-SECRET".into()), now()).unwrap_err();
        assert!(other.contains("not a Claude setup-token"), "{other}");
        assert!(!other.contains("SECRET"));
        let done = reroll_done(&cred("claude", Health::Ok, Some(365 * D)), now());
        assert_eq!(done.fingerprint, "sha256:0011223344556677");
        assert!(
            done.expires.ends_with("(expires in 365 d)"),
            "{}",
            done.expires
        );
        assert_eq!(done.summary, "claude token rerolled");
    }
}
