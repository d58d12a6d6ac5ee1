//! End-to-end benchmark of the real `keyferry agent` binary.
//!
//! Reproduce (from the crate root):
//!
//! ```text
//! cargo build --release && cargo bench --bench agent
//! ```
//!
//! Quick run: `KF_BENCH_IDLE_SECS=5 cargo bench --bench agent`.
//!
//! Knobs (environment): `KF_BENCH_IDLE_SECS` (idle window, default 60),
//! `KF_BENCH_SECS` (measured seconds per load scenario, default 2), `KF_BENCH_RATE`
//! (open-loop offered rate, default 5000 req/s), `KF_BENCH_CLI_RUNS` (spawns per command,
//! default 200), `KF_BENCH_BIN` (the keyferry binary; default `target/release/keyferry`),
//! `KF_BENCH_TOKIO_WORKERS` (passed to the agents as `TOKIO_WORKER_THREADS`, for experiments).
//!
//! What it does, in one run, all on Unix sockets inside a temporary directory (temporary
//! `HOME` and `XDG_*`; the real user's files, keyring and session bus are never touched):
//!
//! 1. starts a private `dbus-daemon` (no service activation) and `gnome-keyring-daemon`,
//!    stores a token with `secret-tool store`;
//! 2. starts two agents: A serves a token from a 0600 file (`keyutils` backend), B serves
//!    the Secret Service item (`secret-service` backend);
//! 3. idle: RSS after start and after `KF_BENCH_IDLE_SECS`, CPU% over that window (both);
//! 4. `get` round trips against A: closed loop with 1/16/64 persistent connections, and an
//!    open loop at 64 connections with a fixed total offered rate;
//! 5. `keyferry --require-agent get` (through B) vs `secret-tool lookup`, alternating;
//! 6. prints a Markdown table and one `BENCH_JSON {...}` line.
//!
//! Every process it starts leads its own process group, gets SIGTERM if the bench dies
//! (`PR_SET_PDEATHSIG`), and is stopped by a Drop guard (also on panic): testkit's `Proc`,
//! `PrivateBus` and `SecretServiceFixture`.
//!
//! Modules: `setup` (directories, environment, Secret Service, agents), `conn` (the raw
//! client), `load` (closed and open loop), `cli` (CLI vs secret-tool), `idle`, `procfs`,
//! `procs` (watchdog), `stats`, `report` (Markdown table and JSON).

mod cli;
mod conn;
mod idle;
mod load;
mod procfs;
mod procs;
mod report;
mod setup;
mod stats;

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::{signal_group, Launcher, PrivateBus, Proc, SecretServiceFixture};

use cli::*;
use conn::*;
use idle::*;
use load::*;
use procfs::*;
use procs::*;
use report::*;
use setup::*;
use stats::*;

const SS_SERVICE: &str = "keyferry-bench";
const SS_USER: &str = "bench";
const KEYRING_PASSWORD: &str = "bench-password";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);
const IO_TIMEOUT: Duration = Duration::from_secs(5);
const CHILD_TIMEOUT: Duration = Duration::from_secs(10);
const WARMUP: Duration = Duration::from_millis(500);
/// Upper bound on requests per connection per scenario, whatever the duration.
const MAX_PER_CLIENT: usize = 2_000_000;

// Targets.
const TARGET_P99_US: f64 = 200.0;
const TARGET_RPS: f64 = 20_000.0;
const TARGET_CLI_RATIO: f64 = 5.0;
const TARGET_RSS_MB: f64 = 15.0;
const TARGET_IDLE_CPU_PCT: f64 = 0.1;

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// A realistic-length setup token (`sk-ant-oat01-` + 95 characters), deterministic.
fn make_token(tag: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ tag.len() as u64;
    let mut t = format!("sk-ant-oat01-{tag}-");
    while t.len() < 108 {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        t.push(ALPHABET[(x >> 58) as usize] as char);
    }
    t
}

pub fn main() -> ExitCode {
    let Some(bin) = find_binary() else {
        eprintln!(
            "agent bench: no keyferry binary at target/release/keyferry (or $KF_BENCH_BIN).\n\
             Build it first:  cargo build --release && cargo bench --bench agent"
        );
        return ExitCode::from(2);
    };
    let idle_secs: f64 = env_num("KF_BENCH_IDLE_SECS", 60.0_f64).max(0.5);
    let secs: f64 = env_num("KF_BENCH_SECS", 2.0_f64).clamp(0.2, 60.0);
    let rate: f64 = env_num("KF_BENCH_RATE", 5000.0_f64).clamp(10.0, 1e6);
    let runs: usize = env_num("KF_BENCH_CLI_RUNS", 200_usize).clamp(5, 10_000);
    let dur = Duration::from_secs_f64(secs);
    let load_start = loadavg();

    let tmp = tempfile::Builder::new()
        .prefix("kf-bench-")
        .tempdir_in("/tmp")
        .expect("create a temporary directory");
    let dirs = Dirs {
        root: tmp.path().to_path_buf(),
    };
    fs::set_permissions(&dirs.root, fs::Permissions::from_mode(0o700)).expect("chmod 700");
    let bin_age = fs::metadata(&bin)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .map_or_else(String::new, |e| {
            format!(", built {:.0} min ago", e.as_secs_f64() / 60.0)
        });
    eprintln!("agent bench: binary {}{bin_age}", bin.display());
    eprintln!(
        "agent bench: {} cores, load average {load_start}; idle window {idle_secs} s",
        cores()
    );

    let watchdog = Watchdog::start();
    let token_file = make_token("bench-file");
    let token_ss = make_token("bench-secret-service");

    // Secret Service (its own home), then the two agents.
    eprintln!("agent bench: starting a private dbus-daemon and gnome-keyring-daemon");
    let ss = start_secret_service(&dirs, &token_ss);
    let ss_home = dirs.root.join("ss/home");

    let token_path = dirs.private("a-token").join("claude-token");
    fs::write(&token_path, &token_file).expect("write the token file");
    fs::set_permissions(&token_path, fs::Permissions::from_mode(0o600)).expect("chmod 600");
    let cfg_a = format!(
        "[credentials.claude]\nsources = [\"file:{}\"]\n[keychain]\nbackend = \"keyutils\"\n",
        token_path.display()
    );
    let cfg_b = format!(
        "[credentials.claude]\nsources = [\"keychain:{SS_SERVICE}#{SS_USER}\"]\n[keychain]\nbackend = \"secret-service\"\n"
    );
    eprintln!("agent bench: starting agent A (file source) and agent B (Secret Service)");
    let mut a = start_agent(&bin, &dirs, "a", &cfg_a, None);
    let b = start_agent(&bin, &dirs, "b", &cfg_b, Some(&ss.address));
    assert_eq!(a.source, format!("file:{}", token_path.display()));
    assert_eq!(b.source, format!("keychain:{SS_SERVICE}#{SS_USER}"));
    {
        let mut c = Conn::open(&b.socket).expect("connect to agent B");
        let r = c.get_result(1).expect("get from agent B");
        assert_eq!(r["token"].as_str(), Some(token_ss.as_str()));
        let mut c = Conn::open(&a.socket).expect("connect to agent A");
        let r = c.get_result(1).expect("get from agent A");
        assert_eq!(r["token"].as_str(), Some(token_file.as_str()));
    }

    // 3. Idle first, on fresh agents (only the verification gets above have run).
    eprintln!("agent bench: idle window {idle_secs} s (set KF_BENCH_IDLE_SECS to change)");
    let (pa, pb) = (a.proc.pid(), b.proc.pid());
    let (ma, mb) = (idle_mark(pa), idle_mark(pb));
    let sys0 = CpuMark::now(pa);
    thread::sleep(Duration::from_secs_f64(idle_secs));
    let (_, _, idle_other) = sys0.since(pa);
    let idle = [
        idle_finish("agent A (file source)", pa, &ma, idle_secs),
        idle_finish(
            "agent B (Secret Service, polls every 2 s)",
            pb,
            &mb,
            idle_secs,
        ),
    ];

    // 1. Load against agent A.
    let mut loads = Vec::new();
    for clients in [1, 16, 64] {
        eprintln!("agent bench: closed loop, {clients} clients, {secs} s");
        loads.push(closed_loop(&a.socket, pa, clients, dur));
    }
    eprintln!("agent bench: open loop, 64 clients, {rate} req/s, {secs} s");
    loads.push(open_loop(&a.socket, pa, 64, rate, dur));
    let after_load = (status_mb(pa, "VmRSS"), status_mb(pa, "VmHWM"));
    a.proc.check_alive();

    // 2. CLI vs secret-tool through agent B.
    eprintln!("agent bench: CLI comparison, {runs} runs each, alternating");
    let cli = cli_compare(&bin, &b, &ss_home, &token_ss, runs, &watchdog);
    let load_end = loadavg();

    let results = Results {
        bin,
        load_start,
        load_end,
        idle_secs,
        secs,
        rate,
        runs,
        loads,
        cli,
        idle,
        idle_other,
        after_load,
    };
    println!("{}", results.markdown());
    println!("BENCH_JSON {}", results.json());

    // Agents before the Secret Service, then the temporary directory.
    drop(a);
    drop(b);
    drop(ss);
    drop(watchdog);
    drop(tmp);
    ExitCode::SUCCESS
}
