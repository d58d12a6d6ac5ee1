//! Unit tests of config parsing, typed values and saving.

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("config.toml");
    std::fs::write(&p, text).unwrap();
    Config::load_from(&p)
}

#[test]
fn defaults_follow_cfauth_order() {
    let cfg = parse("").unwrap();
    let spec = cfg.spec("claude").unwrap();
    let chain: Vec<String> = spec.chain.iter().map(ToString::to_string).collect();
    assert_eq!(
        chain,
        [
            "env:CF_CLAUDE_API_KEY",
            "keychain:cf-claude-token",
            "file:~/.config/cf/claude-token",
            "claude-login"
        ]
    );
    assert_eq!(spec.store.unwrap().service, "cf-claude-token");
    assert_eq!(spec.setup_token_lifetime, time::Duration::days(365));
    assert!(cfg.spec("codex").is_ok());
    assert!(cfg
        .spec("nope")
        .unwrap_err()
        .to_string()
        .contains("claude, codex, gemini"));
}

#[test]
fn env_files_append_and_sources_replace() {
    let cfg = parse(
        "[credentials.claude]\nenv_files = [\"~/p/.env\"]\nsetup_token_lifetime_days = 30\n\
         [credentials.work]\nsources = [\"keychain:work-token#bot\", \"env:WORK\"]\n",
    )
    .unwrap();
    let claude = cfg.spec("claude").unwrap();
    assert_eq!(claude.chain.last().unwrap().to_string(), "dotenv:~/p/.env");
    assert_eq!(claude.setup_token_lifetime, time::Duration::days(30));
    let work = cfg.spec("work").unwrap();
    assert_eq!(work.store, Some(ItemId::new("work-token", "bot")));
    assert_eq!(cfg.names(), ["claude", "codex", "gemini", "work"]);
}

#[test]
fn agent_and_policy_sections() {
    let cfg = parse(
        "[agent]\nidle_timeout_secs = 5\nexpiry_thresholds = [\"2d\", \"30m\"]\n\
         [policy.claude]\nmode = \"ask\"\nallow_exe = [\"/usr/local/bin/cf\"]\n",
    )
    .unwrap();
    assert_eq!(cfg.agent.idle_timeout_secs, 5);
    assert_eq!(cfg.agent.max_connections, 512);
    assert_eq!(cfg.policy.credentials["claude"].mode, PolicyMode::Ask);
    assert_eq!(cfg.agent.expiry_thresholds.labels(), ["2d", "30m"]);
    let err = parse("[agent]\nexpiry_thresholds = [\"soon\"]\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("soon") && err.contains("line 2"), "{err}");
}

#[test]
fn saving_settings_keeps_the_rest_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("config.toml");
    std::fs::write(&p, "# mine\n[credentials.claude]\nenv_files = [\"~/p/.env\"]\n\n[agent]\nidle_timeout_secs = 5 # short\n").unwrap();
    let s = crate::domain::Settings {
        notifications: false,
        notify_on_access: true,
        expiry_thresholds: vec!["7d".into(), "2h".into()],
    };
    save_agent_settings(&p, &s).unwrap();
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(
        text.starts_with("# mine\n[credentials.claude]\nenv_files = [\"~/p/.env\"]\n"),
        "{text}"
    );
    assert!(text.contains("idle_timeout_secs = 5 # short"), "{text}");
    let cfg = Config::load_from(&p).unwrap();
    assert!(cfg.agent.notify_on_access && !cfg.agent.notifications);
    assert_eq!(cfg.agent.expiry_thresholds.labels(), ["7d", "2h"]);
    let bad = crate::domain::Settings {
        expiry_thresholds: vec!["soon".into()],
        ..s
    };
    assert!(save_agent_settings(&p, &bad).is_err());
}

#[test]
fn approvers_and_sinks_are_typed_when_read() {
    let cfg = parse(
        "[policy]\napprovers = [\"/opt/kf/keyferry-tray\"]\n[policy.claude]\nmode = \"ask\"\n\
         [[sink]]\ncredential = \"claude\"\ndotenv = \"/p/.env\"\n",
    )
    .unwrap();
    assert_eq!(cfg.policy.approvers(), ["/opt/kf/keyferry-tray"]);
    assert_eq!(cfg.sinks[0].sink.path(), Path::new("/p/.env"));
    let default = parse("").unwrap().policy.approvers();
    assert!(default[0].ends_with("/keyferry-tray"), "{default:?}");
    let err = parse("[[sink]]\ncredential = \"claude\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("exactly one"), "{err}");
    let two = "[[sink]]\ncredential = \"claude\"\ndotenv = \"/p/.env\"\nkey = \"K\"\n";
    let err = parse(&two.repeat(2)).unwrap_err().to_string();
    assert!(err.contains("write K in /p/.env"), "{err}");
}

#[test]
fn saving_through_a_symlinked_config_keeps_the_link() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("dotfiles-config.toml");
    std::fs::write(&real, "# mine\n").unwrap();
    let link = dir.path().join("config.toml");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let s = crate::domain::Settings {
        notifications: true,
        notify_on_access: true,
        expiry_thresholds: vec!["1d".into()],
    };
    save_agent_settings(&link, &s).unwrap();
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let text = std::fs::read_to_string(&real).unwrap();
    assert!(
        text.contains("# mine\n") && text.contains("notify_on_access = true"),
        "{text}"
    );
}

#[test]
fn bad_config_names_file_and_line() {
    let err = parse("[keychain]\nbackend = \"floppy\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("config.toml"), "{err}");
    assert!(err.contains("floppy"), "{err}");
    let err = parse("[credentials.claude]\nsources = [\"ftp:x\"]\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown source"), "{err}");
}

// Fuzz regression (config target): `Duration::days(n)` panicked past i64 seconds, so a
// threshold like "9223372036854775807d" crashed config loading.
#[test]
fn huge_durations_are_errors_not_panics() {
    use crate::expiry::parse_duration;
    assert!(parse_duration("9223372036854775807d").is_err());
    assert!(parse_duration("106751991167301d").is_err());
    assert_eq!(parse_duration("365d").unwrap(), time::Duration::days(365));
    let path = Path::new("/cfg/config.toml");
    let err = Config::parse(
        "[agent]\nexpiry_thresholds = [\"9223372036854775807h\"]\n",
        path,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("/cfg/config.toml: ")
            && err.contains("out of range")
            && err.contains("line 2"),
        "{err}"
    );
}

#[test]
fn parse_reads_text_without_touching_files() {
    let path = Path::new("/nonexistent/config.toml");
    let cfg = Config::parse("[agent]\nidle_timeout_secs = 7\n", path).unwrap();
    assert_eq!(cfg.agent.idle_timeout_secs, 7);
    assert_eq!(cfg.path, path);
    let err = Config::parse("[agent]\nbogus = 1\n", path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/nonexistent/config.toml") && err.contains("line 2"),
        "{err}"
    );
}

#[test]
fn a_named_config_file_must_exist_the_default_need_not() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    assert!(Config::load_from(&missing).is_ok());
    let err = Config::load_named(&missing, NamedBy::Flag).unwrap_err();
    assert!(
        matches!(
            &err,
            ConfigError::Missing {
                named_by: NamedBy::Flag,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("(named by --config)"), "{err}");
    assert!(Config::load_named(Path::new("/dev/null"), NamedBy::Env).is_ok());
}

#[test]
fn an_unknown_name_suggests_a_close_one() {
    let cfg = parse("").unwrap();
    let err = cfg.spec("codx").unwrap_err().to_string();
    assert!(err.contains("did you mean `codex`?"), "{err}");
}

#[test]
fn a_type_error_shows_its_line_in_plain_words() {
    let err = parse("[keychain]\nprompt_timeout_secs = \"ten\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with(
            "config.toml: line 2: invalid type: string \"ten\", expected a whole number\n  \
             2 | prompt_timeout_secs = \"ten\""
        ),
        "{err}"
    );
    assert_eq!(
        plain_types("invalid type: string \"x\", expected u64"),
        "invalid type: string \"x\", expected a whole number"
    );
    assert_eq!(
        plain_types("invalid type: integer `1`, expected a boolean"),
        "invalid type: integer `1`, expected true or false"
    );
    assert_eq!(
        plain_types("invalid type: string \"x\", expected struct AgentConfig"),
        "invalid type: string \"x\", expected a table"
    );
    // What is already in words stays.
    assert_eq!(
        plain_types("unknown variant `floppy`, expected one of `auto`, `macos`"),
        "unknown variant `floppy`, expected one of `auto`, `macos`"
    );
}

#[test]
fn a_line_that_looks_like_a_token_is_not_shown() {
    let text = "[agent]\nsocket = \"sk-ant-oat01-PASTEDtokenAAAAbbbb\" oops\n";
    let err = parse(text).unwrap_err().to_string();
    assert!(!err.contains("PASTED"), "{err}");
    assert!(
        err.contains("2 | (not shown: it looks like it holds a token)"),
        "{err}"
    );
    let long = format!("x = \"{}\"", "a".repeat(500));
    let shown = Excerpt::of(&long, 0);
    assert_eq!(shown.text.chars().count(), Excerpt::MAX_CHARS + 1);
}
