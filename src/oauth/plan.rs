//! When to refresh (pure): ahead of expiry, never inside Claude Code's own window, and how
//! long to back off after a transient failure.
//!
//! Claude Code refreshes only when `now + 5 min >= expiresAt` (`Ute()` in the 2.1.197 bundle;
//! ccbroker docs/design/v0.4-token-lifecycle.md CC1). Keyferry refreshes `refresh_ahead`
//! (default 60 min) before expiry and stops trying 10 minutes before it, so the two never race:
//! the last 10 minutes belong to the CLI.

use std::time::Duration;

use time::OffsetDateTime;

pub const DEFAULT_REFRESH_AHEAD: Duration = Duration::from_secs(60 * 60);
/// Claude Code's own 5-minute window plus 5 minutes of margin for clock skew and a slow call.
pub const LEAVE_TO_CLI: Duration = Duration::from_secs(10 * 60);

/// What the refresher should do with a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Inside the refresh-ahead window and outside the CLI's: refresh now.
    Now,
    /// Not yet; check again at this time.
    At(OffsetDateTime),
    /// Too close to expiry (or past it): the host CLI refreshes on its next use.
    LeaveToCli,
    /// No refresh token, or no known expiry: nothing to refresh (Claude Code does the same).
    Never,
}

/// The refresh schedule for one login.
#[must_use]
pub fn plan(
    expires_at: Option<OffsetDateTime>,
    has_refresh_token: bool,
    now: OffsetDateTime,
    refresh_ahead: Duration,
) -> Due {
    let Some(expires_at) = expires_at.filter(|_| has_refresh_token) else {
        return Due::Never;
    };
    let left = expires_at - now;
    if left <= LEAVE_TO_CLI {
        return Due::LeaveToCli;
    }
    // A refresh_ahead shorter than the CLI window would never be due; clamp it just outside.
    let ahead = refresh_ahead.max(LEAVE_TO_CLI + Duration::from_secs(60));
    if left <= ahead {
        Due::Now
    } else {
        Due::At(expires_at - ahead)
    }
}

/// Exponential backoff for transient failures: 5 s, 10 s, 20 s … capped at 10 minutes, each
/// delay drawn from its upper half so many agents do not retry in step. It never gives up and
/// never marks the login dead; `plan` hands the login to the CLI once it is close to expiry.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    failures: u32,
}

pub const BACKOFF_BASE: Duration = Duration::from_secs(5);
pub const BACKOFF_CAP: Duration = Duration::from_secs(10 * 60);

impl Backoff {
    /// Records a failure and returns how long to wait; `retry_after` from the server is a floor.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Duration {
        let exp = BACKOFF_BASE
            .saturating_mul(1u32 << self.failures.min(16))
            .min(BACKOFF_CAP);
        self.failures = self.failures.saturating_add(1);
        let half = exp / 2;
        let jittered = half + half.mul_f64(fastrand::f64());
        jittered.max(retry_after.unwrap_or_default().min(BACKOFF_CAP))
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }

    #[must_use]
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-01 06:00 UTC);

    fn at(mins: i64) -> Option<OffsetDateTime> {
        Some(NOW + time::Duration::minutes(mins))
    }

    #[test]
    fn boundaries() {
        let ahead = DEFAULT_REFRESH_AHEAD;
        assert_eq!(
            plan(at(7 * 60), true, NOW, ahead),
            Due::At(NOW + time::Duration::minutes(6 * 60))
        );
        assert_eq!(
            plan(at(61), true, NOW, ahead),
            Due::At(NOW + time::Duration::minutes(1))
        );
        assert_eq!(plan(at(60), true, NOW, ahead), Due::Now);
        assert_eq!(plan(at(20), true, NOW, ahead), Due::Now);
        assert_eq!(plan(at(11), true, NOW, ahead), Due::Now);
        assert_eq!(plan(at(10), true, NOW, ahead), Due::LeaveToCli);
        assert_eq!(plan(at(9), true, NOW, ahead), Due::LeaveToCli);
        assert_eq!(plan(at(-30), true, NOW, ahead), Due::LeaveToCli);
    }

    #[test]
    fn no_refresh_token_or_no_expiry_is_never() {
        assert_eq!(plan(at(20), false, NOW, DEFAULT_REFRESH_AHEAD), Due::Never);
        assert_eq!(plan(None, true, NOW, DEFAULT_REFRESH_AHEAD), Due::Never);
    }

    #[test]
    fn tiny_refresh_ahead_still_refreshes_before_the_cli_window() {
        let five = Duration::from_secs(300);
        assert_eq!(plan(at(11), true, NOW, five), Due::Now);
        assert_eq!(
            plan(at(12), true, NOW, five),
            Due::At(NOW + time::Duration::minutes(1))
        );
    }

    #[test]
    fn backoff_grows_jittered_and_caps() {
        let mut b = Backoff::default();
        let first = b.next_delay(None);
        assert!(
            first >= Duration::from_millis(2500) && first <= BACKOFF_BASE,
            "{first:?}"
        );
        let second = b.next_delay(None);
        assert!(
            second >= BACKOFF_BASE && second <= BACKOFF_BASE * 2,
            "{second:?}"
        );
        for _ in 0..10 {
            assert!(b.next_delay(None) <= BACKOFF_CAP);
        }
        for _ in 0..30 {
            let d = b.next_delay(None);
            assert!(d <= BACKOFF_CAP && d >= BACKOFF_CAP / 2, "{d:?}");
        }
        assert_eq!(b.next_delay(Some(Duration::from_secs(3600))), BACKOFF_CAP);
        b.reset();
        assert_eq!(b.failures(), 0);
        assert!(b.next_delay(Some(Duration::from_secs(30))) >= Duration::from_secs(30));
    }
}
