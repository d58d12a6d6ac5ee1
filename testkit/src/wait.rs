//! Waits with an overall deadline: a condition that never comes true fails the test (naming
//! what it waited for) instead of hanging CI.

use std::thread;
use std::time::{Duration, Instant};

/// How often the waits here poll.
pub const POLL: Duration = Duration::from_millis(20);

/// Polls `f` until it returns `true`.
///
/// # Panics
/// `deadline` passed first; the message names `what`.
#[track_caller]
pub fn wait_until(deadline: Duration, what: &str, mut f: impl FnMut() -> bool) {
    wait_some(deadline, what, || f().then_some(()));
}

/// Polls `f` until it returns `Some`, and returns that value.
///
/// # Panics
/// `deadline` passed first; the message names `what`.
#[track_caller]
pub fn wait_some<T>(deadline: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        thread::sleep(POLL);
    }
}

/// [`wait_some`] for async tests: polls `f` on the test's runtime (never blocking a worker)
/// until it returns `Some`.
///
/// # Panics
/// `deadline` passed first; the message names `what`.
pub async fn until_some<T>(deadline: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// [`wait_until`] for async tests.
///
/// # Panics
/// `deadline` passed first; the message names `what`.
pub async fn until(deadline: Duration, what: &str, mut f: impl FnMut() -> bool) {
    until_some(deadline, what, || f().then_some(())).await;
}

/// Polls `probe` until it returns `Ok`, for at most `timeout`.
///
/// # Errors
/// `timeout` passed; the message names `what` and the last probe's complaint.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(v) => return Ok(v),
            Err(last) if Instant::now() >= deadline => {
                return Err(format!(
                    "timed out after {timeout:?} waiting for {what}; last seen: {last}"
                ))
            }
            Err(_) => thread::sleep(POLL),
        }
    }
}

/// What is left of an overall deadline, for a loop of blocking reads that each need their
/// own timeout (`set_read_timeout(Some(d.remaining(what)))`).
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    end: Instant,
    total: Duration,
}

impl Deadline {
    /// A deadline `total` from now.
    #[must_use]
    pub fn after(total: Duration) -> Self {
        Self {
            end: Instant::now() + total,
            total,
        }
    }

    /// The time left (never zero: a zero read timeout means "block for ever").
    ///
    /// # Panics
    /// The deadline passed; the message names `what`.
    #[track_caller]
    #[must_use]
    pub fn remaining(&self, what: &str) -> Duration {
        let left = self.end.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "timed out after {:?} waiting for {what}",
            self.total
        );
        left.max(Duration::from_millis(1))
    }

    /// Whether the deadline has passed.
    #[must_use]
    pub fn passed(&self) -> bool {
        Instant::now() >= self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_until_returns_once_true() {
        let mut n = 0;
        wait_until(Duration::from_secs(5), "the third poll", || {
            n += 1;
            n == 3
        });
        assert_eq!(n, 3);
    }

    #[test]
    #[should_panic(expected = "waiting for something that never happens")]
    fn wait_until_panics_naming_what() {
        wait_until(
            Duration::from_millis(50),
            "something that never happens",
            || false,
        );
    }

    #[test]
    fn wait_for_reports_the_last_complaint() {
        let err = wait_for("a probe", Duration::from_millis(30), || {
            Err::<(), _>("still no".to_owned())
        })
        .unwrap_err();
        assert!(err.contains("a probe") && err.contains("still no"), "{err}");
    }

    #[test]
    #[should_panic(expected = "waiting for an event")]
    fn deadline_panics_once_passed() {
        let d = Deadline::after(Duration::from_millis(1));
        thread::sleep(Duration::from_millis(5));
        let _ = d.remaining("an event");
    }
}
