//! The real agent as the one refresher: a Claude Code login 20 minutes from expiry is
//! refreshed once through a loopback token endpoint, written back to `.credentials.json`,
//! and every consumer (a `.env` sink, `keyferry get`, `watch`) follows at once; a login
//! the endpoint refuses is `needs_login` after exactly one call.

#![cfg(target_os = "linux")]

mod common;
mod kf;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use keyferry::protocol::Event;
use kf::{assert_no_secret, ok, text, Home};
use testkit::fake_oauth::{Answer, FakeOauth, ACCESS_PREFIX};

const OLD_ACCESS: &str = "sk-ant-oat01-OLDaccessAAAAbbbbCCCCdddd-1111";
const OLD_REFRESH: &str = "sk-ant-ort01-OLDrefreshEEEEffffGGGG-2222";

/// A home whose `claude` is Claude Code's own login expiring in `mins`, refreshed against
/// `fake`, with a `.env` sink.
fn home(fake: &FakeOauth, mins: i64) -> Home {
    let h = Home::new();
    let at = (time::OffsetDateTime::now_utc().unix_timestamp() + mins * 60) * 1000;
    h.write(
        ".claude/.credentials.json",
        &format!(
            r#"{{"claudeAiOauth":{{"accessToken":"{OLD_ACCESS}","refreshToken":"{OLD_REFRESH}","expiresAt":{at},"scopes":["user:inference","user:profile"],"subscriptionType":"max","keepMe":1}}}}"#
        ),
        0o600,
    );
    std::fs::create_dir_all(h.path("proj")).unwrap();
    h.write(
        ".config/keyferry/config.toml",
        &format!(
            "[oauth]\ntoken_url = \"{}\"\nusage_url = \"{}\"\n[gateway]\nlisten = []\nunix_socket = false\n\
             [[sink]]\ncredential = \"claude\"\ndotenv = \"{}\"\n",
            fake.token_url(),
            fake.usage_url(),
            h.path("proj/.env").display()
        ),
        0o600,
    );
    h
}

/// Waits (bounded) until `keyferry get` through the agent returns `want`.
fn wait_served(h: &Home, agent: &kf::AgentProc, want: &str) {
    common::wait_for(
        &format!("{want} to be served"),
        Duration::from_secs(15),
        || {
            let out = h.run(&["--require-agent", "get"], None, &[]);
            let got = text(&out.stdout).trim().to_owned();
            if got == want {
                Ok(())
            } else {
                Err(format!("{got:?} {}", text(&out.stderr)))
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_text()));
}

/// Runs `keyferry refresh` until the endpoint has seen `calls` token calls. A `refresh`
/// arriving while another flight (a start-up write-back, a file change) is open joins it and
/// makes no call of its own, so one ask is not enough.
fn refresh_until(h: &Home, fake: &FakeOauth, calls: usize) {
    common::wait_for("a refresh of our own", Duration::from_secs(10), || {
        ok(&h.run(&["refresh"], None, &[]));
        if fake.token_calls() == calls {
            Ok(())
        } else {
            Err(format!("{} token calls", fake.token_calls()))
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_login_near_expiry_is_refreshed_once_and_every_consumer_follows() {
    let fake = FakeOauth::plain();
    fake.set(Answer::Rotate);
    let h = home(&fake, 20);
    let agent = h.start_agent();
    let mut watcher = agent.client();
    watcher.watch().unwrap();
    watcher.set_timeout(Some(Duration::from_secs(2)));
    let deadline = Instant::now() + Duration::from_secs(30);
    let followed_us = loop {
        assert!(Instant::now() < deadline, "no refreshed event");
        if let Ok(Event::Refreshed { followed_us, .. }) = watcher.next_event() {
            break followed_us;
        }
    };
    eprintln!(
        "refresh -> every sink written: {:.1} ms",
        followed_us as f64 / 1000.0
    );
    assert_eq!(fake.token_calls(), 1);
    assert_eq!(fake.refresh_tokens(), vec![OLD_REFRESH.to_owned()]);
    let login = std::fs::read_to_string(h.path(".claude/.credentials.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&login).unwrap();
    let access = doc["claudeAiOauth"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(access.starts_with(ACCESS_PREFIX), "{login}");
    assert_eq!(doc["claudeAiOauth"]["keepMe"], 1);
    let mode = std::fs::metadata(h.path(".claude/.credentials.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // The sink and `get` carry the new token. A re-read the watcher started on the
    // write-back may be the newer generation that writes the sink, a moment after the
    // event (seen under load), so the sink gets a deadline rather than none.
    common::wait_until(
        Duration::from_secs(5),
        "the .env sink to carry the new token",
        || std::fs::read_to_string(h.path("proj/.env")).is_ok_and(|env| env.contains(&access)),
    );
    let (got, _) = ok(&h.run(&["--require-agent", "get"], None, &[]));
    assert_eq!(got.trim(), access);
    // A dry run calls nothing.
    let (_, err) = ok(&h.run(&["refresh", "--dry-run"], None, &[]));
    assert!(err.contains("would refresh now"), "{err}");
    assert_eq!(fake.token_calls(), 1);
    let (log, _) = ok(&h.run(&["log", "--json", "-n", "200"], None, &[]));
    assert!(
        log.contains("\"op\":\"refresh\"") && log.contains("refreshed"),
        "{log}"
    );
    assert_no_secret(&log, &[OLD_ACCESS, OLD_REFRESH]);
    assert!(!log.contains(testkit::fake_oauth::REFRESH_PREFIX));
}

#[test]
fn a_login_hours_from_expiry_is_left_alone() {
    let fake = FakeOauth::plain();
    fake.set(Answer::Rotate);
    let h = home(&fake, 7 * 60);
    let agent = h.start_agent();
    // The schedule has looked at it (the agent answers status after start-up work)…
    agent.client().status().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(fake.token_calls(), 0);
    // …and an explicit refresh still goes through the same single flight.
    let (_, err) = ok(&h.run(&["refresh"], None, &[]));
    assert!(err.contains("refreshed"), "{err}");
    assert_eq!(fake.token_calls(), 1);
}

#[test]
fn a_refused_refresh_token_means_needs_login_after_one_call() {
    let fake = FakeOauth::plain();
    fake.set(Answer::Raw(
        400,
        r#"{"error":"invalid_grant","error_description":"Refresh token not found or invalid"}"#
            .into(),
    ));
    let h = home(&fake, 20);
    let agent = h.start_agent();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let st = agent.client().status().unwrap();
        let claude = st
            .credentials
            .into_iter()
            .find(|c| c.name == "claude")
            .unwrap();
        if claude
            .error
            .as_ref()
            .is_some_and(|e| e.code == keyferry::domain::ErrorCode::NeedsLogin)
        {
            break claude;
        }
        assert!(Instant::now() < deadline, "never needs_login: {claude:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.error.unwrap().message.contains("claude /login"));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(fake.token_calls(), 1, "nothing is retried in a loop");
    let out = h.run(&["refresh"], None, &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("claude /login"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn usage_figures_come_from_the_endpoint_and_a_setup_token_says_why_there_are_none() {
    let fake = FakeOauth::plain();
    fake.set(Answer::Rotate);
    let h = home(&fake, 7 * 60);
    let agent = h.start_agent();
    let (out, _) = ok(&h.run(&["usage"], None, &[]));
    assert!(
        out.contains("claude: 5-hour: 37% used, resets 2026-12-01T11:00:00Z"),
        "{out}"
    );
    assert!(out.contains("claude: 7-day: 12% used"), "{out}");
    let (show, _) = ok(&h.run(&["show"], None, &[]));
    assert!(show.contains("usage       5-hour: 37% used"), "{show}");
    let (show, _) = ok(&h.run(&["show", "--json"], None, &[]));
    let shown: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(
        shown["usage"]["known"]["five_hour"]["utilization"], 37.0,
        "{show}"
    );
    assert_eq!(shown["kind"], "claude-oauth", "{show}");
    // `status` asks for it too, and `--json` carries it typed.
    let (st, _) = ok(&h.run(&["status"], None, &[]));
    assert!(
        st.contains("  usage 5-hour: 37% used, resets 2026-12-01T11:00:00Z"),
        "{st}"
    );
    assert!(st.contains("  usage 7-day: 12% used"), "{st}");
    let (json, _) = ok(&h.run(&["status", "--json"], None, &[]));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    let claude = rows.iter().find(|r| r["name"] == "claude").unwrap();
    assert_eq!(claude["usage"]["known"]["five_hour"]["utilization"], 37.0);
    assert_eq!(claude["usage"]["known"]["seven_day"]["utilization"], 12.5);
    // Audited, but a usage lookup is not "the last access" (no token was handed out).
    let (log, _) = ok(&h.run(&["log", "--json", "-n", "200"], None, &[]));
    assert!(log.contains(r#""op":"usage""#), "{log}");
    let last = agent.client().status().unwrap().last_access;
    assert!(
        last.as_ref()
            .map_or(true, |a| a.op != keyferry::domain::Op::Usage),
        "{last:?}"
    );
    // Polled at most every 5 minutes: four asks, one call.
    assert_eq!(fake.seen.lock().unwrap().usage_auth.len(), 1);
    // A setup-token (no user:profile scope) shadows the login: no call, and why.
    ok(&h.run(
        &["setup"],
        Some("sk-ant-oat01-SETUPnoPROFILEscopeHHHH-4444"),
        &[],
    ));
    let out = h.run(&["usage"], None, &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("user:profile"),
        "{}",
        text(&out.stderr)
    );
    let (st, _) = ok(&h.run(&["status"], None, &[]));
    assert!(
        st.contains("  usage: no figures: the token lacks the user:profile scope"),
        "{st}"
    );
    let (json, _) = ok(&h.run(&["status", "--json"], None, &[]));
    assert!(
        json.contains(r#""code": "usage_no_profile_scope""#),
        "{json}"
    );
    assert_eq!(
        fake.seen.lock().unwrap().usage_auth.len(),
        1,
        "no call for a setup-token"
    );
}

#[test]
fn a_login_whose_refresh_token_ends_soon_is_warned_about() {
    let fake = FakeOauth::plain();
    fake.set(Answer::Rotate);
    let h = Home::new();
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let (access_at, login_ends) = (now_ms + 7 * 3600 * 1000, now_ms + 2 * 86_400 * 1000);
    h.write(
        ".claude/.credentials.json",
        &format!(
            r#"{{"claudeAiOauth":{{"accessToken":"{OLD_ACCESS}","refreshToken":"{OLD_REFRESH}","expiresAt":{access_at},"refreshTokenExpiresAt":{login_ends},"scopes":["user:inference"]}}}}"#
        ),
        0o600,
    );
    h.write(
        ".config/keyferry/config.toml",
        &format!(
            "[oauth]\ntoken_url = \"{}\"\n[gateway]\nlisten = []\nunix_socket = false\n",
            fake.token_url()
        ),
        0o600,
    );
    let notifications = testkit::NotificationServer::start(h.ss.address());
    let agent = h.start_agent();
    let note = notifications
        .wait("a login-ends notification", Duration::from_secs(20), |n| {
            n.contains_all(&["claude login ends in"])
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_text()));
    assert!(note.body.contains("claude /login"), "{}", note.body);
    assert!(
        note.summary.contains("1 d") || note.summary.contains("2 d"),
        "{}",
        note.summary
    );
    assert_no_secret(
        &format!("{}{}", note.summary, note.body),
        &[OLD_ACCESS, OLD_REFRESH],
    );
    assert_eq!(fake.token_calls(), 0, "7 h from expiry: not refreshed");
}

#[test]
fn a_killed_agent_keeps_the_new_refresh_token_and_never_reuses_the_old_one() {
    let fake = FakeOauth::plain();
    fake.set(Answer::Rotate);
    let h = home(&fake, 20);
    let login = h.path(".claude/.credentials.json");
    // The write-back is refused (mode 0400; the check is on the mode, so it holds as root
    // too): the agent holds the answer only in its journal, the state a kill between the
    // token response and the write-back leaves behind.
    std::fs::set_permissions(&login, std::fs::Permissions::from_mode(0o400)).unwrap();
    let mut agent = h.start_agent();
    let deadline = Instant::now() + Duration::from_secs(30);
    let claude = loop {
        let st = agent.client().status().unwrap();
        let c = st
            .credentials
            .into_iter()
            .find(|c| c.name == "claude")
            .unwrap();
        if c.error
            .as_ref()
            .is_some_and(|e| e.message.contains("written back"))
        {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "no write-back failure shown: {c:?}\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(claude
        .error
        .unwrap()
        .message
        .contains("kept in the keychain"));
    assert_eq!(fake.refresh_tokens(), vec![OLD_REFRESH.to_owned()]);
    // Meanwhile the journaled login is what is served (the file's access token is revoked).
    let new_access = format!("{ACCESS_PREFIX}1");
    wait_served(&h, &agent, &new_access);
    let env = std::fs::read_to_string(h.path("proj/.env")).unwrap();
    assert!(env.contains(&new_access), "the .env sink follows: {env}");
    let (st, _) = ok(&h.run(&["status"], None, &[]));
    assert!(st.contains("(refreshed; write-back pending)"), "{st}");
    let before = std::fs::read_to_string(&login).unwrap();
    assert!(before.contains(OLD_REFRESH), "the old login is untouched");
    agent.stop(libc::SIGKILL);

    // Restarted with a writable file, the agent finishes the write-back before anything else.
    std::fs::set_permissions(&login, std::fs::Permissions::from_mode(0o600)).unwrap();
    let agent = h.start_agent();
    let new_refresh = format!("{}1", testkit::fake_oauth::REFRESH_PREFIX);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = std::fs::read_to_string(&login).unwrap();
        if now.contains(&new_refresh) {
            assert!(now.contains(&format!("{ACCESS_PREFIX}1")), "{now}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pending login never written back:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(fake.token_calls(), 1, "the restart spent no refresh");
    let mode = std::fs::metadata(&login).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // The next refresh spends the new refresh token; the old one is never sent again. (A
    // `refresh` arriving while the start-up write-back's flight is still open joins it and
    // makes no call of its own: ask until one does.)
    refresh_until(&h, &fake, 2);
    assert_eq!(
        fake.refresh_tokens(),
        vec![OLD_REFRESH.to_owned(), new_refresh]
    );
    let (log, _) = ok(&h.run(&["log", "--json", "-n", "200"], None, &[]));
    assert_no_secret(&log, &[OLD_ACCESS, OLD_REFRESH]);
    assert!(!log.contains(testkit::fake_oauth::REFRESH_PREFIX));
}

#[test]
fn status_never_prompts_for_usage_and_a_denied_peer_gets_no_figures() {
    let fake = FakeOauth::plain();
    fake.set(Answer::Rotate);
    let h = home(&fake, 7 * 60);
    let config = h.path(".config/keyferry/config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    // `keyferry` is not the allowed executable: the policy refuses it.
    text.push_str("[policy.claude]\nallow_exe = [\"/usr/local/bin/cf\"]\n");
    std::fs::write(&config, &text).unwrap();
    let agent = h.start_agent();
    let (st, _) = ok(&h.run(&["status", "--json"], None, &[]));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&st).unwrap();
    let claude = rows.iter().find(|r| r["name"] == "claude").unwrap();
    assert_eq!(
        claude["usage"]["unavailable"]["code"], "not_allowed",
        "{st}"
    );
    // With `ask`, `status` answers at once (no approver is asked) and says how to see them.
    text = text.replace("allow_exe = [\"/usr/local/bin/cf\"]", "mode = \"ask\"");
    std::fs::write(&config, &text).unwrap();
    drop(agent);
    let _agent = h.start_agent();
    let (st, _) = ok(&h.run(&["status"], None, &[]));
    assert!(
        st.contains("  usage: no figures: \"claude\" needs approval; `keyferry usage claude` asks"),
        "{st}"
    );
    assert_eq!(
        fake.seen.lock().unwrap().usage_auth.len(),
        0,
        "no call was made"
    );
}

#[test]
fn a_new_login_wins_over_a_pending_write_back() {
    const NEW_ACCESS: &str = "sk-ant-oat01-FRESHloginACCESSloginAAAA-7777";
    const NEW_REFRESH: &str = "sk-ant-ort01-FRESHloginREFRESHloginBBB-8888";
    let fake = FakeOauth::plain();
    fake.set(Answer::Rotate);
    let h = home(&fake, 20);
    let login = h.path(".claude/.credentials.json");
    std::fs::set_permissions(&login, std::fs::Permissions::from_mode(0o400)).unwrap();
    let agent = h.start_agent();
    wait_served(&h, &agent, &format!("{ACCESS_PREFIX}1"));
    // The user logs in again on the host (Claude Code replaces the file, writable again).
    let at = (time::OffsetDateTime::now_utc().unix_timestamp() + 7 * 3600) * 1000;
    let fresh = format!(
        r#"{{"claudeAiOauth":{{"accessToken":"{NEW_ACCESS}","refreshToken":"{NEW_REFRESH}","expiresAt":{at},"scopes":["user:inference","user:profile"]}}}}"#
    );
    let tmp = h.path(".claude/.credentials.json.new");
    std::fs::write(&tmp, &fresh).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&tmp, &login).unwrap();
    wait_served(&h, &agent, NEW_ACCESS);
    // The journaled login is dropped, never written over the new one, and the next refresh
    // spends the new login's refresh token.
    refresh_until(&h, &fake, 2);
    assert_eq!(
        fake.refresh_tokens(),
        vec![OLD_REFRESH.to_owned(), NEW_REFRESH.to_owned()]
    );
    let now = std::fs::read_to_string(&login).unwrap();
    assert!(now.contains(&format!("{ACCESS_PREFIX}2")), "{now}");
    assert!(!now.contains(&format!("{ACCESS_PREFIX}1")), "{now}");
}
