//! Codex's login in its keyring store (`cli_auth_credentials_store = "keyring"` or `"auto"`
//! in `$CODEX_HOME/config.toml`): the real agent refreshes the `Codex Auth` item on the
//! fixture's real gnome-keyring ahead of expiry and writes it back into that item (unknown
//! fields kept, no auth.json made), a refused refresh token is `needs_login` with "run `codex
//! login`", and the real `codex` CLI (0.171, which reads that item through the keyring
//! crate's Secret Service backend) sends the new access token to a loopback fake.

#![cfg(target_os = "linux")]

mod common;
mod kf;

use std::time::Duration;

use keyferry::credential::Credential;
use keyferry::oauth::login::codex_store::keyring_account;
use keyferry::secret::Secret;
use kf::{assert_no_secret, ok, text, Home};
use testkit::fake_oauth::{Answer, FakeOauth, CODEX_REFRESH_PREFIX, CODEX_SIG_PREFIX};

const SIG: &str = "OLDkeyringCODEXsigQQQQ-1111";
const REFRESH: &str = "rt_OLDkeyringCODEXrefreshRRRR-1111";
const ACCOUNT: &str = "acct-keyring";

/// A home whose Codex keeps a login expiring in `mins` in its keyring item (`store` is the
/// config's `cli_auth_credentials_store`; `codex_config` more of Codex's config), refreshed
/// against `fake`. Returns the item's account.
fn home(fake: &FakeOauth, store: &str, mins: i64, codex_config: &str) -> (Home, String) {
    let h = Home::new();
    h.write(
        ".codex/config.toml",
        &format!("cli_auth_credentials_store = \"{store}\"\n{codex_config}"),
        0o600,
    );
    let account = keyring_account(&h.path(".codex"));
    let exp = (time::OffsetDateTime::now_utc() + time::Duration::minutes(mins)).unix_timestamp();
    let (doc, _) =
        testkit::logins::codex_auth_at(ACCOUNT, SIG, REFRESH, exp, "2026-12-01T00:00:00Z");
    let mut v: serde_json::Value = serde_json::from_str(&doc).unwrap();
    v["keepMe"] = 1.into();
    h.ss.store_codex_login(&account, &v.to_string());
    h.write(
        ".config/keyferry/config.toml",
        &format!(
            "[providers.openai]\ntoken_url = \"{}\"\n[gateway]\nlisten = []\nunix_socket = false\n",
            fake.codex_token_url(),
        ),
        0o600,
    );
    (h, account)
}

/// The item's document and its parse.
fn item(h: &Home, account: &str) -> (String, Credential) {
    let text =
        h.ss.codex_login(account)
            .unwrap_or_else(|| panic!("no Codex keyring item {account}"));
    let c = Credential::parse(&Secret::new(text.clone()), "item").unwrap();
    (text, c)
}

/// What the agent serves for `codex`, once it serves a token ending in `sig`: it re-reads
/// the item after writing it back, so the item can hold the new token a moment before the
/// agent's slot does.
fn served_after_write_back(h: &Home, sig: &str) -> String {
    let mut got = String::new();
    common::wait_until(
        Duration::from_secs(10),
        "the agent to serve the written-back token",
        || {
            got = ok(&h.run(&["--require-agent", "get", "codex"], None, &[])).0;
            got.trim().ends_with(sig)
        },
    );
    got
}

fn wait_calls(fake: &FakeOauth, agent: &kf::AgentProc, n: usize) {
    common::wait_for("the token calls", Duration::from_secs(30), || {
        match fake.token_calls() {
            k if k == n => Ok(()),
            k => Err(format!("{k} token calls")),
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_text()));
}

#[test]
fn a_keyring_login_near_expiry_is_refreshed_into_its_item_and_the_real_codex_sends_it() {
    let fake = FakeOauth::plain();
    let api = testkit::FakeApi::start_tls();
    let (h, account) = home(
        &fake,
        "keyring",
        20,
        &format!("chatgpt_base_url = \"{}/backend-api/\"\n", api.url),
    );
    let agent = h.start_agent();
    wait_calls(&fake, &agent, 1);
    let new_sig = format!("{CODEX_SIG_PREFIX}1");
    common::wait_until(
        Duration::from_secs(10),
        "the write-back to the item",
        || item(&h, &account).1.token.expose().ends_with(&new_sig),
    );
    let (doc, c) = item(&h, &account);
    let new_access = c.token.expose().to_owned();
    assert_eq!(
        c.refresh_token.unwrap().expose(),
        format!("{CODEX_REFRESH_PREFIX}1")
    );
    let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(v["keepMe"], 1, "unknown fields kept: {doc}");
    assert_eq!(v["tokens"]["account_id"], ACCOUNT);
    assert_ne!(v["last_refresh"], "2026-12-01T00:00:00Z");
    assert!(!doc.contains('\n'), "compact, as Codex writes the item");
    // The same one item, still Codex's (attributes untouched), and no auth.json made.
    assert_eq!(h.ss.count_items(&["service", "Codex Auth"]), 1);
    assert_eq!(
        h.ss.count_items(&["service", "Codex Auth", "application", "rust-keyring"]),
        1
    );
    assert!(!h.path(".codex/auth.json").exists());
    // Written under Codex's own locks, which live in its home whatever the store.
    assert!(h.path(".codex/auth.lock").is_file());
    assert!(h.path(".codex/auth.json.lock").is_file());
    let got = served_after_write_back(&h, &new_sig);
    assert_eq!(got.trim(), new_access);
    assert_eq!(fake.refresh_tokens(), vec![REFRESH.to_owned()]);

    // The real Codex CLI reads the item Keyferry wrote and sends its access token; its own
    // refresh endpoint is the token fake, which must see no second call.
    let ca = h.path("api-ca.pem");
    std::fs::write(&ca, api.ca_pem.as_ref().unwrap()).unwrap();
    let codex = kf::npm_bin("codex", "@openai/codex@0.171");
    let out = h
        .command("timeout")
        .arg("60")
        .arg(&codex)
        .args(["exec", "--skip-git-repo-check", "hi"])
        .env("CODEX_HOME", h.path(".codex"))
        .env("CODEX_CA_CERTIFICATE", &ca)
        .env("CODEX_REFRESH_TOKEN_URL_OVERRIDE", fake.codex_token_url())
        .output()
        .unwrap();
    let log = format!(
        "{:?}\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    // As in refresher_providers: which token Codex sends is checked, not its answer (the
    // fake offers no workspace routing discovery). Over HTTP/2 the URI is absolute.
    let bearers = api.bearers_at(&format!("{}/backend-api/", api.url));
    assert!(!bearers.is_empty(), "codex called nothing: {log}");
    for b in &bearers {
        assert_eq!(*b, new_access, "codex sent another token: {log}");
    }
    assert_eq!(fake.token_calls(), 1, "codex refreshed on its own: {log}");
    assert!(!h.path(".codex/auth.json").exists(), "{log}");
    let (log_json, _) = ok(&h.run(&["log", "--json", "-n", "200"], None, &[]));
    assert_no_secret(
        &(log_json + &agent.log_text()),
        &[REFRESH, SIG, &format!("{CODEX_REFRESH_PREFIX}1")],
    );
}

#[test]
fn a_refused_keyring_login_is_needs_login_with_codex_login_after_one_call() {
    let fake = FakeOauth::plain();
    fake.set(Answer::Raw(
        401,
        r#"{"error":{"code":"refresh_token_expired"}}"#.into(),
    ));
    let (h, account) = home(&fake, "keyring", 20, "");
    let (before, _) = item(&h, &account);
    let agent = h.start_agent();
    let row = agent.wait_status("codex", "never needs_login", |c| {
        c.error
            .as_ref()
            .is_some_and(|e| e.code == keyferry::domain::ErrorCode::NeedsLogin)
    });
    let message = row.error.unwrap().message;
    assert!(message.contains("run `codex login`"), "{message}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(fake.token_calls(), 1, "nothing is retried in a loop");
    let out = h.run(&["refresh", "codex"], None, &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("run `codex login`"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(fake.token_calls(), 1);
    assert_eq!(
        item(&h, &account).0,
        before,
        "the dead login is left as it was"
    );
}

/// `auto`: Codex reads the item when there is one, else auth.json; Keyferry refreshes the
/// login where it is and never moves it (the stale file beside an item stays as it was).
#[test]
fn auto_refreshes_the_item_when_there_is_one_and_leaves_the_file() {
    let fake = FakeOauth::plain();
    let (h, account) = home(&fake, "auto", 20, "");
    let (stale, _) = testkit::logins::codex_auth("acct-stale", "STALEsigSSSS", "rt_STALE");
    h.write(".codex/auth.json", &stale, 0o600);
    let agent = h.start_agent();
    wait_calls(&fake, &agent, 1);
    assert_eq!(fake.refresh_tokens(), vec![REFRESH.to_owned()]);
    let new_sig = format!("{CODEX_SIG_PREFIX}1");
    common::wait_until(
        Duration::from_secs(10),
        "the write-back to the item",
        || item(&h, &account).1.token.expose().ends_with(&new_sig),
    );
    assert_eq!(
        std::fs::read_to_string(h.path(".codex/auth.json")).unwrap(),
        stale
    );
    let got = served_after_write_back(&h, &new_sig);
    assert!(got.trim().ends_with(&new_sig), "{got}");
}
