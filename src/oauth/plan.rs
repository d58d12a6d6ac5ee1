//! When to refresh (pure): `refresh_ahead` before expiry, never from a margin before the
//! moment the CLI starts refreshing by itself (each provider says when that is:
//! `LoginProvider::cli_refreshes_from`), and how long to back off after a transient failure.
//!
//! For Claude Code the CLI's moment is 5 minutes before `expiresAt` (`Ute()` in the 2.1.197
//! bundle; ccbroker docs/design/v0.4-token-lifecycle.md CC1), so with the 5-minute margin the
//! last 10 minutes belong to the CLI, as before the refresher had more than one provider.

use std::time::Duration;

use time::OffsetDateTime;

pub const DEFAULT_REFRESH_AHEAD: Duration = Duration::from_secs(60 * 60);
/// Kept between Keyferry's last try and the CLI's first, for clock skew and a slow call.
pub const MARGIN: Duration = Duration::from_secs(5 * 60);
/// The last chance is this long before the hand-over, so a due login is refreshed at least
/// once even with a `refresh_ahead` shorter than the CLI's window.
const LAST_CHANCE: Duration = Duration::from_secs(60);

/// What the refresher should do with a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Inside the refresh-ahead window and outside the CLI's: refresh now.
    Now,
    /// Not yet; check again at this time.
    At(OffsetDateTime),
    /// Too close to the CLI's own refresh (or past it): the host CLI refreshes on its next use.
    LeaveToCli,
    /// No refresh token, or no known expiry: nothing to refresh (the CLIs do the same).
    Never,
}

/// The refresh schedule for one login. `cli_from`: when the CLI starts refreshing it by
/// itself (`None`: racing the CLI is harmless, so there is nothing to leave to it).
#[must_use]
pub fn plan(
    expires_at: Option<OffsetDateTime>,
    has_refresh_token: bool,
    now: OffsetDateTime,
    refresh_ahead: Duration,
    cli_from: Option<OffsetDateTime>,
) -> Due {
    let Some(expires_at) = expires_at.filter(|_| has_refresh_token) else {
        return Due::Never;
    };
    let mut due = expires_at - refresh_ahead;
    if let Some(cli_from) = cli_from {
        let stop = cli_from - MARGIN;
        if now >= stop {
            return Due::LeaveToCli;
        }
        // A refresh_ahead shorter than the CLI window would never be due; clamp it just outside.
        due = due.min(stop - LAST_CHANCE);
    }
    if now >= due {
        Due::Now
    } else {
        Due::At(due)
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

    /// Claude Code's schedule: the CLI starts 5 minutes before expiry.
    fn plan(
        expires_at: Option<OffsetDateTime>,
        has_refresh_token: bool,
        now: OffsetDateTime,
        ahead: Duration,
    ) -> Due {
        let cli = expires_at.map(|e| e - Duration::from_secs(300));
        super::plan(expires_at, has_refresh_token, now, ahead, cli)
    }

    #[test]
    fn without_a_cli_window_an_expired_login_is_due_now() {
        let ahead = DEFAULT_REFRESH_AHEAD;
        assert_eq!(super::plan(at(-30), true, NOW, ahead, None), Due::Now);
        assert_eq!(super::plan(at(9), true, NOW, ahead, None), Due::Now);
        assert_eq!(
            super::plan(at(90), true, NOW, ahead, None),
            Due::At(NOW + time::Duration::minutes(30))
        );
        // Codex: the CLI takes over at exp; Keyferry's last try is 6 minutes before.
        assert_eq!(super::plan(at(7), true, NOW, ahead, at(7)), Due::Now);
        assert_eq!(super::plan(at(5), true, NOW, ahead, at(5)), Due::LeaveToCli);
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
