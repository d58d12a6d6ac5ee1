//! Errors that name the fix (issue 19, continued from `cli_ux`): a 644 token file, a
//! setup-token that cannot be refreshed, missing folders, broken TOML, global flags where
//! they mean nothing, `status`'s exit status. Each test drives the real binary.

// Real Secret Service: these run on Linux only.
#![cfg(target_os = "linux")]

mod common;
mod kf;

use kf::{assert_no_secret, ok, text, Home};

const FILETOK: &str = "sk-ant-oat01-ERRfileAAAAbbbbCCCCddddEEEE-1111";
const SETUP: &str = "sk-ant-oat01-ERRsetupFFFFggggHHHHiiii-2222";

const UNSAFE: &str = "cf: token file ~/.config/cf/claude-token has unsafe permissions (644) \
                      — expected 600, skipping";
const FIX: &str = "fix: chmod 600 ~/.config/cf/claude-token";

/// Exit status, stdout and stderr of `keyferry ARGS`.
fn run(h: &Home, args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = h.run(args, None, envs);
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn a_644_token_file_keeps_cfs_line_adds_its_fix_and_is_the_error_when_nothing_else_is_found() {
    let h = Home::new();
    h.write(".config/cf/claude-token", &format!("{FILETOK}\n"), 0o644);

    let (code, out, err) = run(&h, &["--no-agent", "get"], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(out, "");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines[..2], [UNSAFE, FIX], "{err}");
    assert_eq!(
        lines[2],
        "keyferry: no usable token for \"claude\": ~/.config/cf/claude-token was skipped \
         (tried env:CF_CLAUDE_API_KEY, keychain:cf-claude-token, file:~/.config/cf/claude-token, \
         claude-login)",
        "{err}"
    );
    assert_eq!(lines.len(), 3, "{err}");
    assert!(!err.contains("no token found"), "{err}");
    assert_no_secret(&err, &[FILETOK]);

    // `status` says the same and exits with it.
    let (code, out, err) = run(&h, &["--no-agent", "status"], &[]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("claude: source=none (unsafe_file)"), "{out}");
    assert!(err.contains(&format!("{UNSAFE}\n{FIX}\n")), "{err}");

    // Through the agent: the same lines, the same status.
    let _agent = h.start_agent();
    let (code, _, err) = run(&h, &["get"], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.starts_with(&format!("{UNSAFE}\n{FIX}\n")), "{err}");
    assert!(err.contains("no usable token for \"claude\""), "{err}");

    // cfauth keeps cf's soft failure: the warning, its fix, then "not found" and exit 3.
    let (code, _, err) = run(&h, &["cfauth", "get"], &[]);
    assert_eq!(code, Some(3), "{err}");
    assert_eq!(
        err,
        format!("{UNSAFE}\n{FIX}\ncf auth: no Claude API token found\n")
    );

    // A source before the file that has a token wins; nothing was skipped on the way.
    ok(&h.run(&["setup"], Some(SETUP), &[]));
    let (out, err) = ok(&h.run(&["--no-agent", "get"], None, &[]));
    assert_eq!(out.trim(), SETUP);
    assert_eq!(err, "");
    // Fixed as told, the file is used.
    ok(&h.run(&["clear"], None, &[]));
    std::fs::set_permissions(
        h.path(".config/cf/claude-token"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let (out, err) = ok(&h.run(&["--no-agent", "get"], None, &[]));
    assert_eq!(out.trim(), FILETOK, "{err}");
}

#[test]
fn status_exits_3_when_a_configured_credential_is_missing_as_status_name_does() {
    let h = Home::new();
    ok(&h.run(&["setup"], Some(SETUP), &[]));
    // Nothing configured but claude: codex and gemini are quiet, the exit status 0.
    ok(&h.run(&["status"], None, &[]));
    h.write(
        ".config/keyferry/config.toml",
        "[credentials.codex]\n",
        0o600,
    );
    let (code, out, err) = run(&h, &["status"], &[]);
    assert_eq!(code, Some(3), "{out}{err}");
    assert!(out.contains("codex: source=none (not_found)"), "{out}");
    let (code, _, _) = run(&h, &["status", "codex"], &[]);
    assert_eq!(code, Some(3));
    // The one that is there is still fine on its own.
    ok(&h.run(&["status", "claude"], None, &[]));
    // JSON too: the status is the exit status, not the output format.
    let (code, _, _) = run(&h, &["status", "--json"], &[]);
    assert_eq!(code, Some(3));
}

#[test]
fn refreshing_a_setup_token_says_it_is_not_refreshable_and_points_to_reroll() {
    let h = Home::new();
    ok(&h.run(&["setup"], Some(SETUP), &[]));
    let _agent = h.start_agent();
    for args in [&["refresh", "--dry-run"][..], &["refresh"]] {
        let (out, err) = ok(&h.run(args, None, &[]));
        assert_eq!(out, "", "{args:?}");
        assert_eq!(
            err,
            "keyferry: claude: setup-tokens are not refreshable (they last a year and carry no \
             refresh token); to replace this one, run `keyferry reroll`\n",
            "{args:?}"
        );
    }
}

#[test]
fn a_missing_folder_is_one_clear_error_and_snapshot_creates_folders_only_when_asked() {
    let h = Home::new();
    ok(&h.run(&["setup"], Some(SETUP), &[]));

    let (code, out, err) = run(&h, &["export", "--env-file", "nope/.env"], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(out, "");
    assert_eq!(
        err,
        "keyferry: nope/.env: the folder nope does not exist; create it first (mkdir -p nope)\n"
    );
    assert!(!h.path("nope").exists());

    let snap = h.path("cooks/task1/.auth/creds.json");
    let snap = snap.to_str().unwrap();
    let (code, _, err) = run(&h, &["snapshot", "--out", snap], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(
        err,
        "keyferry: ~/cooks/task1/.auth/creds.json: the folder ~/cooks does not exist; create it \
         first (mkdir -p ~/cooks) or pass --mkdir\n"
    );
    assert!(!h.path("cooks").exists(), "nothing was created");

    // Through an agent: the same refusal, before the agent is asked.
    let _agent = h.start_agent();
    let (code, _, err) = run(&h, &["snapshot", "--out", snap], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("the folder ~/cooks does not exist"), "{err}");
    assert!(!h.path("cooks").exists(), "nothing was created");

    // Asked to, it makes them private.
    ok(&h.run(&["snapshot", "--mkdir", "--out", snap], None, &[]));
    for folder in ["cooks", "cooks/task1", "cooks/task1/.auth"] {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(h.path(folder)).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o700, "{folder}");
    }
    let written = std::fs::read_to_string(h.path("cooks/task1/.auth/creds.json")).unwrap();
    assert!(written.contains(SETUP));

    // `exec --snapshot` (the mount path of a launch) grows no folders either.
    let mount = h.path("elsewhere/task2/creds.json");
    let (code, _, err) = run(
        &h,
        &["exec", "--snapshot", mount.to_str().unwrap(), "--", "true"],
        &[],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(
            "the folder ~/elsewhere does not exist; create it first (mkdir -p ~/elsewhere)"
        ),
        "{err}"
    );
    assert!(!h.path("elsewhere").exists(), "nothing was created");
}

#[test]
fn global_flags_are_refused_where_they_mean_nothing() {
    let h = Home::new();
    for (args, msg) in [
        (
            &["completions", "bash", "--require-agent"][..],
            "--require-agent means nothing to `keyferry completions`: it reads no config and \
             talks to no agent; leave it out",
        ),
        (
            &["--config", "/dev/null", "completions", "zsh"],
            "--config means nothing to `keyferry completions`",
        ),
        (
            &["watch", "--no-agent"],
            "--no-agent means nothing to `keyferry watch`: it only ever talks to a running agent",
        ),
        (
            &["--no-agent", "lock"],
            "--no-agent means nothing to `keyferry lock`",
        ),
        (&["log", "--require-agent"], "it reads the audit log file"),
        (
            &["agent", "--no-agent"],
            "`keyferry agent`: it is the agent",
        ),
    ] {
        let (code, out, err) = run(&h, args, &[]);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert_eq!(out, "", "{args:?}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert!(err.contains(msg), "{args:?}: {err}");
    }
    // Where they mean something they still work.
    let (out, _) = ok(&h.run(&["completions", "bash"], None, &[]));
    assert!(out.contains("_keyferry"));
    let (code, _, err) = run(&h, &["--require-agent", "lock"], &[]);
    assert_eq!(code, Some(5), "no agent answers: {err}");
    ok(&h.run(&["--no-agent", "status"], None, &[]));
}

#[test]
fn export_has_one_format_switch_and_keeps_the_old_flags_as_hidden_aliases() {
    let h = Home::new();
    ok(&h.run(&["setup"], Some(SETUP), &[]));
    let var = "CLAUDE_CODE_OAUTH_TOKEN";
    for (args, want) in [
        (&["export", "--format", "token"][..], format!("{SETUP}\n")),
        (&["export", "--token-only"], format!("{SETUP}\n")),
        (&["export", "--format", "env"], format!("{var}={SETUP}\n")),
        (
            &["export", "--format", "export"],
            format!("export {var}='{SETUP}'\n"),
        ),
        (&["export", "--export"], format!("export {var}='{SETUP}'\n")),
        (
            &["export", "--format", "env", "--var", "TOK"],
            format!("TOK={SETUP}\n"),
        ),
    ] {
        let (out, _) = ok(&h.run(args, None, &[]));
        assert_eq!(out, want, "{args:?}");
    }
    for args in [&["export", "--format", "json"][..], &["export", "--json"]] {
        let (out, _) = ok(&h.run(args, None, &[]));
        let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(doc["env_var"], var, "{args:?}");
    }
    // The default and `--format dotenv` update ./.env.
    ok(&h.run(&["export", "--format", "dotenv"], None, &[]));
    let env = std::fs::read_to_string(h.path(".env")).unwrap();
    assert_eq!(env, format!("{var}={SETUP}\n"));

    // One switch: two formats, or a file with a printed format, are usage errors.
    let (code, _, err) = run(&h, &["export", "--format", "env", "--json"], &[]);
    assert_eq!(code, Some(2), "{err}");
    let (code, out, err) = run(&h, &["export", "--format", "json", "--env-file", "x"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(out, "");
    assert!(err.contains("--env-file writes a .env file"), "{err}");
    assert!(!h.path("x").exists());

    // The help shows the switch, not the aliases.
    let (help, _) = ok(&h.run(&["export", "--help"], None, &[]));
    assert!(help.contains("--format <FORMAT>"), "{help}");
    for alias in ["--token-only", "--export ", "--json"] {
        assert!(!help.contains(alias), "{alias} in:\n{help}");
    }
}

#[test]
fn snapshot_usage_shows_its_real_arity_and_cfauth_help_lists_every_command() {
    let h = Home::new();
    let (help, _) = ok(&h.run(&["snapshot", "--help"], None, &[]));
    assert!(
        help.contains(
            "Usage: keyferry snapshot [NAME] --out <PATH> [--mkdir] [--include-refresh-token]\n       \
             keyferry snapshot --forget <PATH>\n"
        ),
        "{help}"
    );
    // Global flags have their own heading.
    let (_, global) = help.split_once("Global options:").unwrap();
    for flag in ["--config", "--socket", "--no-agent", "--require-agent"] {
        assert!(global.contains(flag), "{flag}:\n{help}");
    }

    for args in [
        &["cfauth", "--help"][..],
        &["cfauth", "-h"],
        &["cfauth", "help"],
    ] {
        let (out, err) = ok(&h.run(args, None, &[]));
        assert_eq!(err, "", "{args:?}");
        for cmd in ["setup", "reroll", "status", "clear", "get", "install [DIR]"] {
            assert!(out.contains(&format!("\n  {cmd} ")), "{cmd}:\n{out}");
        }
        assert!(
            out.contains("usage: cfauth [setup|reroll|status|clear]"),
            "{out}"
        );
    }
    // Anything else is still the seed's synopsis and exit 2.
    let (code, out, err) = run(&h, &["cfauth", "--help", "now"], &[]);
    assert_eq!(code, Some(2));
    assert_eq!(out, "");
    assert_eq!(err, "usage: cfauth [setup|reroll|status|clear]\n");
}

#[test]
fn a_config_type_error_shows_the_offending_line_in_plain_words() {
    let h = Home::new();
    h.write(
        ".config/keyferry/config.toml",
        "[keychain]\nprompt_timeout_secs = \"ten\"\n",
        0o600,
    );
    let (code, out, err) = run(&h, &["status"], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(out, "");
    assert_eq!(
        err,
        "keyferry: ~/.config/keyferry/config.toml: line 2: invalid type: string \"ten\", \
         expected a whole number\n  2 | prompt_timeout_secs = \"ten\"\n"
    );
    // The doctor's row holds it on one line.
    let (code, out, _) = run(&h, &["doctor"], &[]);
    assert_eq!(code, Some(1), "{out}");
    let row = out.lines().find(|l| l.starts_with("FAIL  config")).unwrap();
    assert!(
        row.contains(
            "line 2: invalid type: string \"ten\", expected a whole number: \
                      `prompt_timeout_secs = \"ten\"`"
        ),
        "{out}"
    );
    // A syntax error names its line too.
    h.write(
        ".config/keyferry/config.toml",
        "[agent]\nnotifications = tru\n",
        0o600,
    );
    let (code, _, err) = run(&h, &["status"], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("line 2: "), "{err}");
    assert!(err.ends_with("\n  2 | notifications = tru\n"), "{err}");
}

#[test]
fn the_agent_log_is_plain_text_off_a_terminal_and_announces_each_listener() {
    let h = Home::new();
    let restricted = h.run.join("restricted.sock");
    h.write(
        ".config/keyferry/config.toml",
        &format!(
            "[agent]\nrestricted_socket = \"{}\"\nrestricted_credentials = [\"claude\"]\n\
             [gateway]\nlisten = [\"127.0.0.1:0\"]\nunix_socket = false\nupstream = \"http://127.0.0.1:9\"\n",
            restricted.display()
        ),
        0o600,
    );
    ok(&h.run(&["setup"], Some(SETUP), &[]));
    let agent = h.start_agent();
    // A grant opens the gateway's port; its listener is announced with its URL.
    ok(&h.run(&["grant", "box"], None, &[]));
    let log = common::wait_for(
        "the gateway's listener in the agent's log",
        std::time::Duration::from_secs(10),
        || {
            let log = agent.log_text();
            if log.contains("gateway listening") {
                Ok(log)
            } else {
                Err(log)
            }
        },
    )
    .unwrap();
    assert!(
        log.contains(&format!("keyferry agent: serving {}", h.socket().display())),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "keyferry agent: serving the restricted socket {} (get and status of: claude)",
            restricted.display()
        )),
        "{log}"
    );
    assert!(
        log.contains("gateway listening url=http://127.0.0.1:"),
        "{log}"
    );
    // Its stderr is a file: no colour codes anywhere.
    assert!(!log.contains('\x1b'), "{log:?}");
    assert_no_secret(&log, &[SETUP]);
}

#[test]
fn every_env_value_in_the_audit_is_hidden_whatever_its_length_or_shape() {
    let h = Home::new();
    ok(&h.run(&["setup"], Some(SETUP), &[]));
    let sixteen = "abcdEFGHijklMNOP";
    let long = "sk-ant-api03-EXTRAkeyQQQQrrrrSSSS-9999";
    let (out, err) = ok(&h.run(
        &[
            "exec",
            "--dry-run",
            "--env",
            "SHORT=x",
            "--env",
            &format!("SIXTEEN={sixteen}"),
            "--env",
            &format!("LONG={long}"),
            "--",
            "true",
        ],
        None,
        &[],
    ));
    let audit = format!("{out}{err}");
    for key in ["SHORT", "SIXTEEN", "LONG"] {
        assert!(
            audit.contains(&format!(" [+] {key}=…****\n")),
            "{key}:\n{audit}"
        );
    }
    for part in ["abcd", "MNOP", "9999", "sk-ant-api03-EXTRA"] {
        assert!(!audit.contains(part), "{part} shown:\n{audit}");
    }
    // The token itself keeps the token rule: its prefix and last 4, as `show` prints it.
    assert!(
        audit.contains(" [~] CLAUDE_CODE_OAUTH_TOKEN=sk-ant-oat01-…2222"),
        "{audit}"
    );
    assert_no_secret(&audit, &[SETUP]);
}
