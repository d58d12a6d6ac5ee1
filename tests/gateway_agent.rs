//! The gateway as the real agent runs it: `keyferry exec --gateway` gives the real `claude`
//! CLI a placeholder (its ephemeral grant gone when it exits), `grant`/`grants`/`revoke`
//! over the socket, a reroll between two requests, and `provision --gateway`.

#![cfg(target_os = "linux")]

mod common;
mod kf;

use std::time::Duration;

use keyferry::domain::GrantInfo;
use kf::fake_api::{FakeApi, REPLY};
use kf::{assert_no_secret, ok, text, Home};

const SETUP: &str = "sk-ant-oat01-GATEWAYsetupAAAAbbbbCCCC-1111";
const SETUP2: &str = "sk-ant-oat01-GATEWAYrerollDDDDeeeeFFFF-2222";
const HOST_LEAK: &str = "sk-ant-oat01-HOSTenvMUSTnotLEAKgggg-3333";

fn home(api: &FakeApi) -> Home {
    Home::with_gateway(&api.url, SETUP)
}

fn quiet_claude() -> Vec<(&'static str, &'static str)> {
    vec![
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
        ("DISABLE_AUTOUPDATER", "1"),
    ]
}

fn grants(h: &Home) -> Vec<GrantInfo> {
    serde_json::from_str(&ok(&h.run(&["grants", "--json"], None, &[])).0).unwrap()
}

#[test]
fn exec_gateway_gives_claude_a_placeholder_and_its_grant_ends_with_it() {
    let api = FakeApi::start();
    let h = home(&api);
    let _agent = h.start_agent();
    let claude = kf::claude_bin();
    let dump = h.path("child-env");
    let script = format!(
        "env > {}; exec {} -p ping",
        dump.display(),
        claude.display()
    );
    let mut envs = quiet_claude();
    // A real token in the host's environment must not ride along.
    envs.push(("CLAUDE_CODE_OAUTH_TOKEN", HOST_LEAK));
    let out = h.run(
        &["exec", "--gateway", "--audit", "--", "sh", "-c", &script],
        None,
        &envs,
    );
    let (stdout, stderr) = ok(&out);
    assert!(stdout.contains(REPLY), "{stdout}\n{stderr}");
    assert_eq!(api.bearers(), vec![SETUP.to_owned()]);
    let child_env = std::fs::read_to_string(&dump).unwrap();
    assert!(
        child_env.contains("ANTHROPIC_AUTH_TOKEN=kfg_"),
        "{child_env}"
    );
    assert!(child_env.contains("ANTHROPIC_BASE_URL=http://127.0.0.1:"));
    assert_no_secret(&child_env, &[SETUP, HOST_LEAK]);
    assert!(stderr.contains("the token stays on the host"), "{stderr}");
    assert!(stderr.contains("ANTHROPIC_AUTH_TOKEN=kfg_"), "{stderr}");
    assert!(!stderr.contains(
        child_env
            .lines()
            .find(|l| l.starts_with("ANTHROPIC_AUTH_TOKEN"))
            .unwrap()
    ));
    assert_no_secret(&stderr, &[SETUP, HOST_LEAK]);
    // The ephemeral grant was revoked when the command exited.
    assert!(grants(&h).is_empty());
}

#[test]
fn a_reroll_between_requests_changes_the_upstream_token_and_revoke_ends_it() {
    let api = FakeApi::start();
    let h = home(&api);
    let _agent = h.start_agent();
    let (env, err) = ok(&h.run(&["grant", "sandbox-1", "--ttl", "1h"], None, &[]));
    assert!(err.contains("the token stays on the host"), "{err}");
    let vars: Vec<(String, String)> = env
        .lines()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    assert_eq!(vars[0].0, "ANTHROPIC_BASE_URL");
    assert_eq!(vars[1].0, "ANTHROPIC_AUTH_TOKEN");
    assert!(vars[1].1.starts_with("kfg_") && vars[1].1.len() > 40);
    assert_no_secret(&env, &[SETUP]);
    // The "sandbox": claude with only the two variables.
    let sandbox = || {
        let mut cmd = std::process::Command::new(kf::claude_bin());
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("HOME", h.path("sandbox-home"))
            .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(quiet_claude())
            .args(["-p", "ping"]);
        std::fs::create_dir_all(h.path("sandbox-home")).unwrap();
        common::run_with_timeout(&mut cmd, None, Duration::from_secs(60))
    };
    assert!(text(&sandbox().stdout).contains(REPLY));
    ok(&h.run(&["setup"], Some(SETUP2), &[]));
    assert!(text(&sandbox().stdout).contains(REPLY));
    assert_eq!(api.bearers(), vec![SETUP.to_owned(), SETUP2.to_owned()]);
    let list = grants(&h);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].name, "sandbox-1");
    assert!(list[0].requests >= 2, "{list:?}");
    assert!(list[0].last_use.is_some());
    // Revoked: the next request gets a 401 and never reaches the upstream (another grant
    // keeps the port open: the last revoke closes it).
    ok(&h.run(&["grant", "keeper", "--ttl", "1h"], None, &[]));
    ok(&h.run(&["revoke", "sandbox-1"], None, &[]));
    let answer = raw_post(&vars[0].1, &vars[1].1);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(
        answer.contains("authentication_error") && answer.contains("revoked"),
        "{answer}"
    );
    assert_eq!(api.bearers().len(), 2);
    // The audit names the grant and the status, never the placeholder or the token.
    let (log, _) = ok(&h.run(&["log", "--json", "-n", "200"], None, &[]));
    assert!(log.contains("\"op\":\"gateway\""), "{log}");
    assert!(!log.contains(&vars[1].1));
    assert_no_secret(&log, &[SETUP, SETUP2]);
}

/// One `POST /v1/messages` to the gateway with `placeholder`, as plain HTTP/1.1.
fn raw_post(base_url: &str, placeholder: &str) -> String {
    kf::raw_http(
        base_url.strip_prefix("http://").unwrap(),
        "POST",
        "/v1/messages?beta=true",
        &format!("Authorization: Bearer {placeholder}\r\nuser-agent: claude-cli/2 (external, cli)\r\nx-app: cli\r\ncontent-type: application/json\r\n"),
        r#"{"model":"x","max_tokens":1,"messages":[]}"#,
    )
}

#[test]
fn provision_gateway_writes_the_placeholder_not_the_token() {
    let api = FakeApi::start();
    let h = home(&api);
    let _agent = h.start_agent();
    let (_, err) = ok(&h.run(
        &["provision", "--via", "sh", "--gateway", "vm-1"],
        None,
        &[],
    ));
    assert!(err.contains("placeholder"), "{err}");
    let rc = std::fs::read_to_string(h.path(".bashrc")).unwrap();
    assert!(rc.contains("export ANTHROPIC_AUTH_TOKEN='kfg_"), "{rc}");
    assert!(
        rc.contains("export ANTHROPIC_BASE_URL='http://127.0.0.1:"),
        "{rc}"
    );
    assert_no_secret(&rc, &[SETUP]);
    assert_eq!(grants(&h)[0].name, "vm-1");
}

#[test]
fn without_an_agent_grant_says_how_to_get_one() {
    let api = FakeApi::start();
    let h = home(&api);
    let out = h.run(&["grant", "x"], None, &[]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("keyferry agent"));
}

#[test]
fn a_grant_left_behind_by_a_killed_session_ends_with_its_ttl() {
    let api = FakeApi::start();
    let h = home(&api);
    let mut agent = h.start_agent();
    let (env, _) = ok(&h.run(&["grant", "ssh-killed", "--ttl", "1s"], None, &[]));
    let placeholder = env
        .lines()
        .find_map(|l| l.strip_prefix("ANTHROPIC_AUTH_TOKEN="))
        .unwrap()
        .to_owned();
    // Nobody revokes it (the `keyferry ssh` that made it was killed with -9).
    std::thread::sleep(Duration::from_millis(1500));
    let base = env
        .lines()
        .find_map(|l| l.strip_prefix("ANTHROPIC_BASE_URL="))
        .unwrap()
        .to_owned();
    let answer = raw_post(&base, &placeholder);
    assert!(
        answer.starts_with("HTTP/1.1 401") && answer.contains("expired"),
        "{answer}"
    );
    agent.stop(libc::SIGKILL);
    let _agent = h.start_agent();
    assert!(grants(&h).is_empty());
    let file =
        std::fs::read_to_string(h.path(".local/state/keyferry/grants.json")).unwrap_or_default();
    assert!(!file.contains("ssh-killed"), "{file}");
    assert!(api.bearers().is_empty());
}

/// A grant's use per hour: `grants --json` carries the hour's exact counts, they survive
/// an agent restart (kept in the 0600 grants file), and `grants` draws the last 24 hours.
#[test]
fn a_grants_hourly_use_is_kept_across_restarts_and_drawn() {
    let api = FakeApi::start();
    let h = home(&api);
    let mut agent = h.start_agent();
    let (env, _) = ok(&h.run(&["grant", "hist", "--ttl", "1h"], None, &[]));
    let var = |k: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap()
            .to_owned()
    };
    let (base, placeholder) = (var("ANTHROPIC_BASE_URL="), var("ANTHROPIC_AUTH_TOKEN="));
    for _ in 0..2 {
        let answer = raw_post(&base, &placeholder);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    // The fake's JSON answer: 11 in, 22 out, 3 cache writes, 4 cache reads.
    // One bucket, or two when the test crosses the top of an hour: summed, the counts are
    // the same.
    let hour = |list: &[GrantInfo]| {
        let g = list.iter().find(|g| g.name == "hist").unwrap();
        assert!((1..=2).contains(&g.history.len()), "{g:?}");
        g.history.iter().fold((0, 0, 0, 0, 0), |t, b| {
            (
                t.0 + b.requests,
                t.1 + b.input_tokens,
                t.2 + b.output_tokens,
                t.3 + b.cache_creation_input_tokens,
                t.4 + b.cache_read_input_tokens,
            )
        })
    };
    let wait = common::wait_for("both requests metered", Duration::from_secs(10), || {
        let list = grants(&h);
        let done = list.iter().any(|g| g.name == "hist" && g.requests == 2);
        if done {
            Ok(list)
        } else {
            Err(format!("{list:?}"))
        }
    })
    .unwrap();
    assert_eq!(hour(&wait), (2, 22, 44, 6, 8));
    let mode = std::fs::metadata(h.path(".local/state/keyferry/grants.json"))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777);
    assert_eq!(mode.ok(), Some(0o600));
    agent.stop(libc::SIGTERM);
    let _again = h.start_agent();
    assert_eq!(hour(&grants(&h)), (2, 22, 44, 6, 8));
    let (text, _) = ok(&h.run(&["grants"], None, &[]));
    assert!(text.contains("24 h ["), "{text}");
    // The requests' hour is the busiest: its bar is full (the last, or the one before it
    // when the hour turned since).
    let spark = text.rsplit("24 h [").next().unwrap_or_default();
    assert!(spark.contains('█'), "{text}");
}
