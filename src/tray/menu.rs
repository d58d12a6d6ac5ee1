//! The tray menu: its model and the actions its items stand for.

#[allow(clippy::wildcard_imports)]
use super::*;

impl TrayState {
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
            if let Some(line) = self
                .usage
                .get(&c.name)
                .and_then(|u| usage_menu_line(&c.name, u))
            {
                items.push(MenuEntry::label(&format!("usage:{}", c.name), line));
            }
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
            &MenuAction::NewSandbox.id(),
            "New sandbox…",
            !down,
        ));
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
}

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
    /// Opens the panel's New sandbox dialog.
    NewSandbox,
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
            Self::NewSandbox => "new-sandbox".into(),
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
            "new-sandbox" => Self::NewSandbox,
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
