//! The real agent as the one refresher of Codex's and Gemini CLI's logins: the built-in
//! `codex` (`~/.codex/auth.json`) and `gemini` (`~/.gemini/oauth_creds.json`) credentials,
//! 20 minutes from expiry, are refreshed once through the fake's Codex and Google scripts,
//! written back, and served; a refused refresh token is `needs_login` with the CLI's hint
//! after exactly one call; `refresh = "off"` leaves a login alone; a new login that could
//! not be written back survives a kill -9 of the agent in its journal and the restarted
//! agent writes it back.

#![cfg(target_os = "linux")]

mod common;
mod kf;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use keyferry::credential::Credential;
use keyferry::secret::Secret;
use kf::{assert_no_secret, ok, text, Home};
use testkit::fake_oauth::{
    Answer, FakeOauth, CODEX_REFRESH_PREFIX, CODEX_SIG_PREFIX, GEMINI_ACCESS_PREFIX,
};

const CODEX_SIG: &str = "OLDagentCODEXsigMMMM-1111";
const CODEX_REFRESH: &str = "rt_OLDagentCODEXrefreshNNNN-1111";
const GEMINI_ACCESS: &str = "ya29.OLDagentGEMINIaccessOOOO-1111";
const GEMINI_REFRESH: &str = "1//OLDagentGEMINIrefreshPPPP-1111";

#[derive(Clone, Copy, Debug)]
enum Cli {
    Codex,
    Gemini,
}

impl Cli {
    fn name(self) -> &'static str {
        match self {
            Self::Codex => "codex",
            Self::Gemini => "gemini",
        }
    }

    fn file(self) -> &'static str {
        match self {
            Self::Codex => ".codex/auth.json",
            Self::Gemini => ".gemini/oauth_creds.json",
        }
    }

    fn old_refresh(self) -> &'static str {
        match self {
            Self::Codex => CODEX_REFRESH,
            Self::Gemini => GEMINI_REFRESH,
        }
    }
}

/// A home whose `cli` login expires in `mins`, refreshed against `fake`; `extra` is
/// appended to the config (a `[credentials.NAME]` table).
fn home(fake: &FakeOauth, cli: Cli, mins: i64, extra: &str) -> Home {
    let h = Home::new();
    let at = time::OffsetDateTime::now_utc() + time::Duration::minutes(mins);
    let doc = match cli {
        Cli::Codex => {
            testkit::logins::codex_auth_at(
                "acct-agent",
                CODEX_SIG,
                CODEX_REFRESH,
                at.unix_timestamp(),
                "2026-12-01T00:00:00Z",
            )
            .0
        }
        Cli::Gemini => testkit::logins::gemini_creds_at(
            GEMINI_ACCESS,
            GEMINI_REFRESH,
            at.unix_timestamp() * 1000,
        ),
    };
    let mut v: serde_json::Value = serde_json::from_str(&doc).unwrap();
    v["keepMe"] = 1.into();
    h.write(cli.file(), &v.to_string(), 0o600);
    h.write(
        ".config/keyferry/config.toml",
        &format!(
            "[providers.openai]\ntoken_url = \"{}\"\n[providers.google]\ntoken_url = \"{}\"\n\
             [gateway]\nlisten = []\nunix_socket = false\n{extra}",
            fake.codex_token_url(),
            fake.gemini_token_url(),
        ),
        0o600,
    );
    h
}

fn login(h: &Home, cli: Cli) -> (serde_json::Value, Credential) {
    let text = std::fs::read_to_string(h.path(cli.file())).unwrap();
    let c = Credential::parse(&Secret::new(text.clone()), "login").unwrap();
    (serde_json::from_str(&text).unwrap(), c)
}

#[test]
fn a_login_near_expiry_is_refreshed_once_written_back_and_served() {
    for cli in [Cli::Codex, Cli::Gemini] {
        let fake = FakeOauth::plain();
        let h = home(&fake, cli, 20, "");
        let agent = h.start_agent();
        common::wait_for("one token call", Duration::from_secs(30), || {
            match fake.token_calls() {
                1 => Ok(()),
                n => Err(format!("{n} token calls")),
            }
        })
        .unwrap_or_else(|e| panic!("{cli:?}: {e}\n{}", agent.log_text()));
        let new_access = || {
            let (_, c) = login(&h, cli);
            let t = c.token.expose().to_owned();
            let done = match cli {
                Cli::Codex => t.ends_with(&format!("{CODEX_SIG_PREFIX}1")),
                Cli::Gemini => t == format!("{GEMINI_ACCESS_PREFIX}1"),
            };
            done.then_some(t)
        };
        common::wait_until(Duration::from_secs(10), "the write-back", || {
            new_access().is_some()
        });
        let access = new_access().unwrap();
        let (v, c) = login(&h, cli);
        assert_eq!(v["keepMe"], 1, "{cli:?}");
        let mode =
            std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(h.path(cli.file())).unwrap());
        assert_eq!(mode & 0o777, 0o600);
        match cli {
            Cli::Codex => {
                assert_eq!(
                    c.refresh_token.unwrap().expose(),
                    format!("{CODEX_REFRESH_PREFIX}1")
                );
                assert_ne!(v["last_refresh"], "2026-12-01T00:00:00Z");
            }
            Cli::Gemini => assert_eq!(c.refresh_token.unwrap().expose(), GEMINI_REFRESH),
        }
        common::wait_for("the new token served", Duration::from_secs(10), || {
            let out = h.run(&["--require-agent", "get", cli.name()], None, &[]);
            let got = text(&out.stdout).trim().to_owned();
            if got == access {
                Ok(())
            } else {
                Err(text(&out.stderr))
            }
        })
        .unwrap_or_else(|e| panic!("{cli:?}: {e}"));
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(fake.token_calls(), 1, "{cli:?}");
        assert_eq!(fake.refresh_tokens(), vec![cli.old_refresh().to_owned()]);
        let (log, _) = ok(&h.run(&["log", "--json", "-n", "200"], None, &[]));
        assert!(log.contains("refreshed"), "{log}");
        assert_no_secret(
            &(log + &agent.log_text()),
            &[
                cli.old_refresh(),
                CODEX_SIG,
                GEMINI_ACCESS,
                CODEX_REFRESH_PREFIX,
                &access,
            ],
        );
    }
}

#[test]
fn a_refused_refresh_token_is_needs_login_with_the_clis_hint_after_one_call() {
    for (cli, status, body, hint) in [
        (
            Cli::Codex,
            401,
            r#"{"error":{"code":"refresh_token_expired"}}"#,
            "codex login",
        ),
        (
            Cli::Gemini,
            400,
            r#"{"error":"invalid_grant"}"#,
            "run `gemini` and log in again",
        ),
    ] {
        let fake = FakeOauth::plain();
        fake.set(Answer::Raw(status, body.into()));
        let h = home(&fake, cli, 20, "");
        let agent = h.start_agent();
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            let st = agent.client().status().unwrap();
            let c = st
                .credentials
                .into_iter()
                .find(|c| c.name == cli.name())
                .unwrap();
            if c.error
                .as_ref()
                .is_some_and(|e| e.code == keyferry::domain::ErrorCode::NeedsLogin)
            {
                break c;
            }
            assert!(Instant::now() < deadline, "never needs_login: {c:?}");
            std::thread::sleep(Duration::from_millis(100));
        };
        let message = status.error.unwrap().message;
        assert!(message.contains(hint), "{cli:?}: {message}");
        assert!(!message.contains("claude"), "{message}");
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(fake.token_calls(), 1, "nothing is retried in a loop");
        let out = h.run(&["refresh", cli.name()], None, &[]);
        assert!(!out.status.success());
        assert!(text(&out.stderr).contains(hint), "{}", text(&out.stderr));
        assert_eq!(fake.token_calls(), 1);
    }
}

#[test]
fn refresh_off_leaves_the_login_to_its_cli() {
    let fake = FakeOauth::plain();
    let h = home(
        &fake,
        Cli::Codex,
        20,
        "[credentials.codex]\nrefresh = \"off\"\n",
    );
    let agent = h.start_agent();
    agent.client().status().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let out = h.run(&["refresh", "codex"], None, &[]);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("no refreshable credential named \"codex\""),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(fake.token_calls(), 0);
}

/// Codex's subscription figures (`/wham/usage`, where `codex /status` gets them): `status
/// --json` and `keyferry usage codex` show both windows, asked with the host's ChatGPT
/// login and workspace; a Gemini login says it has none, with no call made.
#[test]
fn codex_usage_comes_from_wham_usage_and_gemini_has_none() {
    let fake = FakeOauth::plain();
    let extra = format!(
        "[providers.openai]\nusage_url = \"{}\"\n",
        fake.codex_usage_url()
    );
    // `home` writes `[providers.openai] token_url`: the usage_url joins that table.
    let h = home(&fake, Cli::Codex, 24 * 60, "");
    let cfg = std::fs::read_to_string(h.path(".config/keyferry/config.toml")).unwrap();
    let cfg = cfg.replacen("[providers.openai]\n", &extra, 1);
    h.write(".config/keyferry/config.toml", &cfg, 0o600);
    let (_, creds) = login(&h, Cli::Codex);
    h.write(
        Cli::Gemini.file(),
        &testkit::logins::gemini_creds(GEMINI_ACCESS, GEMINI_REFRESH),
        0o600,
    );
    let _agent = h.start_agent();
    let (json, _) = ok(&h.run(&["status", "--json"], None, &[]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let row = v
        .as_array()
        .unwrap_or_else(|| panic!("{json}"))
        .iter()
        .find(|c| c["name"] == "codex")
        .unwrap_or_else(|| panic!("{json}"))
        .clone();
    let known = &row["usage"]["known"];
    assert_eq!(known["five_hour"]["utilization"], 23.5, "{row}");
    assert_eq!(known["seven_day"]["utilization"], 4.0, "{row}");
    assert_eq!(
        known["five_hour"]["resets_at"], "2026-12-01T11:00:00Z",
        "{row}"
    );
    let seen = fake.seen.lock().unwrap().codex_usage.clone();
    assert_eq!(
        seen,
        vec![(
            Some(format!("Bearer {}", creds.token.expose())),
            Some("acct-agent".to_owned())
        )]
    );
    let (text_out, _) = ok(&h.run(&["usage", "codex"], None, &[]));
    assert!(
        text_out.contains("5-hour: 24% used, resets 2026-12-01T11:00:00Z")
            && text_out.contains("7-day: 4% used"),
        "{text_out}"
    );
    // Asked again within 5 minutes: the cached answer.
    assert_eq!(fake.seen.lock().unwrap().codex_usage.len(), 1);
    let out = h.run(&["usage", "gemini"], None, &[]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("no usage figures"),
        "{}",
        text(&out.stderr)
    );
}

/// The Codex and Gemini side of refresher_agent's kill -9 test: the write-back is refused
/// (a 0400 login file; the check is on the mode, so it holds as root too), which leaves the
/// state a kill between the token answer and the write-back leaves — the new login only in
/// the journal. The agent is then killed with SIGKILL; restarted with a writable file it
/// writes the journaled login back (mode and unknown fields kept) without a token call, and
/// the next refresh spends the new refresh token (Codex rotates it; Google's does not, so
/// there the second call carries the same one and a new access token lands).
#[test]
fn a_killed_agent_keeps_the_new_login_and_the_restart_writes_it_back() {
    for cli in [Cli::Codex, Cli::Gemini] {
        let fake = FakeOauth::plain();
        let h = home(&fake, cli, 20, "");
        let file = h.path(cli.file());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o400)).unwrap();
        let before = std::fs::read_to_string(&file).unwrap();
        let mut agent = h.start_agent();
        let row = agent.wait_status(cli.name(), "no write-back failure shown", |c| {
            c.error
                .as_ref()
                .is_some_and(|e| e.message.contains("written back"))
        });
        let message = row.error.unwrap().message;
        assert!(
            message.contains("kept in the keychain"),
            "{cli:?}: {message}"
        );
        assert_eq!(fake.refresh_tokens(), vec![cli.old_refresh().to_owned()]);
        let new_access = match cli {
            Cli::Codex => format!("{CODEX_SIG_PREFIX}1"),
            Cli::Gemini => format!("{GEMINI_ACCESS_PREFIX}1"),
        };
        // Meanwhile the journaled login is the one served.
        common::wait_for(
            "the journaled login served",
            Duration::from_secs(15),
            || {
                let out = h.run(&["--require-agent", "get", cli.name()], None, &[]);
                let got = text(&out.stdout).trim().to_owned();
                if got.ends_with(&new_access) {
                    Ok(())
                } else {
                    Err(format!("{got:?} {}", text(&out.stderr)))
                }
            },
        )
        .unwrap_or_else(|e| panic!("{cli:?}: {e}\n{}", agent.log_text()));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
        agent.stop(libc::SIGKILL);

        // Nothing is lost: the journal item in the keychain holds the new login.
        let journal = h.ss.secret_tool(
            &[
                "lookup",
                "service",
                keyferry::oauth::journal::PENDING_SERVICE,
                "username",
                cli.name(),
            ],
            None,
        );
        let journal: serde_json::Value = serde_json::from_slice(&journal.stdout)
            .unwrap_or_else(|e| panic!("{cli:?}: the journal item: {e}"));
        let pending = Credential::parse(
            &Secret::new(journal["document"].as_str().unwrap().to_owned()),
            "journal",
        )
        .unwrap();
        assert!(pending.token.expose().ends_with(&new_access), "{cli:?}");
        let new_refresh = match cli {
            Cli::Codex => format!("{CODEX_REFRESH_PREFIX}1"),
            Cli::Gemini => GEMINI_REFRESH.to_owned(),
        };
        assert_eq!(pending.refresh_token.unwrap().expose(), new_refresh);

        // Writable again, and not 0600: a write-back that reset the mode would show.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o700)).unwrap();
        let agent = h.start_agent();
        common::wait_until(Duration::from_secs(30), "the pending write-back", || {
            login(&h, cli).1.token.expose().ends_with(&new_access)
        });
        let (v, c) = login(&h, cli);
        assert_eq!(c.refresh_token.unwrap().expose(), new_refresh, "{cli:?}");
        assert_eq!(v["keepMe"], 1, "{cli:?}: unknown fields kept");
        match cli {
            Cli::Codex => {
                assert_eq!(v["tokens"]["account_id"], "acct-agent");
                assert_ne!(v["last_refresh"], "2026-12-01T00:00:00Z");
            }
            Cli::Gemini => {
                assert_eq!(v["token_type"], "Bearer");
                let expiry = v["expiry_date"].as_i64().unwrap();
                let now_ms = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
                assert!(expiry > now_ms + 30 * 60 * 1000, "{cli:?}: new expiry {v}");
            }
        }
        let mode = std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(&file).unwrap()) & 0o777;
        // The write-back's own file change triggers a flight too: give it time to (wrongly)
        // call, as a restarted agent that forgot the login's lifetime did for Gemini.
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(mode, 0o700, "{cli:?}: the file's mode kept");
        assert_eq!(
            fake.token_calls(),
            1,
            "{cli:?}: the restart spent no refresh"
        );

        // The next refresh spends the new refresh token; a rotated-away one is never sent.
        common::wait_for("a refresh of our own", Duration::from_secs(10), || {
            ok(&h.run(&["refresh", cli.name()], None, &[]));
            match fake.token_calls() {
                2 => Ok(()),
                n => Err(format!("{n} token calls")),
            }
        })
        .unwrap_or_else(|e| panic!("{cli:?}: {e}\n{}", agent.log_text()));
        assert_eq!(
            fake.refresh_tokens(),
            vec![cli.old_refresh().to_owned(), new_refresh.clone()],
            "{cli:?}"
        );
        let second = match cli {
            Cli::Codex => format!("{CODEX_SIG_PREFIX}2"),
            Cli::Gemini => format!("{GEMINI_ACCESS_PREFIX}2"),
        };
        common::wait_until(Duration::from_secs(10), "the second write-back", || {
            login(&h, cli).1.token.expose().ends_with(&second)
        });
        let (log, _) = ok(&h.run(&["log", "--json", "-n", "200"], None, &[]));
        assert_no_secret(
            &(log + &agent.log_text()),
            &[cli.old_refresh(), &new_refresh, CODEX_SIG, GEMINI_ACCESS],
        );
    }
}
