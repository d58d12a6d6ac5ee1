//! `keyferry exec` hands the stored token to the real `claude` CLI (npm) talking to a
//! loopback fake Anthropic API; nothing secret in its audit or in any process's argv.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::kf::fake_api::{FakeApi, REPLY};
use crate::kf::{self, assert_no_secret, ok, text, Home};
use crate::{claude_env, SETUP};

#[test]
fn exec_hands_the_stored_token_to_the_real_claude_cli() {
    let h = Home::new();
    ok(&h.run(&["setup"], Some(SETUP), &[]));
    let api = FakeApi::start();
    let claude = kf::claude_bin();
    let mut envs: Vec<(&str, String)> = claude_env(&api);
    // A host API key would outrank the OAuth token in Claude Code: exec removes it.
    envs.push((
        "ANTHROPIC_API_KEY",
        "sk-ant-api03-HOSTkeyMUSTnotWIN-9999".into(),
    ));
    let envs_ref: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let ps = kf::sample_ps(Arc::clone(&stop));
    let out = h.run(
        &[
            "exec",
            "--audit",
            "--",
            claude.to_str().unwrap(),
            "-p",
            "ping",
        ],
        None,
        &envs_ref,
    );
    stop.store(true, Ordering::SeqCst);
    let (stdout, stderr) = ok(&out);
    assert!(stdout.contains(REPLY), "{stdout}\n{stderr}");
    assert_eq!(api.bearers(), vec![SETUP.to_owned()]);
    let seen = api.seen();
    let call = seen
        .iter()
        .find(|s| s.uri.starts_with("/v1/messages"))
        .unwrap();
    let beta = call
        .headers
        .get("anthropic-beta")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(beta.contains("oauth-2025-04-20"), "{call:?}");
    assert!(!call.headers.contains_key("x-api-key"), "{call:?}");
    // The audit: generated, forwarded, removed — all masked.
    assert!(
        stderr.contains(
            "[~] CLAUDE_CODE_OAUTH_TOKEN=sk-ant-oat01-…1111  (claude: keychain:cf-claude-token)"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("[>] ANTHROPIC_BASE_URL="), "{stderr}");
    assert!(stderr.contains("[-] ANTHROPIC_API_KEY (removed: it would take precedence over CLAUDE_CODE_OAUTH_TOKEN)"), "{stderr}");
    assert_no_secret(&stderr, &[SETUP]);
    let ps = ps.join().unwrap();
    assert!(ps.contains("-p ping"), "ps sampling saw the run");
    assert_no_secret(&ps, &[SETUP]);
}

#[test]
fn dry_run_prints_the_same_audit_and_starts_nothing() {
    let h = Home::new();
    ok(&h.run(&["setup"], Some(SETUP), &[]));
    let api = FakeApi::start();
    let claude = kf::claude_bin();
    let mut envs: Vec<(&str, String)> = claude_env(&api);
    envs.push((
        "ANTHROPIC_API_KEY",
        "sk-ant-api03-HOSTkeyMUSTnotWIN-9999".into(),
    ));
    let envs_ref: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // --dry-run prints the very same audit and starts nothing.
    let args = [
        "exec",
        "--env",
        "EXTRA=1",
        "--",
        claude.to_str().unwrap(),
        "-p",
        "ping",
    ];
    let dry = h.run(
        &[&args[..1], &["--dry-run"], &args[1..]].concat(),
        None,
        &envs_ref,
    );
    let real = h.run(
        &[&args[..1], &["--audit"], &args[1..]].concat(),
        None,
        &envs_ref,
    );
    let (dry_err, real_err) = (text(&dry.stderr), text(&real.stderr));
    assert!(
        dry_err.starts_with(&real_err[..real_err.find("\nCommand:").unwrap()]),
        "dry:\n{dry_err}\nreal:\n{real_err}"
    );
    assert!(dry_err.contains("[+] EXTRA=") && dry_err.contains("(dry run: nothing was started)"));
    assert_eq!(api.bearers().len(), 1, "the dry run sent nothing");
}
