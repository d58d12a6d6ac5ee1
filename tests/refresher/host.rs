//! The refresher next to the host: usage figures, Claude Code's refresh lock, the real CLI
//! reading the written-back login, the schedule, and no token in errors, events or logs.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use keyferry::credential::Credential;
use keyferry::oauth::login::claude::CLAUDE;
use keyferry::oauth::usage::UsageAsk;
use keyferry::oauth::{usage, Outcome};
use keyferry::secret::Secret;
use time::macros::datetime;

use super::fake_api::{self, FakeApi};
use super::harness::{doc, Login, OLD_ACCESS, OLD_REFRESH};
use testkit::fake_oauth::{Answer, FakeOauth, ACCESS_PREFIX, REFRESH_PREFIX};

const SETUP_TOKEN: &str = "sk-ant-oat01-SETUPtokenGGGGhhhhIIII-1111";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_figures_come_from_the_fake_and_a_setup_token_says_why_not() {
    let fake = FakeOauth::plain();
    let l = Login::new(&fake, 8 * 60, 0o600);
    let scopes = ["user:inference".to_owned(), "user:profile".to_owned()];
    let old = Secret::new(OLD_ACCESS.into());
    let ask = |access, scopes| UsageAsk {
        access,
        scopes,
        account: None,
    };
    let u = usage::usage(
        l.refresher.client(),
        &fake.usage_url(),
        &CLAUDE,
        &ask(&old, &scopes),
    )
    .await
    .unwrap();
    let five = u.five_hour.unwrap();
    let seven = u.seven_day.unwrap();
    assert!((five.utilization - 37.0).abs() < f64::EPSILON);
    assert_eq!(five.resets_at, Some(datetime!(2026-12-01 11:00 UTC)));
    assert!((seven.utilization - 12.5).abs() < f64::EPSILON);
    assert_eq!(seven.resets_at, Some(datetime!(2026-12-05 08:00 UTC)));
    assert_eq!(
        fake.seen.lock().unwrap().usage_auth,
        vec![(
            Some(format!("Bearer {OLD_ACCESS}")),
            Some("oauth-2025-04-20".to_owned())
        )]
    );

    // Through the refresher: asked twice, fetched once; a new access token asks again.
    let access = Secret::new(OLD_ACCESS.into());
    let first = l
        .refresher
        .usage("claude", &CLAUDE, &ask(&access, &scopes))
        .await
        .unwrap();
    let again = l
        .refresher
        .usage("claude", &CLAUDE, &ask(&access, &scopes))
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(fake.seen.lock().unwrap().usage_auth.len(), 2);
    let newer = Secret::new(format!("{ACCESS_PREFIX}9"));
    l.refresher
        .usage("claude", &CLAUDE, &ask(&newer, &scopes))
        .await
        .unwrap();
    assert_eq!(fake.seen.lock().unwrap().usage_auth.len(), 3);

    let setup = Credential::parse(&Secret::new(SETUP_TOKEN.into()), "env").unwrap();
    let err = usage::usage(
        l.refresher.client(),
        &fake.usage_url(),
        &CLAUDE,
        &ask(&setup.token, &setup.scopes),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), "usage_no_profile_scope");
    assert_eq!(
        err.to_string(),
        "the token lacks the user:profile scope (setup-tokens do)"
    );
    assert_eq!(
        fake.seen.lock().unwrap().usage_auth.len(),
        3,
        "no call made"
    );
    let err = usage::usage(
        l.refresher.client(),
        "http://example.com/api/oauth/usage",
        &CLAUDE,
        &ask(&setup.token, &scopes),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("allowed only to loopback"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_codes_refresh_lock_is_honoured() {
    let fake = FakeOauth::plain();
    let l = Login::new(&fake, 20, 0o600);
    // A live Claude Code holds its refresh lock (fresh mtime) for longer than we wait.
    let held = l.dir.path().join(".claude/.oauth_refresh.lock");
    std::fs::create_dir(&held).unwrap();
    let err = l.refresher.trigger("claude").await.unwrap_err();
    assert_eq!(err.code(), "cli_refreshing", "{err}");
    assert!(
        err.to_string().contains("Claude Code is refreshing"),
        "{err}"
    );
    assert_eq!(fake.token_calls(), 0);
    assert!(held.is_dir(), "someone else's lock is left alone");

    // It refreshed and released the lock: we adopt its login instead of refreshing.
    l.write(&doc("sk-ant-oat01-BYCLI", "sk-ant-ort01-BYCLI", 8 * 60));
    std::fs::remove_dir(&held).unwrap();
    let out = l.refresher.trigger("claude").await.unwrap();
    assert!(matches!(out, Outcome::Adopted { .. }), "{out:?}");
    assert_eq!(fake.token_calls(), 0);

    // The legacy lock next to the directory counts too.
    let legacy = l.dir.path().join(".claude.lock");
    std::fs::create_dir(&legacy).unwrap();
    let err = l.refresher.refresh_now("claude").await.unwrap_err();
    assert_eq!(err.code(), "cli_refreshing", "{err}");
    assert!(
        !held.exists(),
        "our primary lock was released after the legacy one was busy"
    );
    assert_eq!(fake.token_calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_events_and_debug_never_hold_a_token() {
    let fake = FakeOauth::plain();
    fake.set(Answer::Raw(
        400,
        format!(r#"{{"error":"invalid_grant","error_description":"bad {OLD_REFRESH}"}}"#),
    ));
    let l = Login::new(&fake, 20, 0o600);
    let mut events = l.refresher.subscribe();
    let err = l.refresher.trigger("claude").await.unwrap_err();
    let event = events.try_recv().unwrap();
    for text in [
        err.to_string(),
        format!("{err:?}"),
        format!("{event:?}"),
        format!("{:?}", l.refresher.status("claude")),
    ] {
        assert!(!text.contains("sk-ant-"), "{text}");
    }
    let doc = Secret::new(l.text());
    let grant = keyferry::oauth::login::claude::grant_of(&doc);
    assert!(!format!("{grant:?}").contains("sk-ant-"));
    l.assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_claude_cli_uses_the_written_back_login() {
    let fake = FakeOauth::plain();
    let l = Login::new(&fake, 20, 0o600);
    assert!(matches!(
        l.refresher.trigger("claude").await.unwrap(),
        Outcome::Refreshed { .. }
    ));
    let api = FakeApi::start();
    let home = l.dir.path().to_owned();
    let claude = claude_bin();
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(claude);
        cmd.args(["-p", "ping"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .env("HOME", &home)
            .env("ANTHROPIC_BASE_URL", &api.url)
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env("DISABLE_AUTOUPDATER", "1")
            .current_dir(&home);
        let out = testkit::run_bounded(&mut cmd, None, Duration::from_secs(90)).unwrap();
        (out, api.bearers())
    })
    .await
    .unwrap();
    let (out, bearers) = out;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(fake_api::REPLY),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(bearers, vec![format!("{ACCESS_PREFIX}1")]);
    assert_eq!(fake.token_calls(), 1, "the CLI did not refresh on its own");
    assert!(l.text().contains(&format!("{REFRESH_PREFIX}1")));
}

/// The real `claude` CLI from npm: `$KEYFERRY_TEST_CLAUDE`, else what the test command
/// installs under `target/npm`.
fn claude_bin() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("KEYFERRY_TEST_CLAUDE") {
        return p.into();
    }
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/npm/node_modules/.bin/claude");
    assert!(
        p.exists(),
        "the real claude CLI is missing at {}: run `bash scripts/test.sh` or set KEYFERRY_TEST_CLAUDE",
        p.display()
    );
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_refreshes_a_due_login_and_then_waits() {
    let fake = FakeOauth::plain();
    let l = Login::new(&fake, 20, 0o600);
    let r = Arc::new(l.refresher);
    let schedule = tokio::spawn(Arc::clone(&r).run_schedule());
    let later = || time::OffsetDateTime::now_utc() + time::Duration::hours(6);
    testkit::wait::until(Duration::from_secs(20), "the schedule to refresh", || {
        r.next_check("claude").is_some_and(|next| next >= later())
    })
    .await;
    assert!(std::fs::read_to_string(&l.path)
        .unwrap()
        .contains(&format!("{REFRESH_PREFIX}1")));
    schedule.abort();
    assert_eq!(fake.token_calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_back_is_retried_with_backoff_not_in_a_loop() {
    let fake = FakeOauth::plain();
    let l = Login::new(&fake, 20, 0o600);
    l.source.fail_writes.store(true, Ordering::SeqCst);
    assert!(l.refresher.trigger("claude").await.is_err());
    let retry = l.refresher.status("claude").unwrap().retry_at.unwrap();
    assert!(retry > time::OffsetDateTime::now_utc());
    assert_eq!(l.refresher.next_check("claude"), Some(retry));
    assert_eq!(fake.token_calls(), 1);
}
