//! The single refresher against a loopback fake of the token and usage endpoints (plain http
//! and TLS with a test CA), with real `.credentials.json` files in a temporary HOME.

#[allow(dead_code)]
#[path = "kf/fake_api.rs"]
mod fake_api;
#[path = "refresher/harness.rs"]
mod harness;
#[path = "refresher/host.rs"]
mod host;

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use harness::{doc, Login, OLD_REFRESH};
use keyferry::oauth::{journal, Error, Event, Outcome, Would};
use keyferry::secret::Secret;
use testkit::fake_oauth::{Answer, FakeOauth, ACCESS_PREFIX, REFRESH_PREFIX};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_20_minutes_from_expiry_is_refreshed_once_keeping_mode_and_unknown_fields() {
    let fake = FakeOauth::plain();
    let l = Login::new(&fake, 20, 0o640);
    let mut events = l.refresher.subscribe();
    let out = l.refresher.trigger("claude").await.unwrap();
    let Outcome::Refreshed { expires_at } = out else {
        panic!("{out:?}")
    };
    assert_eq!(fake.refresh_tokens(), vec![OLD_REFRESH.to_owned()]);
    let body = fake.seen.lock().unwrap().token_bodies[0].clone();
    assert_eq!(body["grant_type"], "refresh_token");
    assert_eq!(body["client_id"], "9d1c250a-e61b-44d9-88ed-5944d1962f5e");
    assert_eq!(body["scope"], "user:inference user:profile");

    let v = l.json();
    let o = &v["claudeAiOauth"];
    assert_eq!(o["accessToken"], format!("{ACCESS_PREFIX}1"));
    assert_eq!(o["refreshToken"], format!("{REFRESH_PREFIX}1"));
    assert_eq!(
        o["expiresAt"].as_i64().unwrap(),
        i64::try_from(expires_at.unix_timestamp_nanos() / 1_000_000).unwrap()
    );
    let hours = (expires_at - time::OffsetDateTime::now_utc()).whole_minutes();
    assert!(
        (470..=480).contains(&hours),
        "expires in 8 h, not {hours} min"
    );
    assert_eq!(o["subscriptionType"], "max");
    assert_eq!(o["futureField"]["nested"], true);
    assert_eq!(v["mcpOAuth"]["server"], "kept");
    assert_eq!(l.mode(), 0o640);
    assert!(journal::load(l.journal.as_ref(), "claude")
        .unwrap()
        .is_none());
    assert!(
        !l.dir.path().join(".claude/.oauth_refresh.lock").exists(),
        "CLI lock released"
    );
    assert_eq!(
        events.try_recv().unwrap(),
        Event::Refreshed {
            name: "claude".into(),
            expires_at
        }
    );

    // Now 8 h away: further triggers do nothing.
    for _ in 0..3 {
        let out = l.refresher.trigger("claude").await.unwrap();
        assert!(matches!(out, Outcome::NotDue { at: Some(_) }), "{out:?}");
    }
    assert_eq!(fake.token_calls(), 1);
    l.assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_over_tls_needs_the_extra_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let fake = FakeOauth::tls(&ca);
    let without = Login::new(&fake, 20, 0o600);
    let err = without.refresher.trigger("claude").await.unwrap_err();
    assert_eq!(err.code(), "refresh_unavailable", "{err}");
    assert!(err.to_string().contains("request failed"), "{err}");
    assert_eq!(
        fake.token_calls(),
        0,
        "an untrusted server never gets the token"
    );
    assert!(without.text().contains(OLD_REFRESH));

    let with = Login::with_ca(&fake, 20, 0o600, Some(ca));
    let out = with.refresher.trigger("claude").await.unwrap();
    assert!(matches!(out, Outcome::Refreshed { .. }), "{out:?}");
    assert_eq!(fake.token_calls(), 1);
    assert!(with.text().contains(&format!("{REFRESH_PREFIX}1")));
    with.assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seven_hours_away_waits_and_nine_minutes_away_is_left_to_the_cli() {
    let fake = FakeOauth::plain();
    let far = Login::new(&fake, 7 * 60, 0o600);
    let out = far.refresher.trigger("claude").await.unwrap();
    assert!(matches!(out, Outcome::NotDue { at: Some(_) }), "{out:?}");
    let Would::Wait { until } = far.refresher.dry_run("claude", false).await.unwrap() else {
        panic!("dry run should wait")
    };
    let mins = (until - time::OffsetDateTime::now_utc()).whole_minutes();
    assert!(
        (358..=360).contains(&mins),
        "due 1 h before expiry, not in {mins} min"
    );

    let near = Login::new(&fake, 9, 0o600);
    assert_eq!(
        near.refresher.trigger("claude").await.unwrap(),
        Outcome::LeftToCli
    );
    assert_eq!(
        near.refresher.refresh_now("claude").await.unwrap(),
        Outcome::LeftToCli
    );
    assert_eq!(
        near.refresher.dry_run("claude", true).await.unwrap(),
        Would::LeaveToCli
    );
    assert_eq!(fake.token_calls(), 0);
    assert!(near.text().contains(OLD_REFRESH) && far.text().contains(OLD_REFRESH));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_grant_needs_login_after_one_call_and_a_fresh_login_recovers() {
    let fake = FakeOauth::plain();
    fake.set(Answer::Raw(
        400,
        r#"{"error":"invalid_grant","error_description":"Refresh token not found or invalid"}"#
            .into(),
    ));
    let l = Login::new(&fake, 20, 0o600);
    let mut events = l.refresher.subscribe();
    let err = l.refresher.trigger("claude").await.unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert!(err.to_string().contains("claude /login"), "{err}");
    assert!(matches!(
        events.try_recv().unwrap(),
        Event::NeedsLogin { .. }
    ));
    for _ in 0..5 {
        assert_eq!(
            l.refresher.trigger("claude").await.unwrap(),
            Outcome::NeedsLogin
        );
        assert_eq!(
            l.refresher.refresh_now("claude").await.unwrap(),
            Outcome::NeedsLogin
        );
    }
    assert_eq!(l.refresher.next_check("claude"), None, "nothing scheduled");
    assert_eq!(
        l.refresher.dry_run("claude", true).await.unwrap(),
        Would::NeedsLogin
    );
    assert!(l.refresher.status("claude").unwrap().needs_login);
    assert_eq!(fake.token_calls(), 1);
    assert!(
        l.text().contains(OLD_REFRESH),
        "the file is left for the user"
    );

    // The user runs `claude /login`: a new pair lands in the file.
    fake.set(Answer::Rotate);
    l.write(&doc("sk-ant-oat01-RELOGIN", "sk-ant-ort01-RELOGIN", 20));
    let out = l.refresher.trigger("claude").await.unwrap();
    assert!(matches!(out, Outcome::Refreshed { .. }), "{out:?}");
    assert_eq!(
        fake.refresh_tokens(),
        vec![OLD_REFRESH.to_owned(), "sk-ant-ort01-RELOGIN".to_owned()]
    );
    assert!(!l.refresher.status("claude").unwrap().needs_login);
    l.assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_triggers_make_one_token_call() {
    let fake = FakeOauth::plain();
    *fake.delay.lock().unwrap() = Duration::from_millis(300);
    let l = Login::new(&fake, 20, 0o600);
    let r = Arc::new(l.refresher);
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let r = Arc::clone(&r);
            tokio::spawn(async move {
                if i % 4 == 0 {
                    r.refresh_now("claude").await
                } else {
                    r.trigger("claude").await
                }
            })
        })
        .collect();
    let mut refreshed = 0;
    for t in tasks {
        match t.await.unwrap().unwrap() {
            Outcome::Refreshed { .. } => refreshed += 1,
            Outcome::NotDue { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(fake.token_calls(), 1);
    assert!(refreshed >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_answers_are_transient_and_lose_nothing() {
    let cases = [
        (
            Answer::Raw(200, "<html>oops</html>".into()),
            "refresh_bad_answer",
            "not a JSON token answer",
        ),
        (
            Answer::Raw(200, r#"{"token_type":"Bearer"}"#.into()),
            "refresh_bad_answer",
            "no access_token",
        ),
        (
            Answer::Huge,
            "refresh_bad_answer",
            "larger than 65536 bytes",
        ),
        (
            Answer::Slow(Duration::from_secs(5)),
            "refresh_timeout",
            "no complete answer within 1 s",
        ),
        (
            Answer::Raw(503, "{}".into()),
            "refresh_unavailable",
            "HTTP 503",
        ),
        (
            Answer::Raw(429, "{}".into()),
            "refresh_unavailable",
            "HTTP 429",
        ),
        (
            Answer::Raw(403, "<html>challenge</html>".into()),
            "refresh_unavailable",
            "refused the call (HTTP 403)",
        ),
    ];
    for (answer, code, message) in cases {
        let fake = FakeOauth::plain();
        fake.set(answer.clone());
        let l = Login::new(&fake, 20, 0o600);
        let before = l.text();
        let err = l.refresher.trigger("claude").await.unwrap_err();
        assert_eq!(err.code(), code, "{answer:?}: {err}");
        assert!(err.to_string().contains(message), "{answer:?}: {err}");
        assert!(!err.is_permanent());
        assert_eq!(l.text(), before, "{answer:?}: the login is untouched");
        assert!(journal::load(l.journal.as_ref(), "claude")
            .unwrap()
            .is_none());
        let status = l.refresher.status("claude").unwrap();
        assert!(
            !status.needs_login && status.retry_at.is_some(),
            "{status:?}"
        );
        // Backing off: an immediate trigger waits instead of calling again.
        let out = l.refresher.trigger("claude").await.unwrap();
        assert!(matches!(out, Outcome::BackingOff { .. }), "{out:?}");
        assert_eq!(fake.token_calls(), 1, "{answer:?}");
        l.assert_no_secret_logged();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn omitted_refresh_token_keeps_the_old_one() {
    let fake = FakeOauth::plain();
    fake.set(Answer::AccessOnly);
    let l = Login::new(&fake, 20, 0o600);
    assert!(matches!(
        l.refresher.trigger("claude").await.unwrap(),
        Outcome::Refreshed { .. }
    ));
    let v = l.json();
    assert_eq!(v["claudeAiOauth"]["refreshToken"], OLD_REFRESH);
    assert_eq!(
        v["claudeAiOauth"]["accessToken"],
        format!("{ACCESS_PREFIX}1")
    );
    assert_eq!(
        v["claudeAiOauth"]["scopes"][1], "user:profile",
        "scopes kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_answer_and_write_back_is_recovered_and_the_old_token_never_reused() {
    let fake = FakeOauth::plain();
    let l = Login::new(&fake, 20, 0o600);
    l.source.fail_writes.store(true, Ordering::SeqCst);
    let err = l.refresher.trigger("claude").await.unwrap_err();
    assert!(matches!(err, Error::Writeback { kept: true, .. }), "{err}");
    assert!(l.text().contains(OLD_REFRESH), "write-back failed");
    let pending = journal::load(l.journal.as_ref(), "claude")
        .unwrap()
        .unwrap();
    assert!(pending
        .document
        .expose()
        .contains(&format!("{REFRESH_PREFIX}1")));
    assert!(l.refresher.status("claude").unwrap().pending_writeback);

    // Still failing: later triggers retry the write-back, never the spent refresh token.
    for _ in 0..3 {
        assert!(l.refresher.refresh_now("claude").await.is_err());
    }
    assert_eq!(fake.token_calls(), 1);
    assert_eq!(
        l.refresher.dry_run("claude", true).await.unwrap(),
        Would::FinishPendingWriteback
    );

    // "Restart": a new refresher over the same journal and file.
    l.source.fail_writes.store(false, Ordering::SeqCst);
    let restarted = l.restart(&fake);
    let out = restarted.recover_pending("claude").await.unwrap();
    assert!(matches!(out, Some(Outcome::Refreshed { .. })), "{out:?}");
    let v = l.json();
    assert_eq!(
        v["claudeAiOauth"]["accessToken"],
        format!("{ACCESS_PREFIX}1")
    );
    assert_eq!(
        v["claudeAiOauth"]["refreshToken"],
        format!("{REFRESH_PREFIX}1")
    );
    assert_eq!(v["mcpOAuth"]["server"], "kept");
    assert!(journal::load(l.journal.as_ref(), "claude")
        .unwrap()
        .is_none());
    assert_eq!(restarted.recover_pending("claude").await.unwrap(), None);

    // The next refresh uses the new token; the old one was sent exactly once, ever.
    assert!(matches!(
        restarted.refresh_now("claude").await.unwrap(),
        Outcome::Refreshed { .. }
    ));
    assert_eq!(
        fake.refresh_tokens(),
        vec![OLD_REFRESH.to_owned(), format!("{REFRESH_PREFIX}1")]
    );
    l.assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_or_vanished_file_keeps_the_new_token_in_the_keychain() {
    let fake = FakeOauth::plain();
    let l = Login::new(&fake, 20, 0o600);
    std::fs::set_permissions(&l.path, std::fs::Permissions::from_mode(0o400)).unwrap();
    let err = l.refresher.trigger("claude").await.unwrap_err();
    assert_eq!(err.code(), "writeback_failed");
    assert!(err.to_string().contains("read-only"), "{err}");
    assert!(err.to_string().contains("kept in the keychain"), "{err}");
    let pending = journal::load(l.journal.as_ref(), "claude")
        .unwrap()
        .unwrap();
    assert!(pending
        .document
        .expose()
        .contains(&format!("{REFRESH_PREFIX}1")));
    std::fs::set_permissions(&l.path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(matches!(
        l.refresher.trigger("claude").await.unwrap(),
        Outcome::Refreshed { .. }
    ));
    assert!(l.text().contains(&format!("{REFRESH_PREFIX}1")));
    assert_eq!(l.mode(), 0o600);

    let gone = Login::new(&fake, 20, 0o600);
    gone.source
        .vanish_before_write
        .store(true, Ordering::SeqCst);
    let err = gone.refresher.trigger("claude").await.unwrap_err();
    assert!(err.to_string().contains("the login is gone"), "{err}");
    assert!(
        !gone.path.exists(),
        "a logged-out CLI is not logged back in behind its back"
    );
    assert!(journal::load(gone.journal.as_ref(), "claude")
        .unwrap()
        .is_some());
    let err = gone.refresher.trigger("claude").await.unwrap_err();
    assert!(matches!(err, Error::Writeback { kept: true, .. }), "{err}");
    assert_eq!(
        fake.token_calls(),
        2,
        "one call per login, no retry with a spent token"
    );
    gone.assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_changed_before_the_call_is_adopted() {
    let fake = FakeOauth::plain();
    let l = Login::new(&fake, 20, 0o600);
    assert_eq!(
        l.refresher.dry_run("claude", false).await.unwrap(),
        Would::Refresh
    );
    // The host CLI refreshed on its own meanwhile.
    l.write(&doc("sk-ant-oat01-BYCLI", "sk-ant-ort01-BYCLI", 8 * 60));
    let out = l.refresher.trigger("claude").await.unwrap();
    assert!(matches!(out, Outcome::Adopted { .. }), "{out:?}");
    assert_eq!(fake.token_calls(), 0);
    assert!(l.text().contains("sk-ant-ort01-BYCLI"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinked_credentials_file_is_refused() {
    let fake = FakeOauth::plain();
    let l = Login::new(&fake, 20, 0o600);
    let elsewhere = l.dir.path().join("elsewhere.json");
    std::fs::rename(&l.path, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &l.path).unwrap();
    let err = l.refresher.trigger("claude").await.unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert_eq!(fake.token_calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keychain_login_is_written_back_to_its_item() {
    use keyferry::oauth::writeback::KeychainLogin;
    use keyferry::oauth::{OauthConfig, Refresher};
    use keyferry::store::{ItemId, MemoryStore, Store};

    let fake = FakeOauth::plain();
    let keychain: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let item = ItemId::new("Claude Code-credentials", "me");
    keychain
        .set(
            &item,
            &Secret::new(doc("sk-ant-oat01-KC", "sk-ant-ort01-KC", 20)),
        )
        .unwrap();
    let journal: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let r = Refresher::new(
        OauthConfig {
            token_url: fake.token_url(),
            ..OauthConfig::default()
        },
        Arc::clone(&journal),
    )
    .unwrap();
    r.add(
        "claude",
        Arc::new(KeychainLogin {
            store: Arc::clone(&keychain),
            id: item.clone(),
            lock_dir: None,
        }),
    );
    assert!(matches!(
        r.trigger("claude").await.unwrap(),
        Outcome::Refreshed { .. }
    ));
    let stored = keychain.get(&item).unwrap().unwrap();
    let v: serde_json::Value = serde_json::from_str(stored.expose()).unwrap();
    assert_eq!(
        v["claudeAiOauth"]["accessToken"],
        format!("{ACCESS_PREFIX}1")
    );
    assert_eq!(
        v["claudeAiOauth"]["refreshToken"],
        format!("{REFRESH_PREFIX}1")
    );
    assert_eq!(v["claudeAiOauth"]["futureField"]["nested"], true);
    assert_eq!(v["mcpOAuth"]["server"], "kept");
    assert_eq!(fake.refresh_tokens(), vec!["sk-ant-ort01-KC".to_owned()]);
    assert!(journal.get(&journal::item("claude")).unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_ahead_is_per_login() {
    use keyferry::oauth::writeback::LoginSource;
    let fake = FakeOauth::plain();
    let l = Login::new(&fake, 7 * 60, 0o600);
    assert!(matches!(
        l.refresher.trigger("claude").await.unwrap(),
        Outcome::NotDue { .. }
    ));
    let source = Arc::clone(&l.source) as Arc<dyn LoginSource>;
    l.refresher
        .add_with("eager", source, Duration::from_secs(8 * 3600));
    assert!(matches!(
        l.refresher.trigger("eager").await.unwrap(),
        Outcome::Refreshed { .. }
    ));
    assert_eq!(fake.token_calls(), 1);
}

/// The refresher's default token URL is the one the installed Claude Code posts to, read
/// from its binary: when a new CLI moves it, this fails and names the URLs it has now.
#[test]
fn the_default_token_url_is_the_installed_claudes() {
    let bin = std::env::var_os("KEYFERRY_TEST_CLAUDE").map_or_else(
        || {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("target/npm/node_modules/.bin/claude")
        },
        std::path::PathBuf::from,
    );
    let bin = std::fs::canonicalize(&bin).unwrap_or_else(|e| {
        panic!(
            "the real claude CLI at {}: {e} (`bash scripts/test.sh` installs it)",
            bin.display()
        )
    });
    let bytes = std::fs::read(&bin).unwrap();
    let needle = b"/v1/oauth/token";
    let mut urls: Vec<String> = bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .filter_map(|(i, _)| {
            let start = bytes[..i]
                .iter()
                .rposition(|&b| !(b.is_ascii_alphanumeric() || b"-.:/".contains(&b)))
                .map_or(0, |p| p + 1);
            let url = String::from_utf8_lossy(&bytes[start..i + needle.len()]).into_owned();
            url.starts_with("https://").then_some(url)
        })
        .collect();
    urls.sort();
    urls.dedup();
    assert!(
        urls.contains(&keyferry::oauth::token::DEFAULT_TOKEN_URL.to_owned()),
        "{} posts to {urls:?}, not {}",
        bin.display(),
        keyferry::oauth::token::DEFAULT_TOKEN_URL
    );
}
