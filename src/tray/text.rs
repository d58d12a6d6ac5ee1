//! Tray texts: the icon state, countdowns, "ago" lines, credential and access lines.

#[allow(clippy::wildcard_imports)]
use super::*;

/// How many access records the window's log keeps.
pub const RECENT_MAX: usize = 50;

/// Below this, "ago" reads "just now".
pub(super) const JUST_NOW_SECS: i64 = 5;

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

pub(super) fn duration_text(secs: i64, precision: Precision) -> String {
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

pub(super) fn parse_ts(ts: &str) -> Option<OffsetDateTime> {
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

pub use crate::report::health_word;

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
        .as_ref()
        .map(|c| format!(" ({c})"))
        .unwrap_or_default();
    use crate::domain::{AuditOutcome as O, Op};
    match (a.op, &a.outcome) {
        (Op::Get, O::Allowed) => format!("{who} read {what} {ago}"),
        (Op::Get, _) => format!("{who} was refused {what}{code} {ago}"),
        // What was done, in the words the audit keeps for it.
        (Op::Store, O::Done(w)) if w == "stored" => format!("{who} stored {what} {ago}"),
        (Op::Clear, O::Done(w)) if w == "cleared" => format!("{who} cleared {what} {ago}"),
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

/// The desktop notification for an approval request: (summary, body).
#[must_use]
pub fn approval_notification(a: &ApprovalRequest) -> (String, String) {
    (
        format!("Allow access to {}?", a.credential),
        format!(
            "{}. Answer in Keyferry within {} s, or it is denied.",
            approval_text(a),
            a.timeout_secs
        ),
    )
}

/// The menu's usage line: `claude usage: 5-hour 37% · 7-day 12%`; `None` without figures.
#[must_use]
pub fn usage_menu_line(name: &str, usage: &UsageState) -> Option<String> {
    let UsageState::Known(u) = usage else {
        return None;
    };
    let parts: Vec<String> = u
        .windows()
        .map(|(label, w)| format!("{label} {:.0}%", w.utilization))
        .collect();
    (!parts.is_empty()).then(|| format!("{name} usage: {}", parts.join(" · ")))
}
