//! The Sandboxes tab's rows: each gateway grant with what it spends, its limits, and its
//! use as two small bar charts (the last 24 hours, the last 7 days) drawn from the agent's
//! per-grant history; and the one-line summary the Overview shows.

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::credential::human_duration;
use crate::domain::{GrantInfo, ListenerInfo, ListenerState};
use crate::gateway::history::{buckets, Bucket};

/// One gateway grant in the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrantRow {
    pub name: String,
    pub credential: String,
    /// `vm-1 on claude: 3 requests, 18 tokens (in 10 / out 5), expires in 2 h`.
    pub line: String,
    /// `budget 100000 tokens a day (2% used today) · 4 at once`, when it has limits.
    pub limits: Option<String>,
    /// Tokens per hour, the last 24 hours, the current hour last.
    pub hours: Vec<Bar>,
    /// Tokens per UTC day, the last 7 days, today last.
    pub days: Vec<Bar>,
    /// `last 24 h: 1234 tokens in 12 requests`, or that nothing was used.
    pub chart_note: String,
}

/// One bar of a chart: its height as a share of the chart's tallest (0–100), its label
/// under the chart, and the sentence a pointer (or a screen reader) gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bar {
    pub height: u8,
    pub label: String,
    pub title: String,
    pub tokens: u64,
    pub requests: u64,
}

fn tokens_of(g: &GrantInfo) -> u64 {
    g.input_tokens
        .saturating_add(g.output_tokens)
        .saturating_add(g.cache_creation_input_tokens)
        .saturating_add(g.cache_read_input_tokens)
}

fn bars(bs: &[Bucket], label: impl Fn(OffsetDateTime) -> String, span: &str) -> Vec<Bar> {
    let max = bs.iter().map(|b| b.tokens).max().unwrap_or(0);
    bs.iter()
        .map(|b| {
            let at =
                OffsetDateTime::from_unix_timestamp(b.start).unwrap_or(OffsetDateTime::UNIX_EPOCH);
            let label = label(at);
            // A bar with any use is at least 4% tall: never drawn as nothing.
            #[allow(clippy::cast_possible_truncation)]
            let height = if b.tokens == 0 || max == 0 {
                0
            } else {
                (u128::from(b.tokens) * 100 / u128::from(max)).max(4) as u8
            };
            Bar {
                height,
                title: format!(
                    "{label} {span}: {} tokens, {} requests",
                    b.tokens, b.requests
                ),
                label,
                tokens: b.tokens,
                requests: b.requests,
            }
        })
        .collect()
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

impl GrantRow {
    #[must_use]
    pub fn of(g: &GrantInfo, now: OffsetDateTime) -> Self {
        let left = OffsetDateTime::parse(&g.expires, &Rfc3339).map_or_else(
            |_| g.expires.clone(),
            |at| human_duration((at - now).whole_seconds()),
        );
        let hourly = buckets(&g.history, 3600, 24, now);
        let daily = buckets(&g.history, 86_400, 7, now);
        let today = daily.last().map_or(0, |b| b.tokens);
        let mut limits = Vec::new();
        if let Some(budget) = g.daily_token_budget {
            let used = u128::from(today) * 100 / u128::from(budget.max(1));
            limits.push(format!("budget {budget} tokens a day ({used}% used today)"));
        }
        if let Some(n) = g.max_concurrent {
            limits.push(format!("{n} at once"));
        }
        let (tokens, requests) = hourly.iter().fold((0u64, 0u64), |(t, r), b| {
            (t.saturating_add(b.tokens), r.saturating_add(b.requests))
        });
        Self {
            name: g.name.clone(),
            credential: g.credential.clone(),
            line: format!(
                "{} on {}: {}, {} tokens (in {} / out {}), expires in {}",
                g.name,
                g.credential,
                plural(g.requests, "request"),
                tokens_of(g),
                g.input_tokens,
                g.output_tokens,
                left
            ),
            limits: (!limits.is_empty()).then(|| limits.join(" · ")),
            hours: bars(
                &hourly,
                |at| format!("{:02}:00", at.hour()),
                "UTC, that hour",
            ),
            days: bars(
                &daily,
                |at| WEEKDAYS[usize::from(at.weekday().number_days_from_monday())].to_owned(),
                "(UTC day)",
            ),
            chart_note: if requests == 0 {
                "no use in the last 24 h".to_owned()
            } else {
                format!(
                    "last 24 h: {tokens} tokens in {}",
                    plural(requests, "request")
                )
            },
        }
    }
}

/// The Overview's line about the sandboxes: how many, and what they spent in 24 hours.
#[must_use]
pub fn summary(rows: &[GrantRow]) -> String {
    if rows.is_empty() {
        return "No sandboxes: make one on the Sandboxes tab, or with `keyferry grant NAME`."
            .to_owned();
    }
    let (tokens, requests) = rows
        .iter()
        .flat_map(|r| &r.hours)
        .fold((0u64, 0u64), |(t, q), b| {
            (t.saturating_add(b.tokens), q.saturating_add(b.requests))
        });
    let n = rows.len();
    format!(
        "{n} sandbox{}: {tokens} tokens in {} in the last 24 h",
        if n == 1 { "" } else { "es" },
        plural(requests, "request")
    )
}

/// Where sandboxes reach the gateway, one sentence (`None` when it runs no listener).
#[must_use]
pub fn gateway_line(listeners: &[ListenerInfo]) -> Option<String> {
    if listeners.is_empty() {
        return None;
    }
    let parts: Vec<String> = listeners
        .iter()
        .map(|l| match &l.state {
            ListenerState::Listening { url } => url.clone(),
            ListenerState::Waiting { reason } => format!("{} (waiting: {reason})", l.listen),
            ListenerState::Closed => format!("{} (closed: no grants)", l.listen),
            ListenerState::Failed { reason } => format!("{} (failed: {reason})", l.listen),
        })
        .collect();
    Some(format!("Gateway: {}", parts.join(", ")))
}
