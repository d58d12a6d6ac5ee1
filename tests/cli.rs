//! The `keyferry` CLI against a real Secret Service (gnome-keyring on a private bus) in a
//! temporary HOME: the cfauth lookup chain, setup/get/status/clear, malformed files, exits,
//! and that no secret leaks into output, logs or the argv of spawned processes.

// Real Secret Service, keyutils and /proc: these run on Linux only.
#![cfg(target_os = "linux")]

mod common;
mod kf;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use common::SecretServiceFixture;
use kf::{assert_no_secret, files_containing, ok, text, Home, USER};
const SETUP: &str = "sk-ant-oat01-SETUPtokenAAAAbbbbCCCCddddEEEE-1111";
const ENVKEY: &str = "sk-ant-api03-ENVkeyFFFFggggHHHHiiiiJJJJ-2222";
const FILETOK: &str = "sk-ant-oat01-FILEtokenKKKKllllMMMMnnnnOOOO-3333";
const LOGIN_ACCESS: &str = "sk-ant-oat01-LOGINaccessPPPPqqqqRRRRssss-4444";
const LOGIN_REFRESH: &str = "sk-ant-ort01-LOGINrefreshTTTTuuuuVVVVwwww-5555";
const DOTENV: &str = "sk-ant-oat01-DOTENVtokenXXXXyyyyZZZZ0000-6666";

fn login_json(access: &str) -> String {
    format!(
        r#"{{"claudeAiOauth":{{"accessToken":"{access}","refreshToken":"{LOGIN_REFRESH}","expiresAt":4102444800000,"scopes":["user:inference","user:profile"],"subscriptionType":"max","rateLimitTier":"default_claude_max_20x","clientId":"kept"}}}}"#
    )
}

/// A home holding every source of the chain: the keychain (through `keyferry setup`), the
/// cf token file, Claude Code's login file and a `.env` listed in the config.
fn full_chain_home() -> Home {
    let h = Home::new();
    // 4. Claude Code's own login file, 5. a .env listed in the config.
    h.write(
        ".claude/.credentials.json",
        &login_json(LOGIN_ACCESS),
        0o600,
    );
    h.write(
        "proj/.env",
        &format!("# project\nCLAUDE_CODE_OAUTH_TOKEN={DOTENV}\n"),
        0o600,
    );
    h.write(
        ".config/keyferry/config.toml",
        "[credentials.claude]\nenv_files = [\"~/proj/.env\"]\n",
        0o600,
    );
    // 3. the cf token file, 2. the keychain (stored through `keyferry setup`).
    h.write(".config/cf/claude-token", &format!("{FILETOK}\n"), 0o600);
    let (_, err) = ok(&h.run(&["setup"], Some(SETUP), &[]));
    assert!(err.contains("setup-token"), "{err}");
    h
}

/// `keyferry status claude` with `envs`.
fn source(h: &Home, envs: &[(&str, &str)]) -> String {
    ok(&h.run(&["status", "claude"], None, envs)).0
}

/// `keyferry get` with `envs`.
fn get(h: &Home, envs: &[(&str, &str)]) -> String {
    ok(&h.run(&["get"], None, envs)).0.trim().to_owned()
}

/// Clears the keychain item: the cf token file is next.
fn clear_keychain(h: &Home) {
    let (_, err) = ok(&h.run(&["clear"], None, &[]));
    assert!(err.contains("keychain token cleared"), "{err}");
}

/// A 644 token file is skipped with cfauth's exact warning; Claude Code's login is next.
fn make_token_file_unsafe(h: &Home) {
    std::fs::set_permissions(
        h.path(".config/cf/claude-token"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
}

#[test]
fn chain_1_the_environment_override_beats_everything() {
    let h = full_chain_home();
    assert_eq!(get(&h, &[("CF_CLAUDE_API_KEY", ENVKEY)]), ENVKEY);
    assert!(source(&h, &[("CF_CLAUDE_API_KEY", ENVKEY)])
        .starts_with("claude: source=env:CF_CLAUDE_API_KEY kind=api-key"));
}

#[test]
fn chain_2_the_keychain_comes_next() {
    let h = full_chain_home();
    assert_eq!(get(&h, &[]), SETUP);
    assert!(source(&h, &[])
        .starts_with("claude: source=keychain:cf-claude-token kind=setup-token expires="));
}

#[test]
fn chain_3_the_cf_token_file_once_the_keychain_item_is_cleared() {
    let h = full_chain_home();
    clear_keychain(&h);
    assert_eq!(get(&h, &[]), FILETOK);
    assert!(source(&h, &[]).starts_with("claude: source=file:~/.config/cf/claude-token"));
}

#[test]
fn chain_4_an_unsafe_token_file_is_skipped_for_claude_codes_login() {
    let h = full_chain_home();
    clear_keychain(&h);
    make_token_file_unsafe(&h);
    let out = h.run(&["get"], None, &[]);
    let (stdout, stderr) = ok(&out);
    assert_eq!(stdout.trim(), LOGIN_ACCESS);
    assert!(
        stderr.contains("cf: token file ~/.config/cf/claude-token has unsafe permissions (644) — expected 600, skipping"),
        "{stderr}"
    );
    assert!(source(&h, &[]).starts_with(
        "claude: source=claude-login:file:~/.claude/.credentials.json kind=claude-oauth"
    ));
}

#[test]
fn chain_4_claude_config_dir_moves_claude_codes_login() {
    let h = full_chain_home();
    clear_keychain(&h);
    make_token_file_unsafe(&h);
    let alt = h.path("alt-claude");
    std::fs::create_dir_all(&alt).unwrap();
    h.write(
        "alt-claude/.credentials.json",
        &login_json("sk-ant-oat01-ALTloginAAAAbbbbCCCC-7777"),
        0o600,
    );
    assert_eq!(
        get(&h, &[("CLAUDE_CONFIG_DIR", alt.to_str().unwrap())]),
        "sk-ant-oat01-ALTloginAAAAbbbbCCCC-7777"
    );
}

#[test]
fn chain_5_the_dotenv_file_from_the_config() {
    let h = full_chain_home();
    clear_keychain(&h);
    make_token_file_unsafe(&h);
    std::fs::remove_file(h.path(".claude/.credentials.json")).unwrap();
    assert_eq!(get(&h, &[]), DOTENV);
    assert!(source(&h, &[]).starts_with("claude: source=dotenv:~/proj/.env"));
}

/// Nothing at all: a warning and exit 3 (cfauth's soft failure).
#[test]
fn chain_6_nothing_found_is_a_warning_and_exit_3() {
    let h = full_chain_home();
    clear_keychain(&h);
    // (A 644 token file left here would be the error instead: tests/cli_errors.rs.)
    std::fs::remove_file(h.path(".config/cf/claude-token")).unwrap();
    std::fs::remove_file(h.path(".claude/.credentials.json")).unwrap();
    std::fs::remove_file(h.path("proj/.env")).unwrap();
    let out = h.run(&["get"], None, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert!(err.contains("no token found for \"claude\""), "{err}");
    assert!(err.contains("keyferry setup"), "{err}");
}

#[test]
fn setup_get_status_clear_round_trip_through_the_real_secret_service() {
    let h = Home::new();
    let (_, err) = ok(&h.run(&["setup"], Some(&format!("  {SETUP}\n")), &[]));
    assert!(err.contains("secret-service"), "{err}");
    // cfauth compatibility: the item is where `secret-tool` (and cf) look for it.
    let lookup = h.ss.secret_tool(
        &["lookup", "service", "cf-claude-token", "username", USER],
        None,
    );
    assert_eq!(text(&lookup.stdout).trim(), SETUP);
    assert_eq!(ok(&h.run(&["get"], None, &[])).0, format!("{SETUP}\n"));
    let (out, _) = ok(&h.run(&["status", "claude", "--json"], None, &[]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["source"], "keychain:cf-claude-token");
    assert_eq!(v[0]["inspection"]["kind"], "setup-token");
    assert_eq!(v[0]["inspection"]["expiry"]["basis"], "assumed");
    assert_no_secret(&out, &[SETUP]);
    // Setup again replaces, never duplicates.
    ok(&h.run(&["setup"], Some(FILETOK), &[]));
    assert_eq!(
        h.ss.count_items(&["service", "cf-claude-token", "username", USER]),
        1
    );
    assert_eq!(ok(&h.run(&["get"], None, &[])).0.trim(), FILETOK);
    // An item written by another tool (cfauth uses `security`/`secret-tool`) is read back.
    let stored = h.ss.secret_tool(
        &[
            "store",
            "--label",
            "cf",
            "service",
            "cf-claude-token",
            "username",
            USER,
        ],
        Some(SETUP),
    );
    assert!(stored.status.success(), "{}", text(&stored.stderr));
    assert_eq!(ok(&h.run(&["get"], None, &[])).0.trim(), SETUP);
    let (_, err) = ok(&h.run(&["clear"], None, &[]));
    assert!(err.contains("cleared"), "{err}");
    assert_eq!(h.run(&["get"], None, &[]).status.code(), Some(3));
    let (_, err) = ok(&h.run(&["clear"], None, &[]));
    assert!(err.contains("nothing to clear"), "{err}");
    // The token never reached a plaintext file.
    assert_eq!(files_containing(&h.home, SETUP), Vec::<PathBuf>::new());
    assert_eq!(files_containing(&h.home, FILETOK), Vec::<PathBuf>::new());
}

/// `status` lists a CLI the user never set up as one quiet line; what the user did set up
/// (configured, or a file of it on disk) keeps its warning.
#[test]
fn status_lists_clis_never_set_up_as_one_quiet_line() {
    let h = Home::new();
    ok(&h.run(&["setup"], Some(SETUP), &[]));
    let (out, err) = ok(&h.run(&["status"], None, &[]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("claude: source=keychain:cf-claude-token"),
        "{out}"
    );
    assert_eq!(
        &lines[1..],
        ["codex: not set up", "gemini: not set up"],
        "{out}"
    );
    assert!(!err.contains("codex") && !err.contains("gemini"), "{err}");
    // Asked about by name, it still says what was tried and exits 3.
    let named = h.run(&["status", "codex"], None, &[]);
    assert_eq!(named.status.code(), Some(3));
    assert!(text(&named.stderr).contains("no token found for \"codex\""));
    // Configured by the user: missing is worth a warning again.
    h.write(
        ".config/keyferry/config.toml",
        "[credentials.codex]\n",
        0o600,
    );
    // A gemini file the chain skipped (mode 644) is something to fix, not "not set up".
    h.write(".gemini/oauth_creds.json", "{}", 0o644);
    let listed = h.run(&["status"], None, &[]);
    // A configured credential that is missing exits 3, as `status codex` does.
    assert_eq!(listed.status.code(), Some(3));
    let (out, err) = (text(&listed.stdout), text(&listed.stderr));
    assert!(out.contains("codex: source=none (not_found)"), "{out}");
    assert!(out.contains("gemini: source=none"), "{out}");
    assert!(!out.contains("not set up"), "{out}");
    assert!(err.contains("no token found for \"codex\""), "{err}");
    assert!(err.contains(".gemini/oauth_creds.json"), "{err}");
}

#[test]
fn setup_rejects_refresh_tokens_and_non_claude_tokens() {
    let h = Home::new();
    let out = h.run(&["setup"], Some(LOGIN_REFRESH), &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("refresh token"), "{err}");
    assert_no_secret(&err, &[LOGIN_REFRESH]);
    let out = h.run(&["setup"], Some("hello-world-not-a-claude-token"), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("does not look like a Claude token"));
    let out = h.run(&["setup"], Some(""), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(h.ss.count_items(&["service", "cf-claude-token"]), 0);
}

#[test]
fn locked_keychain_fails_with_the_fix_and_writes_nothing() {
    let h = Home::locked();
    let out = h.run(&["setup"], Some(SETUP), &[]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("locked"), "{err}");
    assert!(err.contains("unlock"), "{err}");
    assert_no_secret(&err, &[SETUP]);
    assert_eq!(files_containing(&h.home, SETUP), Vec::<PathBuf>::new());
    // Reading an item that sits in the locked collection fails loudly with the fix.
    h.write(
        ".config/keyferry/config.toml",
        &format!(
            "[credentials.claude]\nsources = [\"keychain:{}#{}\"]\n",
            SecretServiceFixture::CANARY_SERVICE,
            SecretServiceFixture::CANARY_ACCOUNT
        ),
        0o600,
    );
    let out = h.run(&["get"], None, &[]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("locked") && err.contains("unlock"), "{err}");
    assert!(!err.contains(SecretServiceFixture::CANARY_SECRET), "{err}");
}

#[test]
fn malformed_credential_files_name_the_file() {
    let h = Home::new();
    let broken = r#"{"claudeAiOauth":{"accessToken":"sk-ant-oat01-BROKENsecretAAAAbbbb","#;
    h.write(".claude/.credentials.json", broken, 0o600);
    let out = h.run(&["get"], None, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("claude-login:file:~/.claude/.credentials.json: malformed JSON"),
        "{err}"
    );
    assert!(!err.contains("BROKENsecret"), "{err}");

    h.write(
        ".codex/auth.json",
        r#"{"tokens": {"access_token": 12}}"#,
        0o600,
    );
    let err = text(&h.run(&["get", "codex"], None, &[]).stderr);
    assert!(
        err.contains("file:~/.codex/auth.json") && err.contains("tokens.access_token"),
        "{err}"
    );

    h.write(
        ".gemini/oauth_creds.json",
        "{\"access_token\": \"ya29.SECRETgemini\", nope}",
        0o600,
    );
    let out = h.run(&["show", "gemini"], None, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("file:~/.gemini/oauth_creds.json: malformed JSON"),
        "{err}"
    );
    assert!(!err.contains("SECRETgemini"), "{err}");

    h.write(
        ".config/keyferry/config.toml",
        "[keychain]\nbackend = \"floppy\"\n",
        0o600,
    );
    let err = text(&h.run(&["status"], None, &[]).stderr);
    assert!(
        err.contains("~/.config/keyferry/config.toml") && err.contains("floppy"),
        "{err}"
    );
}

#[test]
fn show_and_export_modes() {
    let h = Home::new();
    h.write(
        ".claude/.credentials.json",
        &login_json(LOGIN_ACCESS),
        0o600,
    );
    let (out, _) = ok(&h.run(&["show"], None, &[]));
    assert!(
        out.contains("claude-oauth") && out.contains("max") && out.contains("user:profile"),
        "{out}"
    );
    assert!(out.contains("sk-ant-oat01-…4444"), "{out}");
    assert_no_secret(&out, &[LOGIN_ACCESS, LOGIN_REFRESH]);
    let (json, _) = ok(&h.run(&["show", "--json"], None, &[]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["plan"], "max");
    assert_eq!(v["expires_at"], "2100-01-01T00:00:00Z");
    assert_eq!(v["has_refresh_token"], true);

    assert_eq!(
        ok(&h.run(&["export", "--token-only"], None, &[])).0,
        format!("{LOGIN_ACCESS}\n")
    );
    assert_eq!(
        ok(&h.run(&["export", "--export"], None, &[])).0,
        format!("export CLAUDE_CODE_OAUTH_TOKEN='{LOGIN_ACCESS}'\n")
    );
    let (json, _) = ok(&h.run(&["export", "--json"], None, &[]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["token"], LOGIN_ACCESS);
    assert_eq!(v["env_var"], "CLAUDE_CODE_OAUTH_TOKEN");
    // Default mode updates .env in place, keeping the other lines.
    h.write(
        "proj/.env",
        "# keep me\r\nexport CLAUDE_CODE_OAUTH_TOKEN='old'\r\nOTHER=1\r\n",
        0o644,
    );
    let (_, err) = ok(&h.run(&["export", "--env-file", "proj/.env"], None, &[]));
    assert_no_secret(&err, &[LOGIN_ACCESS]);
    assert_eq!(
        std::fs::read_to_string(h.path("proj/.env")).unwrap(),
        format!("# keep me\r\nexport CLAUDE_CODE_OAUTH_TOKEN='{LOGIN_ACCESS}'\r\nOTHER=1\r\n")
    );
    let mode = std::fs::metadata(h.path("proj/.env"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn trace_logs_and_spawned_argv_never_hold_a_secret() {
    let h = Home::new();
    let trace = [("RUST_LOG", "trace")];
    h.write(
        ".claude/.credentials.json",
        &login_json(LOGIN_ACCESS),
        0o600,
    );
    let (_, err) = ok(&h.run(&["setup"], Some(SETUP), &trace));
    assert!(
        err.contains("TRACE") || err.contains("DEBUG"),
        "trace logging is on: {err}"
    );
    assert_no_secret(&err, &[SETUP]);
    // Token commands print the token on stdout (their purpose) and nothing secret on stderr.
    for args in [&["get"][..], &["export", "--json"], &["get", "--json"]] {
        let (out, err) = ok(&h.run(args, None, &trace));
        assert!(err.contains("resolved"), "{args:?}: {err}");
        assert_no_secret(&err, &[SETUP, LOGIN_ACCESS, LOGIN_REFRESH]);
        assert!(out.contains(SETUP), "{args:?}: {out}");
        assert_no_secret(&out, &[LOGIN_ACCESS, LOGIN_REFRESH]);
    }
    // Inspection commands show no secret anywhere.
    for args in [&["show"][..], &["status"]] {
        let (out, err) = ok(&h.run(args, None, &trace));
        assert!(err.contains("resolved"), "{args:?}: {err}");
        assert_no_secret(
            &format!("{out}{err}"),
            &[SETUP, LOGIN_ACCESS, LOGIN_REFRESH],
        );
    }
    // Reroll runs `claude setup-token`; a stand-in records every process's argv and its
    // own environment while it runs, then prints a new token.
    let newtok = "sk-ant-oat01-REROLLEDtokenAAAAbbbbCCCC-8888";
    let ps_log = h.path("ps.log");
    let fake = h.write(
        "bin/claude",
        &format!(
            "#!/bin/sh\nps -eo args > {ps}\nenv >> {ps}\necho \"argv: $*\" >> {ps}\n\
             echo 'Visit https://claude.ai/oauth to log in'\necho 'Your OAuth token: {newtok}'\n",
            ps = ps_log.display()
        ),
        0o755,
    );
    let out = h.run(
        &[
            "reroll",
            "--no-open",
            "--run-setup-token",
            "--claude",
            fake.to_str().unwrap(),
        ],
        None,
        &trace,
    );
    let (_, err) = ok(&out);
    assert!(err.contains("Revoke the old token first"), "{err}");
    assert!(
        err.contains("sk-ant-oat01-…8888"),
        "the captured token is shown masked: {err}"
    );
    assert_no_secret(&err, &[newtok, SETUP]);
    let ps = std::fs::read_to_string(&ps_log).unwrap();
    assert!(ps.contains("setup-token"), "{ps}");
    assert_no_secret(&ps, &[SETUP, LOGIN_ACCESS, LOGIN_REFRESH]);
    assert_eq!(ok(&h.run(&["get"], None, &[])).0.trim(), newtok);
    // A stand-in that prints no token changes nothing.
    let silent = h.write(
        "bin/claude-silent",
        "#!/bin/sh\necho 'login cancelled'\nexit 1\n",
        0o755,
    );
    let out = h.run(
        &[
            "reroll",
            "--no-open",
            "--run-setup-token",
            "--claude",
            silent.to_str().unwrap(),
        ],
        None,
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("nothing was changed"));
    assert_eq!(ok(&h.run(&["get"], None, &[])).0.trim(), newtok);
}
