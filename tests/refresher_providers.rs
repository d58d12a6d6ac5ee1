//! The single refresher's Claude tests repeated for Codex (`~/.codex/auth.json`) and Gemini
//! CLI (`~/.gemini/oauth_creds.json`), against the same loopback fake (its Codex and Google
//! scripts), with real files in a temporary HOME.

#[path = "refresher/harness.rs"]
mod harness;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use harness::{Cli, Login};
use keyferry::credential::Credential;
use keyferry::oauth::{journal, Error, Event, Outcome, Would};
use keyferry::secret::Secret;
use testkit::fake_oauth::{
    Answer, FakeOauth, Script, CODEX_REFRESH_PREFIX, CODEX_SIG_PREFIX, GEMINI_ACCESS_PREFIX,
};

const BOTH: [Cli; 2] = [Cli::Codex, Cli::Gemini];

/// The login's tokens as the CLI would read them now.
fn served(l: &Login) -> Credential {
    Credential::parse(&Secret::new(l.text()), "login").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_20_minutes_from_expiry_is_refreshed_once_keeping_mode_and_unknown_fields() {
    for cli in BOTH {
        let fake = FakeOauth::plain();
        let l = Login::of(cli, &fake, 20, 0o640);
        let mut events = l.refresher.subscribe();
        let before = time::OffsetDateTime::now_utc();
        let out = l.refresher.trigger(cli.name()).await.unwrap();
        let Outcome::Refreshed { expires_at } = out else {
            panic!("{cli:?}: {out:?}")
        };
        assert_eq!(fake.refresh_tokens(), vec![cli.old_refresh().to_owned()]);
        let v = l.json();
        let c = served(&l);
        let elapsed = expires_at - before;
        match cli {
            Cli::Codex => assert_codex_call_and_file(&fake, &v, before, elapsed),
            Cli::Gemini => assert_gemini_call_and_file(&fake, &v, expires_at, elapsed),
            Cli::Claude => unreachable!(),
        }
        assert_eq!(c.expires_at, Some(expires_at), "{cli:?}");
        assert_eq!(v["keepMe"]["nested"], true, "{cli:?}");
        assert_eq!(l.mode(), 0o640, "{cli:?}");
        assert!(journal::load(l.journal.as_ref(), cli.name())
            .unwrap()
            .is_none());
        assert_eq!(
            events.try_recv().unwrap(),
            Event::Refreshed {
                name: cli.name().into(),
                expires_at
            }
        );
        for _ in 0..3 {
            let out = l.refresher.trigger(cli.name()).await.unwrap();
            assert!(matches!(out, Outcome::NotDue { at: Some(_) }), "{out:?}");
        }
        assert_eq!(fake.token_calls(), 1, "{cli:?}");
        l.assert_no_secret_logged();
    }
}

/// The one token call's body, content type and script.
fn the_call(fake: &FakeOauth) -> (serde_json::Value, String, Vec<Script>) {
    let seen = fake.seen.lock().unwrap();
    (
        seen.token_bodies[0].clone(),
        seen.content_types[0].clone().unwrap_or_default(),
        seen.scripts.clone(),
    )
}

/// Codex's `RefreshRequest` went out, and auth.json holds every returned token, a new
/// `last_refresh` and everything else as it was.
fn assert_codex_call_and_file(
    fake: &FakeOauth,
    v: &serde_json::Value,
    before: time::OffsetDateTime,
    lifetime: time::Duration,
) {
    let (body, content_type, scripts) = the_call(fake);
    assert_eq!(scripts, [Script::Codex]);
    assert_eq!(content_type, "application/json");
    assert_eq!(body["grant_type"], "refresh_token");
    assert_eq!(body["client_id"], "app_EMoamEEZ73f0CkXaXp7hrann");
    assert!(body.get("scope").is_none(), "Codex sends no scope: {body}");
    let access = v["tokens"]["access_token"].as_str().unwrap();
    assert!(access.ends_with(&format!("{CODEX_SIG_PREFIX}1")), "{v}");
    assert_eq!(
        v["tokens"]["refresh_token"],
        format!("{CODEX_REFRESH_PREFIX}1")
    );
    assert!(v["tokens"]["id_token"]
        .as_str()
        .unwrap()
        .ends_with(&format!("{CODEX_SIG_PREFIX}1")));
    assert_eq!(v["tokens"]["account_id"], "acct-old");
    assert_eq!(v["tokens"]["keepMeToo"], 1);
    assert!(v["OPENAI_API_KEY"].is_null());
    let last = time::OffsetDateTime::parse(
        v["last_refresh"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(last >= before - time::Duration::seconds(1), "{last}");
    assert_eq!(
        lifetime.whole_days(),
        9,
        "the new access JWT's exp, 10 days ahead"
    );
}

/// Google's form went out with the CLI's client, and oauth_creds.json holds the new access
/// token and expiry, the refresh token it had, and everything else as it was.
fn assert_gemini_call_and_file(
    fake: &FakeOauth,
    v: &serde_json::Value,
    expires_at: time::OffsetDateTime,
    lifetime: time::Duration,
) {
    let (body, content_type, scripts) = the_call(fake);
    assert_eq!(scripts, [Script::Gemini]);
    assert_eq!(content_type, "application/x-www-form-urlencoded");
    assert_eq!(body["grant_type"], "refresh_token");
    assert_eq!(
        body["client_id"],
        "681255809395-oo8ft2oprdrnp9e3aqf6av3hmdib135j.apps.googleusercontent.com"
    );
    assert_eq!(body["client_secret"], "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");
    assert_eq!(v["access_token"], format!("{GEMINI_ACCESS_PREFIX}1"));
    assert_eq!(
        v["refresh_token"],
        harness::GEMINI_OLD_REFRESH,
        "not rotated"
    );
    assert_eq!(v["id_token"], "fake.gemini.id-1");
    let ms = v["expiry_date"].as_i64().unwrap();
    assert_eq!(ms / 1000, expires_at.unix_timestamp());
    let mins = lifetime.whole_minutes();
    assert!(
        (58..=60).contains(&mins),
        "expires_in 3599 s, not {mins} min"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_triggers_make_one_token_call() {
    for cli in BOTH {
        let fake = FakeOauth::plain();
        *fake.delay.lock().unwrap() = Duration::from_millis(300);
        let l = Login::of(cli, &fake, 20, 0o600);
        let r = Arc::new(l.refresher);
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let r = Arc::clone(&r);
                tokio::spawn(async move {
                    if i % 4 == 0 {
                        r.refresh_now(cli.name()).await
                    } else {
                        r.trigger(cli.name()).await
                    }
                })
            })
            .collect();
        let mut refreshed = 0;
        for t in tasks {
            match t.await.unwrap().unwrap() {
                Outcome::Refreshed { .. } => refreshed += 1,
                Outcome::NotDue { .. } => {}
                other => panic!("{cli:?}: {other:?}"),
            }
        }
        assert_eq!(fake.token_calls(), 1, "{cli:?}");
        assert!(refreshed >= 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_refusal_needs_login_after_one_call_with_the_clis_hint() {
    let cases = [
        (
            Cli::Codex,
            401,
            r#"{"error":{"code":"refresh_token_reused","message":"Your refresh token has already been used"}}"#,
            "run `codex login`",
        ),
        (Cli::Codex, 401, "<html>", "run `codex login`"),
        (
            Cli::Gemini,
            400,
            r#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#,
            "run `gemini` and log in again",
        ),
    ];
    for (cli, status, body, hint) in cases {
        let fake = FakeOauth::plain();
        fake.set(Answer::Raw(status, body.into()));
        let l = Login::of(cli, &fake, 20, 0o600);
        let mut events = l.refresher.subscribe();
        let err = l.refresher.trigger(cli.name()).await.unwrap_err();
        assert!(err.is_permanent(), "{cli:?}: {err}");
        assert!(err.to_string().contains(hint), "{err}");
        assert!(matches!(
            events.try_recv().unwrap(),
            Event::NeedsLogin { .. }
        ));
        for _ in 0..3 {
            assert_eq!(
                l.refresher.trigger(cli.name()).await.unwrap(),
                Outcome::NeedsLogin
            );
            assert_eq!(
                l.refresher.refresh_now(cli.name()).await.unwrap(),
                Outcome::NeedsLogin
            );
        }
        let status = l.refresher.status(cli.name()).unwrap();
        assert!(status.needs_login);
        assert_eq!(status.relogin_hint, hint);
        assert_eq!(l.refresher.next_check(cli.name()), None);
        assert_eq!(fake.token_calls(), 1, "{cli:?} {body}");
        assert!(l.text().contains(cli.old_refresh()), "left for the user");
        l.assert_no_secret_logged();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_refusals_are_transient() {
    for (cli, status, body) in [
        (Cli::Codex, 400, r#"{"error":{"code":"invalid_request"}}"#),
        (Cli::Codex, 403, "<html>challenge</html>"),
        (Cli::Gemini, 401, r#"{"error":"invalid_client"}"#),
        (Cli::Gemini, 503, "{}"),
    ] {
        let fake = FakeOauth::plain();
        fake.set(Answer::Raw(status, body.into()));
        let l = Login::of(cli, &fake, 20, 0o600);
        let before = l.text();
        let err = l.refresher.trigger(cli.name()).await.unwrap_err();
        assert!(!err.is_permanent(), "{cli:?} {status} {body}: {err}");
        assert_eq!(l.text(), before);
        assert!(matches!(
            l.refresher.trigger(cli.name()).await.unwrap(),
            Outcome::BackingOff { .. }
        ));
        assert_eq!(fake.token_calls(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_answer_and_write_back_loses_nothing() {
    for cli in BOTH {
        let fake = FakeOauth::plain();
        let l = Login::of(cli, &fake, 20, 0o600);
        l.source.fail_writes.store(true, Ordering::SeqCst);
        let err = l.refresher.trigger(cli.name()).await.unwrap_err();
        assert!(matches!(err, Error::Writeback { kept: true, .. }), "{err}");
        assert!(l.text().contains(cli.old_refresh()));
        for _ in 0..3 {
            assert!(l.refresher.refresh_now(cli.name()).await.is_err());
        }
        assert_eq!(
            fake.token_calls(),
            1,
            "{cli:?}: a spent token is never sent again"
        );
        assert_eq!(
            l.refresher.dry_run(cli.name(), true).await.unwrap(),
            Would::FinishPendingWriteback
        );
        l.source.fail_writes.store(false, Ordering::SeqCst);
        let restarted = l.restart(&fake);
        let out = restarted.recover_pending(cli.name()).await.unwrap();
        assert!(matches!(out, Some(Outcome::Refreshed { .. })), "{out:?}");
        let v = l.json();
        assert_eq!(v["keepMe"]["nested"], true);
        let expected_refresh = match cli {
            Cli::Codex => format!("{CODEX_REFRESH_PREFIX}1"),
            _ => cli.old_refresh().to_owned(),
        };
        assert_eq!(served(&l).refresh_token.unwrap().expose(), expected_refresh);
        assert!(journal::load(l.journal.as_ref(), cli.name())
            .unwrap()
            .is_none());
        assert!(matches!(
            restarted.refresh_now(cli.name()).await.unwrap(),
            Outcome::Refreshed { .. }
        ));
        assert_eq!(
            fake.refresh_tokens(),
            vec![cli.old_refresh().to_owned(), expected_refresh],
            "{cli:?}"
        );
        l.assert_no_secret_logged();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_is_left_to_its_cli_from_just_before_exp_and_gemini_never_is() {
    let fake = FakeOauth::plain();
    // Codex refreshes only once `exp` has passed: Keyferry's last try is a margin before.
    let near = Login::of(Cli::Codex, &fake, 4, 0o600);
    assert_eq!(
        near.refresher.trigger("codex").await.unwrap(),
        Outcome::LeftToCli
    );
    assert_eq!(
        near.refresher.dry_run("codex", true).await.unwrap(),
        Would::LeaveToCli
    );
    let ok = Login::of(Cli::Codex, &fake, 7, 0o600);
    assert!(matches!(
        ok.refresher.trigger("codex").await.unwrap(),
        Outcome::Refreshed { .. }
    ));
    // Google's refresh tokens do not rotate, so even an expired login is refreshed.
    let expired = Login::of(Cli::Gemini, &fake, -30, 0o600);
    assert!(matches!(
        expired.refresher.trigger("gemini").await.unwrap(),
        Outcome::Refreshed { .. }
    ));
    let far = Login::of(Cli::Gemini, &fake, 3 * 60, 0o600);
    let Would::Wait { until } = far.refresher.dry_run("gemini", false).await.unwrap() else {
        panic!("a login 3 h from expiry waits")
    };
    let mins = (until - time::OffsetDateTime::now_utc()).whole_minutes();
    assert!(
        (118..=120).contains(&mins),
        "due 1 h before expiry, not in {mins} min"
    );
    assert_eq!(fake.token_calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_codex_login_the_cli_refreshed_meanwhile_is_adopted() {
    let fake = FakeOauth::plain();
    let l = Login::of(Cli::Codex, &fake, 20, 0o600);
    assert_eq!(
        l.refresher.dry_run("codex", false).await.unwrap(),
        Would::Refresh
    );
    let exp = (time::OffsetDateTime::now_utc() + time::Duration::days(10)).unix_timestamp();
    let (doc, _) = testkit::logins::codex_auth_at(
        "acct-old",
        "BYCLIsig",
        "rt_BYCLI",
        exp,
        "2026-12-01T00:00:00Z",
    );
    l.write(&doc);
    let out = l.refresher.trigger("codex").await.unwrap();
    assert!(matches!(out, Outcome::Adopted { .. }), "{out:?}");
    assert_eq!(fake.token_calls(), 0);
}

/// After Keyferry's refresh, the real Codex CLI (0.171, ChatGPT login, `codex exec`) sends
/// the new access token: its model calls go to a TLS fake (`chatgpt_base_url`, trusted
/// through `CODEX_CA_CERTIFICATE`), and its own refresh endpoint is the token fake, which
/// must see no second call (Codex did not need to refresh: it adopted Keyferry's login).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_codex_cli_uses_the_refreshed_login() {
    let fake = FakeOauth::plain();
    let l = Login::of(Cli::Codex, &fake, 20, 0o600);
    assert!(matches!(
        l.refresher.trigger("codex").await.unwrap(),
        Outcome::Refreshed { .. }
    ));
    l.assert_real_codex_uses_it(&fake).await;
}
