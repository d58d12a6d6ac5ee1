//! Unit tests of `sink`.

use super::*;
use std::os::unix::fs::MetadataExt;

#[test]
fn canonical_is_one_spelling_of_a_file_not_written_yet() {
    let dir = tempfile::tempdir().unwrap();
    let real = std::fs::canonicalize(dir.path()).unwrap();
    std::fs::create_dir_all(dir.path().join("box/x")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("box"), dir.path().join("link")).unwrap();
    let c = real.join("box/c.json");
    let spellings = [
        dir.path().join("box/c.json"),
        dir.path().join("box/x/../c.json"),
        dir.path().join("box/./x/../c.json"),
        dir.path().join("link/c.json"),
        dir.path().join("link/x/../c.json"),
        // Below a missing folder the rest is lexical.
        dir.path().join("box/new/deeper/../../c.json"),
    ];
    for p in &spellings {
        assert!(!p.exists());
        assert_eq!(canonical(p), c, "{}", p.display());
        assert!(same_file(p, &spellings[0]), "{}", p.display());
    }
    // `..` after a link is the link target's parent, as the kernel resolves it.
    assert_eq!(
        canonical(&dir.path().join("link/../c.json")),
        real.join("c.json")
    );
    assert!(!same_file(&spellings[0], &dir.path().join("box/x/c.json")));
    assert!(!same_file(&spellings[0], &dir.path().join("c.json")));
    assert_eq!(canonical(Path::new("/")), Path::new("/"));
    assert_eq!(canonical(Path::new("/..")), Path::new("/"));
}

#[test]
fn a_relative_path_is_taken_from_the_current_directory() {
    let here = std::env::current_dir().unwrap();
    assert_eq!(
        canonical(Path::new("no-such-file")),
        canonical(&here.join("no-such-file"))
    );
    assert!(canonical(Path::new("no-such-file")).is_absolute());
}

#[test]
fn two_sinks_spelling_one_snapshot_file_two_ways_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("box/x")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("box"), dir.path().join("link")).unwrap();
    let a = Target::snapshot("claude", &dir.path().join("box/c.json"), false);
    for other in ["box/x/../c.json", "link/c.json"] {
        let b = Target::snapshot("claude", &dir.path().join(other), true);
        let e = check_one_writer(&[a.clone(), b.clone()]).unwrap_err();
        assert!(e.contains("one writer"), "{e}");
        // A snapshot asked for at the other spelling is refused by the [[sink]].
        let refused = claim(std::slice::from_ref(&a), Path::new("/c.toml"), &b).unwrap_err();
        assert!(
            matches!(refused, SinkError::OwnedByConfig { .. }),
            "{refused:?}"
        );
        // Exactly what it writes, spelled the other way, is that sink.
        let same = Target::snapshot("claude", &dir.path().join(other), false);
        assert_eq!(
            claim(std::slice::from_ref(&a), Path::new("/c.toml"), &same).unwrap(),
            Some(0)
        );
    }
}

#[test]
fn a_relative_sink_path_in_config_is_refused_naming_the_fix() {
    let cfg = SinkConfig {
        credential: "claude".into(),
        dotenv: None,
        snapshot: Some("box/c.json".into()),
        key: None,
        include_refresh_token: false,
    };
    let e = cfg.target().unwrap_err();
    assert!(
        e.contains("relative") && e.contains("~/") && e.contains("box/c.json"),
        "{e}"
    );
    let ok = SinkConfig {
        snapshot: Some("~/box/c.json".into()),
        ..cfg
    };
    assert!(ok.target().is_ok());
}

#[test]
fn in_place_keeps_the_inode_and_pads_shorter_text() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("snap/.credentials.json");
    let long = "{\"access_token\":\"long-long-long\"}\n";
    write_in_place(&p, Kind::Gemini, &Secret::new(long.into())).unwrap();
    let ino = std::fs::metadata(&p).unwrap().ino();
    assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
    write_in_place(
        &p,
        Kind::Gemini,
        &Secret::new("{\"access_token\":\"x\"}\n".into()),
    )
    .unwrap();
    assert_eq!(std::fs::metadata(&p).unwrap().ino(), ino);
    let text = std::fs::read_to_string(&p).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["access_token"], "x");
    // Padded with spaces to the old length, newline kept last.
    let short = "{\"access_token\":\"x\"}";
    assert_eq!(
        text,
        format!("{short}{}\n", " ".repeat(long.len() - short.len() - 1))
    );
    write_in_place(
        &p,
        Kind::Gemini,
        &Secret::new("{\"access_token\":\"much-much-much-longer-value\"}\n".into()),
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    assert_eq!(v["access_token"], "much-much-much-longer-value");
}

#[test]
fn a_config_sinks_file_has_one_writer() {
    let config = [
        Target {
            credential: "claude".into(),
            sink: Sink::Dotenv {
                path: "/kf/proj/.env".into(),
                key: None,
            },
        },
        Target::snapshot("claude", Path::new("/kf/box/.credentials.json"), false),
    ];
    let at = |name: &str, path: &str, refresh| {
        claim(
            &config,
            Path::new("/kf/config.toml"),
            &Target::snapshot(name, Path::new(path), refresh),
        )
    };
    assert_eq!(
        at("claude", "/kf/box/.credentials.json", false).unwrap(),
        Some(1)
    );
    assert_eq!(
        at("claude", "/kf/./box//.credentials.json", false).unwrap(),
        Some(1)
    );
    assert_eq!(at("claude", "/kf/other.json", false).unwrap(), None);
    for (name, path, refresh, writes, wanted) in [
        (
            "work",
            "/kf/box/.credentials.json",
            false,
            "a snapshot of \"claude\"",
            "a snapshot of \"work\"",
        ),
        (
            "claude",
            "/kf/box/.credentials.json",
            true,
            "a snapshot of \"claude\"",
            "with its refresh token",
        ),
        (
            "claude",
            "/kf/proj/.env",
            false,
            ".env",
            "a snapshot of \"claude\"",
        ),
    ] {
        let e = at(name, path, refresh).unwrap_err();
        assert_eq!(e.code(), ErrorCode::ConfigSink);
        let msg = e.to_string();
        assert!(
            msg.contains(writes) && msg.contains(wanted) && msg.contains("/kf/config.toml"),
            "{msg}"
        );
    }
}

#[test]
fn config_sinks_share_no_snapshot_file() {
    let env = |cred: &str| Target {
        credential: cred.into(),
        sink: Sink::Dotenv {
            path: "/kf/.env".into(),
            key: None,
        },
    };
    assert!(check_one_writer(&[env("claude"), env("codex")]).is_ok());
    let snap = Target::snapshot("codex", Path::new("/kf/.env"), false);
    let e = check_one_writer(&[env("claude"), snap]).unwrap_err();
    assert!(e.contains("two [[sink]]s write /kf/.env"), "{e}");
    // One key of one file, named by both: refused when the config is read.
    let keyed = |cred: &str, key: &str| Target {
        credential: cred.into(),
        sink: Sink::Dotenv {
            path: "/kf/x/../.env".into(),
            key: Some(key.into()),
        },
    };
    let e = check_one_writer(&[keyed("claude", "K"), keyed("codex", "K")]).unwrap_err();
    assert!(e.contains("two [[sink]]s write K in /kf/"), "{e}");
    assert!(check_one_writer(&[keyed("claude", "K"), keyed("codex", "L")]).is_ok());
    // A key left to the credential is only known once it is read (`KeyTaken` then).
    assert!(check_one_writer(&[keyed("claude", "CLAUDE_CODE_OAUTH_TOKEN"), env("work")]).is_ok());
}

#[test]
fn sink_config_needs_exactly_one_path() {
    let c = SinkConfig {
        credential: "claude".into(),
        dotenv: None,
        key: None,
        snapshot: None,
        include_refresh_token: false,
    };
    assert!(c.target().unwrap_err().contains("exactly one"));
}
