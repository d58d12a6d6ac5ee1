//! One contract suite for `keyferry::store::Store`, run against every backend this machine
//! can run, on real parts: the memory store, a real gnome-keyring Secret Service on a private
//! D-Bus session bus (plus `secret-tool` interop, a locked collection and a bus without any
//! Secret Service), and kernel keyutils inside a fresh session keyring (`keyctl session -`).
//!
//! libdbus reads `DBUS_SESSION_BUS_ADDRESS` once per process, so this binary has a single
//! `#[test]`: the parent run owns every daemon and sets the address before its first D-Bus
//! call; scenarios that need another bus (or another session keyring) re-run this same test
//! in a child process selected by `KEYFERRY_STORE_CONTRACT_ROLE`. Failures are collected per
//! backend and reported together, so one broken backend does not hide another.

// Real Secret Service, keyutils and /proc: these run on Linux only.
#![cfg(target_os = "linux")]

#[path = "../common/mod.rs"]
mod common;

mod children;
mod contract;
mod interop;
mod report;
mod secret_service;
mod security_cli;

use std::process::Command;
use std::time::Duration;

use common::{run_with_timeout, unique_name, PrivateBus, SecretServiceFixture};
use keyferry::store::{self, Backend, MemoryStore};

use children::{child_keyutils, child_locked, child_without_secret_service};
use contract::{run_contract, Options};
use report::Report;
use secret_service::secret_service;

const ROLE_VAR: &str = "KEYFERRY_STORE_CONTRACT_ROLE";
const PREFIX_VAR: &str = "KEYFERRY_STORE_CONTRACT_PREFIX";
const TEST_NAME: &str = "store_contract";
/// "Promptly": a locked or missing keychain must answer well before any prompt could.
const PROMPT_BOUND: Duration = Duration::from_secs(5);
const CHILD_TIMEOUT: Duration = Duration::from_secs(180);
/// Secret Service `Modified` has one-second granularity.
const SS_STAMP_TICK: Duration = Duration::from_millis(1100);
const PASSWORD: &str = "contract-login-password";

#[test]
fn store_contract() {
    match std::env::var(ROLE_VAR).ok().as_deref() {
        None => parent(),
        Some("keyutils") => child_keyutils(),
        Some("no-bus") => child_without_secret_service("no session bus at all"),
        Some("locked") => child_locked(),
        Some(other) => panic!("unknown {ROLE_VAR}={other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Parent: memory, Secret Service (in-process), then children for the other buses/keyrings

fn parent() {
    let prefix = unique_name("kf-contract");
    let mut report = Report::default();

    // Memory, both as the type and through `store::open`.
    run_contract(
        &MemoryStore::default(),
        &Options {
            label: "memory",
            prefix: &prefix,
            stamp_tick: Duration::ZERO,
            count_items: None,
            max_value_len: None,
        },
        &mut report,
    );
    match store::open(Backend::Memory, 0) {
        Ok(s) => {
            report.check("memory", s.backend() == Backend::Memory, || {
                format!("open(Memory).backend() = {:?}", s.backend())
            });
            run_contract(
                s.as_ref(),
                &Options {
                    label: "memory via open",
                    prefix: &prefix,
                    stamp_tick: Duration::ZERO,
                    count_items: None,
                    max_value_len: None,
                },
                &mut report,
            );
        }
        Err(e) => report.fail("memory", format!("open(Memory) failed: {e}")),
    }

    security_cli::security_cli(&prefix, &mut report);
    secret_service(&prefix, &mut report);

    // Kernel keyutils in a fresh session keyring, on a bus with no Secret Service.
    let bare = PrivateBus::start();
    run_child(
        "keyutils",
        &[("DBUS_SESSION_BUS_ADDRESS".into(), bare.address().to_owned())],
        &prefix,
        true,
        &mut report,
    );
    drop(bare);

    // No session bus at all (headless server): still Unavailable, still falls back.
    let nowhere = tempfile::tempdir().expect("tempdir");
    let dead = format!("unix:path={}", nowhere.path().join("no-bus-here").display());
    run_child(
        "no-bus",
        &[("DBUS_SESSION_BUS_ADDRESS".into(), dead)],
        &prefix,
        false,
        &mut report,
    );

    // A fresh process facing a collection that was locked before it started.
    let home = tempfile::tempdir().expect("tempdir");
    let locked = SecretServiceFixture::start_locked(home.path());
    run_child("locked", &locked.env(), &prefix, false, &mut report);
    drop(locked);

    report.finish("store contract");
}

/// Re-runs this test in a child process with `role` (optionally under `keyctl session -`)
/// and records its failure.
fn run_child(
    role: &str,
    env: &[(String, String)],
    prefix: &str,
    in_new_session_keyring: bool,
    report: &mut Report,
) {
    let exe = std::env::current_exe().expect("current test binary");
    let mut cmd = if in_new_session_keyring {
        assert!(
            common::which("keyctl").is_some(),
            "keyctl is not on PATH; install it with `apt-get install keyutils`"
        );
        let mut c = Command::new("keyctl");
        c.args(["session", "-"]).arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    cmd.args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env(ROLE_VAR, role)
        .env("RUST_BACKTRACE", "0")
        .env(PREFIX_VAR, format!("{prefix}-{role}"));
    println!("--- child {role} ---");
    let out = run_with_timeout(&mut cmd, None, CHILD_TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    if !stderr.trim().is_empty() {
        println!("(stderr) {stderr}");
    }
    println!("--- end of child {role}: {} ---", out.status);
    if !out.status.success() {
        let lines: Vec<&str> = stdout.lines().chain(stderr.lines()).collect();
        let mut picked: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| {
                l.starts_with("FAIL")
                    || l.contains("panicked")
                    || l.contains("contract violation")
                    || l.starts_with("  - ")
            })
            .collect();
        if picked.is_empty() {
            // E.g. `keyctl session -` itself failed: show the end of what it printed.
            picked = lines[lines.len().saturating_sub(15)..].to_vec();
        }
        let tail = picked.join("\n    ");
        report.fail(
            role,
            format!("child process failed ({}):\n    {tail}", out.status),
        );
    }
}

fn child_prefix() -> String {
    std::env::var(PREFIX_VAR).unwrap_or_else(|_| unique_name("kf-contract-child"))
}
