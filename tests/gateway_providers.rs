//! Codex and Gemini through the gateway, end to end with the real CLIs from npm
//! (`@openai/codex@0.171`, `@google/gemini-cli@0.61`) inside bubblewrap: the host's agent
//! reads each CLI's own login, `keyferry grant` gives the sandbox a placeholder (and, for
//! Codex, a `CODEX_HOME` with only a `config.toml`), and the fake upstream receives the
//! host's real token and account — never the placeholder — while nothing in the sandbox's
//! environment or files holds the token. Paths a CLI does not need are refused without an
//! upstream call, and a revoked grant is cut off.

#![cfg(target_os = "linux")]

mod common;
mod kf;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kf::fake_api::{FakeApi, REPLY};
use kf::{assert_no_secret, ok, text, Home};
use testkit::logins;

const RUN: Duration = Duration::from_secs(120);
const SB: &str = "/home/sandbox";
const CODEX_SIG: &str = "REALcodexSIGNATUREmustNOTleak-7777";
const CODEX_REFRESH: &str = "rt_REALcodexREFRESHmustNOTleak-8888";
const ACCOUNT: &str = "acct-host-1234";
const GEMINI: &str = "ya29.REALgeminiACCESSmustNOTleak-5555";
const GEMINI_REFRESH: &str = "1//REALgeminiREFRESHmustNOTleak-6666";

/// A home whose agent reads the CLIs' own logins and sends both providers to `api`.
fn home(api: &FakeApi) -> (Home, String) {
    let h = Home::new();
    h.write(
        ".config/keyferry/config.toml",
        &format!(
            "[gateway]\nlisten = [\"127.0.0.1:0\"]\nunix_socket = false\n\
             [providers.openai]\nupstream = \"{0}\"\n[providers.google]\nupstream = \"{0}\"\n",
            api.url
        ),
        0o600,
    );
    let (auth, access) = logins::codex_auth(ACCOUNT, CODEX_SIG, CODEX_REFRESH);
    h.write(".codex/auth.json", &auth, 0o600);
    h.write(
        ".gemini/oauth_creds.json",
        &logins::gemini_creds(GEMINI, GEMINI_REFRESH),
        0o600,
    );
    (h, access)
}

/// `KEY=value` lines into pairs.
fn vars(env: &str) -> Vec<(String, String)> {
    env.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn var<'a>(vars: &'a [(String, String)], key: &str) -> &'a str {
    vars.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key} in {vars:?}"))
}

/// Runs `script` in bubblewrap: the test's folder (the agent's home, its keyring, bus and
/// sockets; `boxdir` sits in it) and `/home` hidden, `boxdir` as the sandbox's HOME,
/// exactly `env` set. (Not all of `/tmp`: the CLIs may be installed under it, as in a CI
/// checkout there.)
fn sandbox(boxdir: &Path, env: &[(&str, &str)], script: &str) -> std::process::Output {
    let mut cmd = Command::new("bwrap");
    cmd.args(["--die-with-parent", "--dev-bind", "/", "/"])
        .args(["--tmpfs", boxdir.parent().unwrap().to_str().unwrap()])
        .args(["--tmpfs", "/home"])
        .args(["--bind", boxdir.to_str().unwrap(), SB])
        .args(["--setenv", "HOME", SB, "--chdir", SB, "bash", "-c", script])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .envs(env.iter().copied());
    testkit::run_bounded(&mut cmd, None, RUN)
        .unwrap_or_else(|e| panic!("bwrap (Debian package bubblewrap): {e}"))
}

/// Every file under `dir` holding any of `needles`.
fn files_containing(dir: &Path, needles: &[&str]) -> Vec<PathBuf> {
    needles
        .iter()
        .flat_map(|n| kf::files_containing(dir, n))
        .collect()
}

/// What a refused path answers, asked with the placeholder from inside nothing (the test).
fn ask(addr: &str, method: &str, path: &str, placeholder: &str) -> u16 {
    let auth = format!("Authorization: Bearer {placeholder}\r\n");
    let answer = kf::raw_http(addr, method, path, &auth, "");
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn codex_in_bubblewrap_holds_a_placeholder_and_upstream_gets_the_hosts_login() {
    let api = FakeApi::start();
    let (h, access) = home(&api);
    let _agent = h.start_agent();
    let boxdir = h._dir.path().join("box");
    std::fs::create_dir(&boxdir).unwrap();
    let codex_home = boxdir.join("codex");
    let out = h.run(
        &[
            "grant",
            "cbox",
            "--cred",
            "codex",
            "--ttl",
            "1h",
            "--codex-home",
            codex_home.to_str().unwrap(),
        ],
        None,
        &[],
    );
    let (env, stderr) = ok(&out);
    let v = vars(&env);
    let placeholder = var(&v, "KEYFERRY_CODEX_TOKEN").to_owned();
    assert!(placeholder.starts_with("kfg_"), "{env}");
    assert_eq!(var(&v, "CODEX_HOME"), codex_home.to_str().unwrap());
    assert!(stderr.contains("config.toml"), "{stderr}");
    let config = std::fs::read_to_string(codex_home.join("config.toml")).unwrap();
    let base = config
        .lines()
        .find_map(|l| l.strip_prefix("base_url = \""))
        .and_then(|l| l.strip_suffix("/backend-api/codex\""))
        .unwrap_or_else(|| panic!("{config}"))
        .to_owned();
    let addr = base.strip_prefix("http://").unwrap().to_owned();

    let codex = kf::npm_bin("codex", "@openai/codex@0.171");
    let script = format!(
        "env > {SB}/env.txt; exec {} exec --skip-git-repo-check 'say hi'",
        codex.display()
    );
    let sb_home = format!("{SB}/codex");
    let out = sandbox(
        &boxdir,
        &[
            ("CODEX_HOME", sb_home.as_str()),
            ("KEYFERRY_CODEX_TOKEN", placeholder.as_str()),
        ],
        &script,
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "codex: {stdout}\n{stderr}");
    assert!(stdout.contains(REPLY), "codex's answer: {stdout}\n{stderr}");

    let calls: Vec<_> = api
        .seen()
        .into_iter()
        .filter(|s| s.uri.starts_with("/backend-api/"))
        .collect();
    assert!(!calls.is_empty(), "no Codex call reached upstream");
    for s in &calls {
        assert_eq!(s.uri, "/backend-api/codex/responses");
        assert_eq!(
            s.headers["authorization"],
            format!("Bearer {access}").as_str()
        );
        assert_eq!(s.headers["chatgpt-account-id"], ACCOUNT);
        assert!(!format!("{:?}", s.headers).contains(&placeholder));
    }
    // The sandbox's environment and every file it wrote hold the placeholder only.
    let secrets = [CODEX_SIG, CODEX_REFRESH];
    let env_dump = std::fs::read_to_string(boxdir.join("env.txt")).unwrap();
    assert!(env_dump.contains(&placeholder));
    assert_no_secret(&env_dump, &secrets);
    assert_no_secret(&format!("{stdout}{stderr}"), &secrets);
    assert_eq!(files_containing(&boxdir, &secrets), Vec::<PathBuf>::new());
    assert!(!codex_home.join("auth.json").exists());

    // Paths Codex does not need never reach upstream, placeholder or not.
    let before = api.seen().len();
    for (m, p) in [
        ("GET", "/backend-api/wham/accounts/check"),
        ("POST", "/backend-api/codex/responses/../../wham/tasks"),
        ("POST", "/v1/messages"),
    ] {
        assert_eq!(ask(&addr, m, p, &placeholder), 404, "{m} {p}");
    }
    assert_eq!(api.seen().len(), before);
    // The grant metered the answer's usage: 11 in (3 cached), 5 out.
    let grants = ok(&h.run(&["grants", "--json"], None, &[])).0;
    let g: Vec<keyferry::domain::GrantInfo> = serde_json::from_str(&grants).unwrap();
    let g = g.iter().find(|g| g.name == "cbox").unwrap();
    // Requests count the three refusals too (each opened the grant).
    let n = calls.len() as u64;
    assert_eq!(
        (
            g.requests,
            g.input_tokens,
            g.cache_read_input_tokens,
            g.output_tokens
        ),
        (n + 3, 8 * n, 3 * n, 5 * n),
        "{g:?}"
    );
    // Revoked: the same placeholder is refused, upstream not called.
    // (Another grant keeps the listener open: with none left it closes, and a revoked
    // sandbox meets a refused connection instead.)
    ok(&h.run(
        &["grant", "keep", "--cred", "codex", "--ttl", "1h"],
        None,
        &[],
    ));
    ok(&h.run(&["revoke", "cbox"], None, &[]));
    assert_eq!(
        ask(&addr, "POST", "/backend-api/codex/responses", &placeholder),
        401
    );
    assert_eq!(api.seen().len(), before);
}

#[test]
fn gemini_in_bubblewrap_holds_a_placeholder_and_upstream_gets_the_hosts_token() {
    let api = FakeApi::start();
    let (h, _) = home(&api);
    let _agent = h.start_agent();
    let boxdir = h._dir.path().join("gbox");
    std::fs::create_dir(&boxdir).unwrap();
    let (env, _) = ok(&h.run(
        &["grant", "gbox", "--cred", "gemini", "--ttl", "1h"],
        None,
        &[("GOOGLE_CLOUD_PROJECT", "host-project-1")],
    ));
    let v = vars(&env);
    let placeholder = var(&v, "GOOGLE_CLOUD_ACCESS_TOKEN").to_owned();
    assert!(placeholder.starts_with("kfg_"), "{env}");
    assert_eq!(var(&v, "GOOGLE_GENAI_USE_GCA"), "true");
    assert_eq!(var(&v, "GOOGLE_CLOUD_PROJECT"), "host-project-1");
    let endpoint = var(&v, "CODE_ASSIST_ENDPOINT").to_owned();
    let addr = endpoint.strip_prefix("http://").unwrap().to_owned();

    let gemini = kf::npm_bin("gemini", "@google/gemini-cli@0.61");
    let script = format!(
        "env > {SB}/env.txt; exec {} -p 'say hi' -m gemini-2.5-flash",
        gemini.display()
    );
    let mut sandbox_env: Vec<(&str, &str)> = v
        .iter()
        .filter(|(k, _)| k != "GOOGLE_CLOUD_PROJECT")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    sandbox_env.extend([
        ("GEMINI_CLI_TRUST_WORKSPACE", "true"),
        ("NO_BROWSER", "true"),
        ("GEMINI_TELEMETRY_ENABLED", "false"),
    ]);
    let out = sandbox(&boxdir, &sandbox_env, &script);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "gemini: {stdout}\n{stderr}");
    assert!(
        stdout.contains(REPLY),
        "gemini's answer: {stdout}\n{stderr}"
    );

    let calls: Vec<_> = api
        .seen()
        .into_iter()
        .filter(|s| s.uri.starts_with("/v1internal"))
        .collect();
    assert!(
        calls
            .iter()
            .any(|s| s.uri.starts_with("/v1internal:streamGenerateContent")),
        "{calls:?}"
    );
    for s in &calls {
        assert_eq!(
            s.headers["authorization"],
            format!("Bearer {GEMINI}").as_str(),
            "{}",
            s.uri
        );
    }
    let secrets = [GEMINI, GEMINI_REFRESH];
    let env_dump = std::fs::read_to_string(boxdir.join("env.txt")).unwrap();
    assert!(env_dump.contains(&placeholder));
    assert_no_secret(&env_dump, &secrets);
    assert_no_secret(&format!("{stdout}{stderr}"), &secrets);
    assert_eq!(files_containing(&boxdir, &secrets), Vec::<PathBuf>::new());

    let before = api.seen().len();
    for (m, p) in [
        ("POST", "/v1internal:deleteProject"),
        ("GET", "/v1internal:loadCodeAssist"),
        ("POST", "/v1beta/models/gemini-2.5-flash:generateContent"),
    ] {
        assert_eq!(ask(&addr, m, p, &placeholder), 404, "{m} {p}");
    }
    assert_eq!(api.seen().len(), before);
    let grants = ok(&h.run(&["grants", "--json"], None, &[])).0;
    let g: Vec<keyferry::domain::GrantInfo> = serde_json::from_str(&grants).unwrap();
    let g = g.iter().find(|g| g.name == "gbox").unwrap();
    // Each streamed answer: 9 prompt (4 cached), 6 + 2 thoughts out; the rest count none.
    let n = calls
        .iter()
        .filter(|s| s.uri.starts_with("/v1internal:streamGenerateContent"))
        .count() as u64;
    assert_eq!(g.requests, calls.len() as u64 + 3, "{g:?}");
    assert_eq!(
        (g.input_tokens, g.cache_read_input_tokens, g.output_tokens),
        (5 * n, 4 * n, 8 * n),
        "{g:?}"
    );
    // (Another grant keeps the listener open: with none left it closes, and a revoked
    // sandbox meets a refused connection instead.)
    ok(&h.run(
        &["grant", "keep", "--cred", "gemini", "--ttl", "1h"],
        None,
        &[],
    ));
    ok(&h.run(&["revoke", "gbox"], None, &[]));
    assert_eq!(
        ask(
            &addr,
            "POST",
            "/v1internal:streamGenerateContent",
            &placeholder
        ),
        401
    );
    assert_eq!(api.seen().len(), before);
}

#[test]
fn codex_home_never_takes_over_a_real_login() {
    let api = FakeApi::start();
    let (h, _) = home(&api);
    let _agent = h.start_agent();
    // A live grant of the name the refused command asks for.
    let (first, _) = ok(&h.run(
        &["grant", "x", "--cred", "codex", "--format", "json"],
        None,
        &[],
    ));
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    let addr = first["base_url"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_owned();
    let placeholder = first["placeholder"].as_str().unwrap().to_owned();
    // The host's own ~/.codex holds a login: refused, nothing written there.
    let out = h.run(
        &[
            "grant",
            "x",
            "--cred",
            "codex",
            "--codex-home",
            h.path(".codex").to_str().unwrap(),
        ],
        None,
        &[],
    );
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(err.contains("holds a login (auth.json)"), "{err}");
    assert!(err.contains("a folder of its own"), "{err}");
    assert!(!h.path(".codex/config.toml").exists());
    // Refused before the grant was made: the live one is still the one first issued.
    let grants = ok(&h.run(&["grants", "--json"], None, &[])).0;
    let g: Vec<keyferry::domain::GrantInfo> = serde_json::from_str(&grants).unwrap();
    assert_eq!(g.len(), 1, "{grants}");
    // Its placeholder still opens it (a replaced one would get 401): off the routes, 404.
    assert_eq!(
        ask(
            &addr,
            "GET",
            "/backend-api/wham/accounts/check",
            &placeholder
        ),
        404
    );
    // A Claude credential has no CODEX_HOME: refused before any grant too, the live grant
    // of that name left alone.
    ok(&h.run(&["setup"], Some(CLAUDE_ACCESS), &[]));
    let nowhere = h._dir.path().join("nowhere");
    let out = h.run(
        &[
            "grant",
            "x",
            "--cred",
            "claude",
            "--codex-home",
            nowhere.to_str().unwrap(),
        ],
        None,
        &[],
    );
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(err.contains("writes no files"), "{err}");
    assert_eq!(
        ask(
            &addr,
            "GET",
            "/backend-api/wham/accounts/check",
            &placeholder
        ),
        404
    );
    // Without the flag, the command says what Codex still needs.
    let (_, err) = ok(&h.run(&["grant", "y", "--cred", "codex"], None, &[]));
    assert!(err.contains("--codex-home DIR"), "{err}");
}

const CLAUDE_ACCESS: &str = "sk-ant-oat01-REALclaudeACCESSmustNOTleak-9191";
const CLAUDE_REFRESH: &str = "sk-ant-ort01-REALclaudeREFRESHmustNOTleak-9292";

/// `grant --format claude-credentials`: the sandbox's Claude Code is logged in with a
/// credentials file of placeholders (its plan and scopes kept, no token, no refresh token)
/// and answers through the gateway, which sends the host's login upstream.
#[test]
fn claude_with_a_credentials_file_of_placeholders_answers_through_the_gateway() {
    let api = FakeApi::start();
    let h = Home::new();
    h.write(
        ".config/keyferry/config.toml",
        &format!(
            "[gateway]\nlisten = [\"127.0.0.1:0\"]\nunix_socket = false\nupstream = \"{}\"\n",
            api.url
        ),
        0o600,
    );
    h.write(
        ".claude/.credentials.json",
        &serde_json::json!({"claudeAiOauth": {"accessToken": CLAUDE_ACCESS, "refreshToken": CLAUDE_REFRESH, "expiresAt": logins::FAR_EXP * 1000, "scopes": ["user:inference", "user:profile"], "subscriptionType": "max", "rateLimitTier": "default_claude_max_20x"}}).to_string(),
        0o600,
    );
    let (auth, _) = logins::codex_auth(ACCOUNT, CODEX_SIG, CODEX_REFRESH);
    h.write(".codex/auth.json", &auth, 0o600);
    let _agent = h.start_agent();
    let (doc, err) = ok(&h.run(
        &[
            "grant",
            "cc",
            "--ttl",
            "1h",
            "--format",
            "claude-credentials",
        ],
        None,
        &[],
    ));
    let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
    let o = &v["claudeAiOauth"];
    let placeholder = o["accessToken"].as_str().unwrap().to_owned();
    assert!(placeholder.starts_with("kfg_"), "{doc}");
    assert_eq!(o["subscriptionType"], "max");
    assert_eq!(o["rateLimitTier"], "default_claude_max_20x");
    assert!(o.get("refreshToken").is_none(), "{doc}");
    let base = err
        .split("ANTHROPIC_BASE_URL=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("{err}"))
        .to_owned();
    let boxdir = h._dir.path().join("ccbox");
    std::fs::create_dir_all(boxdir.join(".claude")).unwrap();
    std::fs::write(boxdir.join(".claude/.credentials.json"), &doc).unwrap();

    let claude = kf::claude_bin();
    let script = format!("env > {SB}/env.txt; exec {} -p ping", claude.display());
    let out = sandbox(
        &boxdir,
        &[
            ("ANTHROPIC_BASE_URL", base.as_str()),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
            ("DISABLE_AUTOUPDATER", "1"),
        ],
        &script,
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "claude: {stdout}\n{stderr}");
    assert!(
        stdout.contains(REPLY),
        "claude's answer: {stdout}\n{stderr}"
    );
    let bearers = api.bearers();
    assert!(!bearers.is_empty());
    assert!(bearers.iter().all(|b| b == CLAUDE_ACCESS), "{bearers:?}");
    let secrets = [CLAUDE_ACCESS, CLAUDE_REFRESH];
    let env_dump = std::fs::read_to_string(boxdir.join("env.txt")).unwrap();
    assert_no_secret(&env_dump, &secrets);
    assert_no_secret(&format!("{stdout}{stderr}"), &secrets);
    assert_eq!(files_containing(&boxdir, &secrets), Vec::<PathBuf>::new());
    // A Codex credential is refused before any grant is made.
    let out = h.run(
        &[
            "grant",
            "cc",
            "--cred",
            "codex",
            "--format",
            "claude-credentials",
        ],
        None,
        &[],
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("is a codex credential"),
        "{}",
        text(&out.stderr)
    );
    // The refusal did not replace the live grant of that name.
    let grants = ok(&h.run(&["grants", "--json"], None, &[])).0;
    let g: Vec<keyferry::domain::GrantInfo> = serde_json::from_str(&grants).unwrap();
    assert_eq!(g.len(), 1, "{grants}");
    assert_eq!(
        (g[0].name.as_str(), g[0].credential.as_str()),
        ("cc", "claude")
    );
}
