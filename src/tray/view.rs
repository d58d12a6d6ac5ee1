//! The window: credential rows, approvals, the access log, and the reroll checks.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A credential nothing provides (no source found it, no warning, no error beyond "not
/// found"): one quiet line in the window instead of a card.
fn not_set_up(c: &CredentialStatus) -> bool {
    c.health == Health::Missing
        && c.warnings.is_empty()
        && c.error
            .as_ref()
            .map_or(true, |e| e.code == crate::domain::ErrorCode::NotFound)
}

impl TrayState {
    /// The window's data for `now` (it redraws countdowns every second while visible).
    #[must_use]
    pub fn view(&self, now: OffsetDateTime) -> WindowView {
        let p = Precision::Seconds;
        let grants: Vec<GrantRow> = self.grants.iter().map(|g| GrantRow::of(g, now)).collect();
        WindowView {
            agent: self.link.clone(),
            agent_line: self.link.line(),
            locked: self.locked,
            icon: self.icon(),
            tooltip: self.tooltip(now),
            credentials: self
                .credentials
                .values()
                .filter(|c| !not_set_up(c))
                .map(|c| CredentialRow::of(c, self.usage.get(&c.name), now))
                .collect(),
            not_set_up: self
                .credentials
                .values()
                .filter(|c| not_set_up(c))
                .map(|c| c.name.clone())
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
                    op: a.op.to_string(),
                    credential: a.credential.clone(),
                    outcome: a.outcome.to_string(),
                    code: a.code.as_ref().map(ToString::to_string),
                    peer: a.peer.to_string(),
                    refused: a.outcome == crate::domain::AuditOutcome::Refused,
                })
                .collect(),
            notice: self.notice.clone(),
            alert: self.alert.as_ref().map(|(_, t)| t.clone()),
            autostart: self.autostart,
            settings: self.settings.clone(),
            grants_summary: summary(&grants),
            gateway_line: gateway_line(&self.listeners),
            grants,
        }
    }
}

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
    /// Subscription usage windows, when the agent has figures.
    pub usage: Vec<UsageRow>,
    /// Why there are no usage figures (a setup-token lacks `user:profile`, …), one sentence.
    pub usage_note: Option<String>,
    /// The reroll dialog can replace it (a setup-token or API key).
    pub rerollable: bool,
}

/// One subscription window: `5-hour`, 37 (%), "resets in 1 h 2 min".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    pub label: &'static str,
    pub percent: u32,
    pub resets: Option<String>,
}

fn usage_rows(usage: Option<&UsageState>, now: OffsetDateTime) -> (Vec<UsageRow>, Option<String>) {
    match usage {
        None => (Vec::new(), None),
        Some(UsageState::Unavailable(e)) => (Vec::new(), Some(e.message.clone())),
        Some(UsageState::Known(u)) => (
            u.windows()
                .map(|(label, w)| UsageRow {
                    label,
                    // Whole percent, rounded as the CLI prints them (`{:.0}`: ties to even).
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    percent: w.utilization.clamp(0.0, 1000.0).round_ties_even() as u32,
                    resets: w.resets_at.map(|at| {
                        let secs = (at - now).whole_seconds();
                        if secs > 0 {
                            format!("resets in {}", human_duration(secs))
                        } else {
                            "resetting now".to_owned()
                        }
                    }),
                })
                .collect(),
            None,
        ),
    }
}

impl CredentialRow {
    #[must_use]
    pub fn of(c: &CredentialStatus, usage: Option<&UsageState>, now: OffsetDateTime) -> Self {
        let (usage, usage_note) = usage_rows(usage, now);
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
                .is_some_and(|i| matches!(i.expiry, crate::credential::Expiry::Assumed { .. })),
            plan: i.and_then(|i| i.plan.clone()),
            scopes: i.map(|i| i.scopes.clone()).unwrap_or_default(),
            error: c.error.as_ref().map(|e| e.message.clone()),
            warnings: c.warnings.clone(),
            usage,
            usage_note: usage_note
                .map(|why| format!("No usage figures: {}.", why.trim_end_matches('.'))),
            rerollable: i.is_some_and(|i| matches!(i.kind, Kind::SetupToken | Kind::ApiKey)),
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
    /// Credentials nothing provides yet, collapsed into one line (`not set up: codex, gemini`).
    pub not_set_up: Vec<String>,
    pub approvals: Vec<ApprovalRow>,
    /// Newest first.
    pub recent: Vec<AccessRow>,
    pub notice: Option<String>,
    pub alert: Option<String>,
    pub autostart: bool,
    pub settings: Settings,
    pub grants: Vec<GrantRow>,
    /// The Overview's one line about the grants.
    pub grants_summary: String,
    /// Where sandboxes reach the gateway (`None`: no gateway listener).
    pub gateway_line: Option<String>,
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
