//! Expiry: health from time left, which warning is due, and when the next one falls due.

use serde::{Deserialize, Deserializer};
use time::{Duration, OffsetDateTime};

use crate::credential::human_duration;
use crate::domain::Health;

/// The longest duration anything takes (100 years): past it is a typo, not a plan.
const MAX_DURATION_DAYS: i64 = 36_500;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("bad duration {0:?}; write a number and a unit, several if you like: 90s, 30m, 1h30m, 8h, 7d")]
    Malformed(String),
    /// A bare number: seconds to one reader, minutes to another.
    #[error("duration {0:?} has no unit; write {0}s, {0}m, {0}h or {0}d")]
    NoUnit(String),
    #[error("bad duration unit {unit:?} in {text:?}; use d, h, m (or min) and s")]
    BadUnit { text: String, unit: String },
    #[error("duration {text:?} is out of range: {min} to {max}")]
    OutOfRange {
        text: String,
        min: String,
        max: String,
    },
}

/// Parses `14d`, `1h30m`, `45s`: one or more number-unit pairs (`d`, `h`, `m`/`min`, `s`),
/// summed. A unit is required; up to 100 years.
///
/// # Errors
/// A malformed duration, quoting it and naming the fix.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(DurationError::Malformed(text.to_owned()));
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DurationError::NoUnit(t.to_owned()));
    }
    let max = Duration::days(MAX_DURATION_DAYS);
    let out_of_range = || DurationError::OutOfRange {
        text: text.to_owned(),
        min: "0s".into(),
        max: format!("{MAX_DURATION_DAYS}d"),
    };
    let mut rest = t;
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(digits);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        if num.is_empty() {
            return Err(DurationError::Malformed(text.to_owned()));
        }
        // Past i64 it is out of range, not malformed: the digits are fine.
        let n: i64 = num.parse().map_err(|_| out_of_range())?;
        let per: i64 = match unit.trim() {
            "d" => 86_400,
            "h" => 3_600,
            "m" | "min" => 60,
            "s" => 1,
            "" => return Err(DurationError::Malformed(text.to_owned())),
            other => {
                return Err(DurationError::BadUnit {
                    text: text.to_owned(),
                    unit: other.to_owned(),
                })
            }
        };
        // Checked: `Duration::days(n)` panics past i64 seconds (a fuzz finding).
        let part = n
            .checked_mul(per)
            .map(Duration::seconds)
            .ok_or_else(out_of_range)?;
        total = total.checked_add(part).ok_or_else(out_of_range)?;
        if total > max {
            return Err(out_of_range());
        }
        rest = next;
    }
    Ok(total)
}

/// Parses a lifetime (`--ttl`) and checks it lies in `min..=max`, naming the range.
///
/// # Errors
/// As [`parse_duration`], or out of range.
pub fn parse_lifetime(
    text: &str,
    min: std::time::Duration,
    max: std::time::Duration,
) -> Result<std::time::Duration, DurationError> {
    let d = parse_duration(text)?;
    u64::try_from(d.whole_seconds())
        .ok()
        .map(std::time::Duration::from_secs)
        .filter(|d| (min..=max).contains(d))
        .ok_or_else(|| DurationError::OutOfRange {
            text: text.to_owned(),
            min: label(min),
            max: label(max),
        })
}

/// The lifetime limits of a gateway grant (the gateway refuses more than 366 days).
pub const GRANT_TTL_MIN: std::time::Duration = std::time::Duration::from_secs(1);
pub const GRANT_TTL_MAX: std::time::Duration = std::time::Duration::from_secs(366 * 86_400);

/// `366d`, `1h30m`, `1s`: the shortest spelling [`parse_duration`] reads back.
#[must_use]
pub fn label(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        return "0s".into();
    }
    [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")]
        .iter()
        .fold((String::new(), s), |(mut out, left), (per, unit)| {
            if left >= *per {
                out.push_str(&format!("{}{unit}", left / per));
            }
            (out, left % per)
        })
        .0
}

/// Warning levels (`14d`, `3d`, …), parsed once from config or settings, most distant first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Levels(Vec<(String, Duration)>);

impl Levels {
    /// # Errors
    /// A malformed duration, quoting it.
    pub fn parse(labels: &[String]) -> Result<Self, String> {
        let mut levels = labels
            .iter()
            .map(|t| parse_duration(t).map(|d| (t.trim().to_owned(), d)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        levels.sort_by_key(|l| std::cmp::Reverse(l.1));
        Ok(Self(levels))
    }

    /// The labels, most distant first.
    #[must_use]
    pub fn labels(&self) -> Vec<String> {
        self.0.iter().map(|(l, _)| l.clone()).collect()
    }
}

impl Default for Levels {
    fn default() -> Self {
        Self::parse(&["14d", "3d", "1d", "1h"].map(String::from)).unwrap_or(Self(Vec::new()))
    }
}

impl<'de> Deserialize<'de> for Levels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(&Vec::<String>::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

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
    pub fn new(levels: &Levels, oauth_grace_mins: u64) -> Self {
        Self {
            levels: levels.0.clone(),
            // Saturating: `Duration::minutes` panics past i64 seconds.
            oauth_grace: Duration::seconds(
                i64::try_from(oauth_grace_mins)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(60),
            ),
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
            // An expiry too close to year 9999 for the grace to be added is not due.
            let over = at.checked_add(self.oauth_grace);
            return over.is_some_and(|t| now >= t).then_some(Due::Expired);
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
        // Moments outside the representable years (at ± a huge threshold) never come.
        let mut candidates: Vec<OffsetDateTime> = if refreshes_itself {
            at.checked_add(self.oauth_grace).into_iter().collect()
        } else {
            let mut v: Vec<_> = self
                .levels
                .iter()
                .filter_map(|(_, d)| at.checked_sub(*d))
                .collect();
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
        Thresholds::new(&Levels::default(), 10)
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
    fn durations_and_levels_parse_once() {
        assert_eq!(parse_duration("30m").unwrap(), Duration::minutes(30));
        assert_eq!(parse_duration("2d").unwrap(), Duration::days(2));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("99999999999999d").is_err());
        let l = Levels::parse(&["1h".into(), "14d".into()]).unwrap();
        assert_eq!(l.labels(), ["14d", "1h"]);
        assert!(Levels::parse(&["x".into()]).is_err());
        let parsed: Levels = toml::from_str::<toml::Value>("v = [\"3d\"]").unwrap()["v"]
            .clone()
            .try_into()
            .unwrap();
        assert_eq!(parsed.labels(), ["3d"]);
    }

    #[test]
    fn compound_durations_add_up_and_need_units() {
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::minutes(90));
        assert_eq!(parse_duration("1d12h").unwrap(), Duration::hours(36));
        assert_eq!(parse_duration("2min30s").unwrap(), Duration::seconds(150));
        assert_eq!(
            parse_duration("90"),
            Err(DurationError::NoUnit("90".into()))
        );
        assert!(matches!(
            parse_duration("1h30"),
            Err(DurationError::Malformed(_))
        ));
        assert!(matches!(
            parse_duration("3w"),
            Err(DurationError::BadUnit { .. })
        ));
        assert!(matches!(
            parse_duration("36500d1s"),
            Err(DurationError::OutOfRange { .. })
        ));
        assert!(matches!(
            parse_duration("h"),
            Err(DurationError::Malformed(_))
        ));
    }

    #[test]
    fn lifetimes_are_checked_against_their_range() {
        let ttl = |t| parse_lifetime(t, GRANT_TTL_MIN, GRANT_TTL_MAX);
        assert_eq!(ttl("366d").unwrap(), GRANT_TTL_MAX);
        let err = ttl("367d").unwrap_err().to_string();
        assert_eq!(err, "duration \"367d\" is out of range: 1s to 366d");
        assert!(ttl("0s").is_err());
        assert_eq!(label(std::time::Duration::from_secs(5400)), "1h30m");
        assert_eq!(label(std::time::Duration::from_secs(86_401)), "1d1s");
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

    // Fuzz regressions (config target): a credential expiring at the last representable
    // moment (year 9999, which `expiresAt` accepts) panicked on `at + grace`; huge
    // `oauth_grace_mins` panicked in `Duration::minutes`; huge thresholds on `at - d`.
    #[test]
    fn extreme_expiries_and_settings_do_not_panic() {
        let last = OffsetDateTime::from_unix_timestamp(253_402_300_799).unwrap();
        let first = OffsetDateTime::from_unix_timestamp(-377_705_116_800).unwrap();
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let levels = Levels::parse(&["36500d".into(), "1h".into()]).unwrap();
        let huge = Thresholds::new(&levels, u64::MAX);
        for th in [t(), huge] {
            for at in [last, first, now] {
                for refreshes in [false, true] {
                    let _ = th.due(refreshes, Some(at), now);
                    let _ = th.next_change(refreshes, Some(at), now);
                }
            }
            assert_eq!(th.due(true, Some(last), now), None);
            assert_eq!(th.due(false, Some(first), now), Some(Due::Expired));
        }
        assert_eq!(t().next_change(true, Some(last), now), None);
    }
}
