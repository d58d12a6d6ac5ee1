//! What the tray knows: the agent link, credentials, lock, accesses, approvals, alerts.

#[allow(clippy::wildcard_imports)]
use super::*;

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
    /// The gateway's grants and their usage, as last read from the agent.
    pub grants: Vec<crate::domain::GrantInfo>,
    /// Each Claude credential's subscription usage (or why none), as last polled.
    pub usage: BTreeMap<String, UsageState>,
    /// The gateway's listeners, as `status` last reported them.
    pub listeners: Vec<crate::domain::ListenerInfo>,
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
            grants: Vec::new(),
            usage: BTreeMap::new(),
            listeners: Vec::new(),
        }
    }

    /// Keeps the usage `status` reported; `true` when anything shown changed.
    pub fn set_usage(&mut self, usage: Vec<CredentialUsage>) -> bool {
        let usage: BTreeMap<String, UsageState> =
            usage.into_iter().map(|u| (u.name, u.state)).collect();
        let changed = usage != self.usage;
        self.usage = usage;
        changed
    }

    /// Replaces what `status` reports (at start and after [`Applied::Resync`]).
    pub fn reset(&mut self, status: &Status) {
        self.credentials = status
            .credentials
            .iter()
            .map(|c| (c.name.clone(), c.clone()))
            .collect();
        self.locked = status.locked;
        self.listeners.clone_from(&status.listeners);
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
                if access.op == crate::domain::Op::Get {
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
                let fix = self.fix_for(name);
                self.alert = Some((
                    name.clone(),
                    format!("{name} token expires in {expires_in}{fix}"),
                ));
            }
            Event::Expired { name, .. } => {
                let fix = self.fix_for(name);
                self.alert = Some((name.clone(), format!("{name} token expired{fix}")));
            }
            Event::SinkFailed { name, path, error } => {
                self.notice = Some(format!(
                    "could not update {path} with {name}: {}",
                    error.message
                ));
            }
            Event::NeedsLogin { name, .. } => {
                self.alert = Some((
                    name.clone(),
                    format!("{name}: log in again — run `claude /login`"),
                ));
            }
            Event::Refreshed { name, .. } => {
                if self.alert.as_ref().is_some_and(|(n, _)| n == name) {
                    self.alert = None;
                } else {
                    return Applied::Nothing;
                }
            }
            Event::SinkWritten { path, .. } => {
                // A later success clears the failure it reported.
                if self
                    .notice
                    .as_ref()
                    .is_some_and(|n| n.contains(path.as_str()))
                {
                    self.notice = None;
                } else {
                    return Applied::Nothing;
                }
            }
            // Nothing showed it: the tray line is the fallback (expiry has its own alert line).
            Event::Notified {
                summary,
                shown: false,
                ..
            } if self.alert.is_none() => {
                self.notice = Some(summary.clone());
            }
            Event::Notified { .. } => return Applied::Nothing,
            Event::Lagged { .. } => return Applied::Resync,
            // A `changed` event follows each of these.
            Event::Rerolled { .. } | Event::Cleared { .. } => return Applied::Nothing,
        }
        Applied::Changed
    }

    /// Whether the reroll wizard (`claude setup-token`) can replace this credential: a
    /// setup-token or API key. Other kinds are renewed by their own CLI's login.
    #[must_use]
    pub fn rerollable(&self, name: &str) -> bool {
        self.credentials
            .get(name)
            .and_then(|c| c.inspection.as_ref())
            .is_some_and(|i| matches!(i.kind, Kind::SetupToken | Kind::ApiKey))
    }

    fn fix_for(&self, name: &str) -> &'static str {
        if self.rerollable(name) {
            ": Reroll…"
        } else {
            ": log in again with its CLI"
        }
    }

    /// What clicking the expiry warning line does: the reroll wizard when it can help,
    /// else the credential's card in the window.
    #[must_use]
    pub fn alert_action(&self) -> Option<MenuAction> {
        let (name, _) = self.alert.as_ref()?;
        Some(if self.rerollable(name) {
            MenuAction::Reroll
        } else {
            MenuAction::Credential(name.clone())
        })
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
}
