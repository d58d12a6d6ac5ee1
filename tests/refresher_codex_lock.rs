//! Codex 0.171's own lock on its login against Keyferry's refresher. Codex commits a refresh,
//! a login and a logout under `flock(LOCK_EX)` on `$CODEX_HOME/auth.lock`, then
//! `auth.json.lock` (`src/oauth/cli_lock/codex.rs` has the facts); Keyferry takes the same
//! two the same way from its re-read to its write-back. Here a holder that locks `auth.lock`
//! exactly as codex does (`testkit::codex::AuthLock`) makes the refresh wait and then go
//! through, or, held too long, fail with the typed error before anything is spent; the real
//! `codex` reads what Keyferry wrote; and the real `codex logout`, run while Keyferry's token
//! call is in flight, waits in its `flock` for the write-back and only then logs out. Every
//! home is a temporary directory, every endpoint a loopback fake on an ephemeral port.

#![cfg(target_os = "linux")]

#[path = "refresher/harness.rs"]
mod harness;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use harness::{Cli, Login};
use keyferry::credential::Credential;
use keyferry::domain::ErrorCode;
use keyferry::oauth::cli_lock::{AUTH_JSON_LOCK, AUTH_LOCK, CODEX_WAIT};
use keyferry::oauth::{journal, Error, Outcome};
use keyferry::secret::Secret;
use testkit::codex::AuthLock;
use testkit::fake_oauth::{FakeOauth, CODEX_SIG_PREFIX};

/// The login as codex reads it now.
fn served(l: &Login) -> Credential {
    Credential::parse(&Secret::new(l.text()), "login").unwrap()
}

fn codex_home(l: &Login) -> PathBuf {
    l.path.parent().unwrap().to_path_buf()
}

/// Polls `ready` every 10 ms without blocking the task (the refresh runs beside it), failing
/// the test after `within`.
async fn until(what: &'static str, within: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ready() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A Codex login 20 minutes from expiry, its home, its text, and its `auth.lock` held as
/// codex holds it.
fn held_login(fake: &FakeOauth) -> (Login, PathBuf, String, AuthLock) {
    let l = Login::of(Cli::Codex, fake, 20, 0o600);
    let home = codex_home(&l);
    let before = l.text();
    let held = AuthLock::hold(&home);
    (l, home, before, held)
}

/// While codex holds `auth.lock`, Keyferry neither calls the token endpoint nor writes; the
/// moment codex lets go it refreshes, and the real `codex` then sends the new access token
/// without refreshing on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_waits_for_codexs_auth_lock_and_the_real_codex_reads_the_result() {
    const HOLD: Duration = Duration::from_secs(2);
    let fake = FakeOauth::plain();
    let (l, home, before, held) = held_login(&fake);
    let started = Instant::now();
    let (out, ()) = tokio::join!(l.refresher.trigger("codex"), async {
        tokio::time::sleep(HOLD).await;
        assert_eq!(
            fake.token_calls(),
            0,
            "a token call while codex held auth.lock"
        );
        assert_eq!(
            l.text(),
            before,
            "auth.json written while codex held auth.lock"
        );
        held.release();
    });
    assert!(matches!(out, Ok(Outcome::Refreshed { .. })), "{out:?}");
    assert!(started.elapsed() >= HOLD);
    assert_eq!(fake.token_calls(), 1);
    assert!(served(&l)
        .token
        .expose()
        .ends_with(&format!("{CODEX_SIG_PREFIX}1")));
    assert!(!AuthLock::is_held(&home), "Keyferry let go of codex's lock");
    assert!(
        home.join(AUTH_JSON_LOCK).is_file(),
        "the inner lock was taken too"
    );

    l.assert_real_codex_uses_it(&fake).await;
    l.assert_no_secret_logged();
}

/// An `auth.lock` still held at Keyferry's deadline ([`CODEX_WAIT`]) is a typed error naming
/// the lock and the fix, reached before anything is spent: no token call, auth.json as it
/// was, nothing journaled, a backoff rather than `needs_login`. Once codex lets go, the next
/// refresh goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_lock_held_past_the_deadline_fails_naming_the_fix_and_loses_nothing() {
    let fake = FakeOauth::plain();
    let (l, home, before, held) = held_login(&fake);
    let started = Instant::now();
    let err = l.refresher.refresh_now("codex").await.unwrap_err();
    let waited = started.elapsed();
    assert!(
        waited >= CODEX_WAIT && waited < CODEX_WAIT + Duration::from_secs(5),
        "waited {waited:?}"
    );
    assert!(matches!(err, Error::Lock { .. }), "{err:?}");
    assert_eq!(err.code(), ErrorCode::CliRefreshing);
    assert!(!err.is_permanent());
    let text = err.to_string();
    assert!(
        text.contains(&home.join(AUTH_LOCK).display().to_string()),
        "{text}"
    );
    assert!(text.contains("fuser -v"), "names the fix: {text}");
    assert!(text.contains("nothing was spent or lost"), "{text}");
    assert_eq!(fake.token_calls(), 0);
    assert_eq!(l.text(), before);
    assert!(journal::load(l.journal.as_ref(), "codex")
        .unwrap()
        .is_none());
    let status = l.refresher.status("codex").unwrap();
    assert!(
        status.retry_at.is_some() && !status.needs_login,
        "{status:?}"
    );

    held.release();
    let out = l.refresher.refresh_now("codex").await;
    assert!(matches!(out, Ok(Outcome::Refreshed { .. })), "{out:?}");
    assert_eq!(fake.token_calls(), 1);
    l.assert_no_secret_logged();
}

/// Keyferry holds codex's locks across its token call, so the real `codex logout` started
/// meanwhile blocks in its `flock` on `auth.lock` (seen in `/proc/locks`) until the new login
/// is written, and only then deletes it: the write-back succeeds (no "the login is gone"),
/// and the user ends logged out rather than with a resurrected login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_codex_logout_waits_for_keyferrys_write_back() {
    let fake = FakeOauth::plain();
    *fake.delay.lock().unwrap() = Duration::from_secs(3);
    let l = Login::of_within(Cli::Codex, &fake, 20, Duration::from_secs(20));
    let home = codex_home(&l);
    let before = l.text();
    let token_url = fake.codex_token_url();
    let (out, logout) = tokio::join!(l.refresher.refresh_now("codex"), async {
        until("Keyferry's token call", Duration::from_secs(10), || {
            fake.token_calls() == 1
        })
        .await;
        assert!(
            AuthLock::is_held(&home),
            "Keyferry holds auth.lock across its call"
        );
        let (dir, url) = (home.clone(), token_url.clone());
        let logout = tokio::task::spawn_blocking(move || {
            testkit::codex::command(&dir, &url, &["logout"])
                .output()
                .unwrap()
        });
        until(
            "codex logout waiting on auth.lock",
            Duration::from_secs(20),
            || AuthLock::waiters(&home) >= 1,
        )
        .await;
        assert_eq!(
            l.text(),
            before,
            "codex logged out while Keyferry held its lock"
        );
        logout.await.unwrap()
    });
    let log = format!(
        "{:?}\n{}\n{}",
        logout.status,
        String::from_utf8_lossy(&logout.stdout),
        String::from_utf8_lossy(&logout.stderr)
    );
    assert!(
        matches!(out, Ok(Outcome::Refreshed { .. })),
        "{out:?}\n{log}"
    );
    assert!(logout.status.success(), "{log}");
    assert!(
        !l.path.exists(),
        "codex logout removed the refreshed login: {log}"
    );
    assert!(
        journal::load(l.journal.as_ref(), "codex")
            .unwrap()
            .is_none(),
        "the write-back went through before the logout"
    );
    assert!(!AuthLock::is_held(&home));
    l.assert_no_secret_logged();
}
