//! Every `--help` text, as plain-file snapshots under `tests/help/` (issue 19): a change to
//! any help shows in review as a diff of these files. `KF_BLESS=1 cargo test --test
//! cli_help` rewrites them (and removes the files of commands that are gone).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// `keyferry ARGS` in an empty environment (no terminal, so no colour and clap's fixed
/// width): status and stdout.
fn keyferry(args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyferry"));
    cmd.env_clear().args(args);
    let out = common::run_with_timeout(&mut cmd, None, common::COMMAND_TIMEOUT);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The subcommands a help text lists under `Commands:` (without `help`).
fn subcommands(help: &str) -> Vec<String> {
    let Some((_, rest)) = help.split_once("\nCommands:\n") else {
        return Vec::new();
    };
    rest.lines()
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// Every command path from the top (`[]`, `["agent"]`, `["agent", "install"]`, …) with its
/// help text, found by walking the `Commands:` lists of the real binary's help.
fn every_help() -> Vec<(Vec<String>, String)> {
    let mut out = Vec::new();
    let mut todo = vec![Vec::<String>::new()];
    while let Some(path) = todo.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let (code, help) = keyferry(&args);
        assert_eq!(code, Some(0), "keyferry {}", args.join(" "));
        for sub in subcommands(&help) {
            let mut next = path.clone();
            next.push(sub);
            todo.push(next);
        }
        out.push((path, help));
    }
    out.sort();
    out
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/help")
}

fn file_of(path: &[String]) -> PathBuf {
    let name = std::iter::once("keyferry")
        .chain(path.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join("-");
    dir().join(format!("{name}.txt"))
}

#[test]
fn every_help_text_matches_its_snapshot() {
    let helps = every_help();
    // The walk found the tree, not only the top (agent's own subcommands included).
    assert!(helps.len() > 25, "{} help texts", helps.len());
    assert!(helps.iter().any(|(p, _)| p == &["agent", "install"]));
    let bless = std::env::var_os("KF_BLESS").is_some_and(|v| v == "1");
    let expected: Vec<PathBuf> = helps.iter().map(|(p, _)| file_of(p)).collect();
    if bless {
        std::fs::create_dir_all(dir()).unwrap();
    }
    let mut stale = Vec::new();
    for entry in std::fs::read_dir(dir()).unwrap() {
        let p = entry.unwrap().path();
        // cfauth's own help has its own test.
        if !expected.contains(&p) && p != dir().join("cfauth.txt") {
            if bless {
                std::fs::remove_file(&p).unwrap();
            } else {
                stale.push(p.display().to_string());
            }
        }
    }
    let mut changed = Vec::new();
    for ((path, help), file) in helps.iter().zip(&expected) {
        if bless {
            std::fs::write(file, help).unwrap();
            continue;
        }
        let snapshot = std::fs::read_to_string(file).unwrap_or_default();
        if snapshot != *help {
            changed.push(format!(
                "keyferry {} --help differs from {}:\n{help}",
                path.join(" "),
                file.display()
            ));
        }
    }
    assert!(
        stale.is_empty() && changed.is_empty(),
        "rerun with KF_BLESS=1 if the change is meant\nstale snapshots: {stale:?}\n{}",
        changed.join("\n")
    );
}

/// cfauth answers `--help` itself, outside clap's tree.
#[test]
fn cfauth_help_matches_its_snapshot() {
    let (code, help) = keyferry(&["cfauth", "--help"]);
    assert_eq!(code, Some(0));
    let file = dir().join("cfauth.txt");
    if std::env::var_os("KF_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(dir()).unwrap();
        std::fs::write(&file, &help).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(&file).unwrap_or_default(),
        help,
        "rerun with KF_BLESS=1 if the change is meant"
    );
}
