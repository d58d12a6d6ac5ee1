//! The CLI as a careful new user meets it (issue 19): a missing config file is an error, a
//! command `exec` cannot run exits like a shell, a typo gets a suggestion, durations and
//! limits are checked while parsing. Each test drives the real binary.

// Real Secret Service: these run on Linux only.
#![cfg(target_os = "linux")]

mod common;
mod kf;

use kf::{ok, text, Home};

const ENVKEY: &str = "sk-ant-api03-ENVkeyFFFFggggHHHHiiiiJJJJ-2222";

/// Exit status, stdout and stderr of `keyferry ARGS`.
fn run(h: &Home, args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = h.run(args, None, envs);
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn a_config_file_named_by_flag_or_env_must_exist() {
    let h = Home::new();
    let missing = h.path("missing.toml");
    let missing = missing.to_str().unwrap();

    let (code, _, err) = run(&h, &["--config", missing, "status"], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("~/missing.toml: no such config file (named by --config)"),
        "{err}"
    );
    let (code, _, err) = run(&h, &["status"], &[("KEYFERRY_CONFIG", missing)]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("(named by KEYFERRY_CONFIG)"), "{err}");

    // A dangling symlink is as missing as no file.
    std::os::unix::fs::symlink(h.path("gone.toml"), h.path("link.toml")).unwrap();
    let link = h.path("link.toml");
    let (code, _, err) = run(&h, &["--config", link.to_str().unwrap(), "status"], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no such config file"), "{err}");

    // `/dev/null` is the idiom for all defaults; the default file may be absent.
    ok(&h.run(&["--config", "/dev/null", "status"], None, &[]));
    ok(&h.run(&["status"], None, &[]));
    // The doctor reports it as the broken config it is.
    let (code, out, _) = run(&h, &["--config", missing, "doctor"], &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("no such config file"), "{out}");
}

#[test]
fn exec_exits_127_for_a_missing_command_and_126_for_one_that_cannot_run() {
    let h = Home::new();
    let env = [("CF_CLAUDE_API_KEY", ENVKEY)];
    let (code, _, err) = run(&h, &["exec", "--quiet", "--", "no-such-command-kf"], &env);
    assert_eq!(code, Some(127), "{err}");
    assert!(
        err.contains("cannot run no-such-command-kf: command not found"),
        "{err}"
    );

    let not_executable = h.write("bin/tool", "#!/bin/sh\nexit 0\n", 0o644);
    let tool = not_executable.to_str().unwrap();
    let (code, _, err) = run(&h, &["exec", "--quiet", "--", tool], &env);
    assert_eq!(code, Some(126), "{err}");
    assert!(err.contains("chmod +x"), "{err}");

    // A directory is found but cannot be run.
    let (code, _, err) = run(&h, &["exec", "--quiet", "--", "/"], &env);
    assert_eq!(code, Some(126), "{err}");
    // The command's own status still comes through untouched.
    let (code, _, err) = run(&h, &["exec", "--quiet", "--", "sh", "-c", "exit 7"], &env);
    assert_eq!(code, Some(7), "{err}");
}

#[test]
fn a_mistyped_credential_name_suggests_the_right_one() {
    let h = Home::new();
    let (code, _, err) = run(&h, &["get", "claud"], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("no credential named \"claud\"; did you mean `claude`?"),
        "{err}"
    );
    let (_, _, err) = run(&h, &["status", "gemni"], &[]);
    assert!(err.contains("did you mean `gemini`?"), "{err}");
    // Nothing close: no guess, only the list.
    let (code, _, err) = run(&h, &["get", "openai"], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(!err.contains("did you mean"), "{err}");
    assert!(err.contains("configured: claude, codex, gemini"), "{err}");
}

#[test]
fn durations_need_a_unit_may_be_compound_and_limits_fail_at_parsing() {
    let h = Home::new();
    let usage = |args: &[&str], expect: &str| {
        let (code, _, err) = run(&h, args, &[]);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(expect), "{args:?}: {err}");
    };
    usage(
        &["grant", "box", "--ttl", "90"],
        "has no unit; write 90s, 90m",
    );
    usage(&["grant", "box", "--ttl", "1h30"], "1h30m");
    usage(
        &["grant", "box", "--ttl", "367d"],
        "out of range: 1s to 366d",
    );
    usage(&["grant", "box", "--ttl", "0s"], "out of range: 1s to 366d");
    usage(
        &["grant", "box", "--max-concurrent", "0"],
        "0 would refuse every request; give 1 or more, or leave the flag out for no limit",
    );
    usage(
        &["grant", "box", "--daily-token-budget", "0"],
        "give 1 or more",
    );
    usage(
        &["grant", "box", "--max-concurrent", "two"],
        "not a whole number",
    );
    usage(
        &["exec", "--gateway", "--ttl", "8", "--", "true"],
        "has no unit",
    );
}

#[test]
fn a_compound_ttl_gives_a_grant_that_lives_exactly_that_long() {
    let h = Home::with_gateway("http://127.0.0.1:9", ENVKEY);
    let _agent = h.start_agent();
    let (out, err) = ok(&h.run(&["grant", "box", "--ttl", "1h30m"], None, &[]));
    assert!(out.contains("ANTHROPIC_AUTH_TOKEN=kfg_"), "{out}");
    assert!(err.contains("(in 1 h 30 min)"), "{err}");
    let (json, _) = ok(&h.run(&["grants", "--json"], None, &[]));
    let list: serde_json::Value = serde_json::from_str(&json).unwrap();
    let at = |k: &str| {
        time::OffsetDateTime::parse(
            list[0][k].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    assert_eq!((at("expires") - at("created")).whole_seconds(), 5400);
}

const SETUP: &str = "sk-ant-oat01-UXsetupAAAAbbbbCCCCddddEEEE-1111";
const SETUP2: &str = "sk-ant-oat01-UXrerollFFFFggggHHHHiiii-2222";
const SETUP3: &str = "sk-ant-oat01-UXagentJJJJkkkkLLLLmmmm-3333";

/// The ledger's first-seen time behind a setup-token's assumed expiry, and its expiry.
fn stored_at(h: &Home) -> (String, String) {
    let (out, _) = ok(&h.run(&["status", "claude", "--json"], None, &[]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let i = &v[0]["inspection"];
    assert_eq!(i["expiry"]["basis"], "assumed", "{out}");
    (
        i["expiry"]["stored_at"].as_str().unwrap().to_owned(),
        i["expires_at"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn setup_keeps_a_tokens_first_seen_time_and_says_what_it_replaced() {
    let h = Home::new();
    let fp = keyferry::credential::fingerprint;
    let (_, err) = ok(&h.run(&["setup"], Some(SETUP), &[]));
    assert!(!err.contains("replaced"), "{err}");
    let first = stored_at(&h);

    // The same token again: nothing moves, and it says so.
    let (_, err) = ok(&h.run(&["setup"], Some(SETUP), &[]));
    assert!(err.contains("this token was already stored"), "{err}");
    assert_eq!(stored_at(&h), first);

    // Another token: announced by fingerprint, never in full.
    let (_, err) = ok(&h.run(&["setup"], Some(SETUP2), &[]));
    assert!(
        err.contains(&format!(
            "claude: replaced {} with {}",
            fp(SETUP),
            fp(SETUP2)
        )),
        "{err}"
    );
    kf::assert_no_secret(&err, &[SETUP, SETUP2]);
    assert_ne!(stored_at(&h).0, first.0);

    // Restoring the old token does not make it look fresh: its first sighting counts.
    let (_, err) = ok(&h.run(&["setup"], Some(SETUP), &[]));
    assert!(err.contains(&format!("replaced {}", fp(SETUP2))), "{err}");
    assert_eq!(stored_at(&h), first);

    // Through a running agent, the same announcement.
    let _agent = h.start_agent();
    let (_, err) = ok(&h.run(&["setup"], Some(SETUP3), &[]));
    assert!(err.contains("stored through the agent"), "{err}");
    assert!(
        err.contains(&format!("replaced {} with {}", fp(SETUP), fp(SETUP3))),
        "{err}"
    );
}

#[test]
fn setup_refuses_a_cut_or_masked_token_naming_the_shape() {
    let h = Home::new();
    for bad in [
        "sk-ant-oat01-abc",
        "sk-ant-oat01-UXsetupAAAA…EEEE-1111",
        "sk-ant-api03-****************************",
    ] {
        let out = h.run(&["setup"], Some(bad), &[]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{bad}: {err}");
        assert!(
            err.contains("too short or not a whole token"),
            "{bad}: {err}"
        );
        assert!(
            err.contains("followed by about 95 letters, digits"),
            "{err}"
        );
    }
    assert_eq!(h.ss.count_items(&["service", "cf-claude-token"]), 0);
}

/// The lock's output says exactly what it covers, and each claim holds: the agent refuses,
/// `--no-agent` still reads the keychain (the README and `lock --help` say so too).
#[test]
fn lock_says_what_it_covers_and_get_no_agent_is_the_bypass_it_names() {
    let h = Home::with_gateway("http://127.0.0.1:9", SETUP);
    let _agent = h.start_agent();
    let (_, err) = ok(&h.run(&["lock"], None, &[]));
    assert!(
        err.contains("until `keyferry unlock` it refuses `get`, `snapshot`, `usage`, new grants and gateway requests"),
        "{err}"
    );
    assert!(
        err.contains("the keychain stays open: `keyferry get --no-agent`"),
        "{err}"
    );

    let refused = |args: &[&str]| {
        let (code, out, err) = run(&h, args, &[]);
        assert_eq!(code, Some(6), "{args:?}: {err}");
        assert!(err.contains("locked"), "{args:?}: {err}");
        kf::assert_no_secret(&(out + &err), &[SETUP]);
    };
    refused(&["get"]);
    refused(&["snapshot", "--out", "snap.json"]);
    refused(&["grant", "box"]);
    assert!(!h.path("snap.json").exists());

    // The bypass it names.
    let (out, _) = ok(&h.run(&["get", "--no-agent"], None, &[]));
    assert_eq!(out.trim(), SETUP);

    let (help, _) = ok(&h.run(&["lock", "--help"], None, &[]));
    assert!(help.contains("--no-agent` reads it directly"), "{help}");
    ok(&h.run(&["unlock"], None, &[]));
    assert_eq!(ok(&h.run(&["get"], None, &[])).0.trim(), SETUP);
}

#[test]
fn the_docker_audit_warns_when_the_token_is_not_passed_in_and_names_the_flag() {
    let h = Home::new();
    let env = [("CF_CLAUDE_API_KEY", ENVKEY)];
    let (code, _, err) = run(
        &h,
        &[
            "exec",
            "--dry-run",
            "--",
            "docker",
            "run",
            "--rm",
            "img",
            "claude",
        ],
        &env,
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains(" [!] ANTHROPIC_API_KEY does not reach the container: docker run passes in only the variables named with -e; fix: add -e ANTHROPIC_API_KEY before the image"),
        "{err}"
    );
    kf::assert_no_secret(&err, &[ENVKEY]);
    // Passed in (or a -e after the image, which is the container's own argument): no warning
    // for the first, a warning for the second.
    let (_, _, err) = run(
        &h,
        &[
            "exec",
            "--dry-run",
            "--",
            "podman",
            "run",
            "-e",
            "ANTHROPIC_API_KEY",
            "img",
        ],
        &env,
    );
    assert!(!err.contains("[!]"), "{err}");
    let (_, _, err) = run(
        &h,
        &[
            "exec",
            "--dry-run",
            "--",
            "docker",
            "run",
            "img",
            "-e",
            "ANTHROPIC_API_KEY",
        ],
        &env,
    );
    assert!(err.contains("fix: add -e ANTHROPIC_API_KEY"), "{err}");
    // A plain child inherits the environment: nothing to warn about.
    let (_, _, err) = run(&h, &["exec", "--dry-run", "--", "claude"], &env);
    assert!(!err.contains("[!]"), "{err}");
}

#[test]
fn the_gateway_audit_shows_the_base_url_in_full_and_masks_only_the_placeholder() {
    let h = Home::with_gateway("http://127.0.0.1:9", SETUP);
    let _agent = h.start_agent();
    let (out, err) = ok(&h.run(
        &[
            "exec",
            "--gateway",
            "--audit",
            "--",
            "sh",
            "-c",
            "printf '%s\\n%s\\n' \"$ANTHROPIC_BASE_URL\" \"$ANTHROPIC_AUTH_TOKEN\"",
        ],
        None,
        &[],
    ));
    let mut lines = out.lines();
    let (url, placeholder) = (lines.next().unwrap(), lines.next().unwrap());
    assert!(url.starts_with("http://127.0.0.1:"), "{out}");
    assert!(placeholder.starts_with("kfg_"), "{out}");
    assert!(
        err.contains(&format!(
            " [~] ANTHROPIC_BASE_URL={url}  (claude: gateway grant exec-"
        )),
        "{err}"
    );
    assert!(err.contains(" [~] ANTHROPIC_AUTH_TOKEN=kfg_…"), "{err}");
    assert!(
        !err.contains(&placeholder[4..placeholder.len() - 4]),
        "{err}"
    );

    // A dry run shows its descriptions whole, not masked into a cut token.
    let (_, err) = ok(&h.run(
        &["exec", "--gateway", "--dry-run", "--", "claude"],
        None,
        &[],
    ));
    assert!(
        err.contains(" [~] ANTHROPIC_AUTH_TOKEN=(a kfg_ placeholder, made at launch)"),
        "{err}"
    );
    assert!(
        err.contains(" [~] ANTHROPIC_BASE_URL=(the gateway's address, known at launch)"),
        "{err}"
    );
}
