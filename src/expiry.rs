//! Expiry: health from time left, which warning is due, and when the next one falls due.

use time::{Duration, OffsetDateTime};

use crate::config::{parse_duration, AgentConfig};
use crate::credential::human_duration;
use crate::protocol::Health;

/// Warning thresholds, most distant first, and the OAuth grace period.
#[derive(Debug, Clone)]
pub struct Thresholds {
    levels: Vec<(String, Duration)>,
    oauth_grace: Duration,
}

/// A warning that is due now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Less than `label` is left.
    Expiring {
        label: String,
        left: String,
    },
    Expired,
}

impl Due {
    /// Stable key so each warning fires once per token.
    #[must_use]
    pub fn key(&self) -> &str {
        match self {
            Self::Expiring { label, .. } => label,
            Self::Expired => "expired",
        }
    }
}

impl Thresholds {
    #[must_use]
    pub fn from_config(cfg: &AgentConfig) -> Self {
        let mut levels: Vec<(String, Duration)> = cfg
            .expiry_thresholds
            .iter()
            .filter_map(|t| parse_duration(t).ok().map(|d| (t.clone(), d)))
            .collect();
        levels.sort_by_key(|l| std::cmp::Reverse(l.1));
        Self {
            levels,
            oauth_grace: Duration::minutes(i64::try_from(cfg.oauth_grace_mins).unwrap_or(10)),
        }
    }

    /// The configured labels, most distant first.
    #[must_use]
    pub fn labels(&self) -> Vec<String> {
        self.levels.iter().map(|(l, _)| l.clone()).collect()
    }

    /// A credential that carries its refresh token (Claude Code's ~8 h OAuth login, Codex and
    /// Gemini logins) is refreshed by its own CLI on the host; it is only a problem once it
    /// has stayed expired past the grace period.
    #[must_use]
    pub fn health(
        &self,
        refreshes_itself: bool,
        at: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Health {
        match self.due(refreshes_itself, at, now) {
            Some(Due::Expired) => Health::Expired,
            Some(Due::Expiring { .. }) => Health::Expiring,
            None => Health::Ok,
        }
    }

    /// The most urgent warning due now, if any.
    #[must_use]
    pub fn due(
        &self,
        refreshes_itself: bool,
        at: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Option<Due> {
        let at = at?;
        if refreshes_itself {
            return (now >= at + self.oauth_grace).then_some(Due::Expired);
        }
        if now >= at {
            return Some(Due::Expired);
        }
        let left = at - now;
        self.levels
            .iter()
            .rev()
            .find(|(_, d)| left <= *d)
            .map(|(label, _)| Due::Expiring {
                label: label.clone(),
                left: human_duration(left.whole_seconds()),
            })
    }

    /// The next moment `due` changes its answer.
    #[must_use]
    pub fn next_change(
        &self,
        refreshes_itself: bool,
        at: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Option<OffsetDateTime> {
        let at = at?;
        let mut candidates: Vec<OffsetDateTime> = if refreshes_itself {
            vec![at + self.oauth_grace]
        } else {
            let mut v: Vec<_> = self.levels.iter().map(|(_, d)| at - *d).collect();
            v.push(at);
            v
        };
        candidates.retain(|t| *t > now);
        candidates.into_iter().min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Thresholds {
        Thresholds::from_config(&AgentConfig::default())
    }

    #[test]
    fn setup_token_walks_through_thresholds() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let at = |d: Duration| Some(now + d);
        assert_eq!(t().due(false, at(Duration::days(30)), now), None);
        assert_eq!(
            t().due(false, at(Duration::days(10)), now).unwrap().key(),
            "14d"
        );
        let due = t().due(false, at(Duration::hours(50)), now).unwrap();
        assert_eq!(
            due,
            Due::Expiring {
                label: "3d".into(),
                left: "2 d 2 h".into()
            }
        );
        assert_eq!(
            t().due(false, at(Duration::minutes(30)), now)
                .unwrap()
                .key(),
            "1h"
        );
        assert_eq!(
            t().due(false, at(Duration::seconds(-1)), now),
            Some(Due::Expired)
        );
        assert_eq!(
            t().health(false, at(Duration::days(2)), now),
            Health::Expiring
        );
        assert_eq!(
            t().next_change(false, at(Duration::days(20)), now),
            Some(now + Duration::days(6))
        );
    }

    #[test]
    fn claude_oauth_only_warns_after_grace() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let expired_5m = Some(now - Duration::minutes(5));
        let expired_11m = Some(now - Duration::minutes(11));
        assert_eq!(t().due(true, Some(now + Duration::minutes(3)), now), None);
        assert_eq!(t().due(true, expired_5m, now), None);
        assert_eq!(t().due(true, expired_11m, now), Some(Due::Expired));
        assert_eq!(
            t().next_change(true, expired_5m, now),
            Some(now + Duration::minutes(5))
        );
    }
}
