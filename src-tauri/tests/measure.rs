//! Measurements of the menu-bar app for the README (issue 5), in the end-to-end tests' world
//! (Xvfb, a private session bus, gnome-keyring, a throwaway HOME holding one setup-token):
//!
//! - start → tray ready: from `exec` of `keyferry-tray` to its StatusNotifierItem
//!   registering with a StatusNotifierWatcher the test owns, and to its agent socket
//!   answering a `hello`;
//! - idle RSS, PSS and CPU over `KF_MEASURE_SECS` (60) seconds, of the app process and of its
//!   WebKit helper processes separately: once as after login (window hidden, tray only),
//!   once with the window open.
//!
//! Not a test: ignored by default; `src-tauri/measure.sh` builds the release binary and runs
//! this against it (`KF_E2E_TRAY`). Results are printed and written to
//! `test-output/tray-measure.md`.

#![cfg(target_os = "linux")]

mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use support::dbus_services::Watcher;
use support::{agent_answers, output_dir, tray_binary, World, START_TIMEOUT};

const TOKEN: &str = "sk-ant-oat01-MEASUREmeasureMEASUREmeasure-0042";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Milliseconds from `exec` to the agent socket answering and to the tray item registering.
fn one_start() -> (f64, f64) {
    let world = World::start("measure-start");
    world.setup_token("claude", TOKEN);
    let watcher = Watcher::start(&world.bus_address);
    let socket = world.socket();
    let t0 = Instant::now();
    let mut app = world.start_app(&[]);
    let socket_at = loop {
        if agent_answers(&socket).is_ok() {
            break t0.elapsed();
        }
        assert!(
            t0.elapsed() < START_TIMEOUT,
            "the agent socket did not answer within {START_TIMEOUT:?}:\n{}",
            app.log_text()
        );
        thread::sleep(Duration::from_millis(2));
    };
    let item = watcher
        .wait_item(START_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", app.log_text()));
    let tray_at = item.at.duration_since(t0);
    app.stop(Duration::from_secs(10));
    drop(app);
    drop(watcher);
    world.finish();
    (socket_at.as_secs_f64() * 1e3, tray_at.as_secs_f64() * 1e3)
}

/// (comm, parent pid) of every process.
fn process_table() -> BTreeMap<u32, (String, u32)> {
    let mut table = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map_or("", |(_, c)| c).to_owned();
        let ppid = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        table.insert(pid, (comm, ppid));
    }
    table
}

/// `root` and every process below it: pid → comm.
fn tree(root: u32) -> BTreeMap<u32, String> {
    let table = process_table();
    let mut out = BTreeMap::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        if let Some((comm, _)) = table.get(&p) {
            out.insert(p, comm.clone());
        }
        frontier.extend(
            table
                .iter()
                .filter(|(_, (_, ppid))| *ppid == p)
                .map(|(pid, _)| *pid),
        );
    }
    out
}

/// User + system CPU time of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the command: state is field 3, utime 14, stime 15.
    Some(rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?)
}

/// A `kB` field of a /proc file, in MiB.
fn kb_field(path: &Path, field: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[derive(Default)]
struct Usage {
    comm: String,
    rss: Vec<f64>,
    pss: Vec<f64>,
    cpu_pct: f64,
}

/// Samples the app's process tree once a second for `secs` seconds.
fn idle(args: &[&str], secs: u64) -> Vec<Usage> {
    let world = World::start("measure-idle");
    world.setup_token("claude", TOKEN);
    // A desktop's tray host, so the item is exported as on a real panel.
    let watcher = Watcher::start(&world.bus_address);
    let mut app = world.start_app(args);
    watcher
        .wait_item(START_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", app.log_text()));
    // Settle: WebKit's helpers start, the first render and the agent's first resolve pass.
    thread::sleep(Duration::from_secs(10));
    let procs = tree(app.pid());
    // SAFETY: sysconf only reads a system constant.
    let tick = f64::from(u32::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100));
    let start: BTreeMap<u32, u64> = procs
        .keys()
        .filter_map(|p| cpu_ticks(*p).map(|t| (*p, t)))
        .collect();
    let t0 = Instant::now();
    let mut usage: BTreeMap<u32, Usage> = procs
        .iter()
        .map(|(p, c)| {
            (
                *p,
                Usage {
                    comm: c.clone(),
                    ..Usage::default()
                },
            )
        })
        .collect();
    for _ in 0..secs {
        for (pid, u) in &mut usage {
            if let Some(rss) = kb_field(Path::new(&format!("/proc/{pid}/status")), "VmRSS:") {
                u.rss.push(rss);
            }
            if let Some(pss) = kb_field(Path::new(&format!("/proc/{pid}/smaps_rollup")), "Pss:") {
                u.pss.push(pss);
            }
        }
        thread::sleep(Duration::from_secs(1));
    }
    let wall = t0.elapsed().as_secs_f64();
    for (pid, u) in &mut usage {
        if let (Some(a), Some(b)) = (start.get(pid), cpu_ticks(*pid)) {
            #[allow(clippy::cast_precision_loss)]
            let used = b.saturating_sub(*a) as f64 / tick;
            u.cpu_pct = used / wall * 100.0;
        }
    }
    assert!(
        app.exited().is_none(),
        "the app quit while idle:\n{}",
        app.log_text()
    );
    app.stop(Duration::from_secs(10));
    drop(app);
    drop(watcher);
    world.finish();
    usage.into_values().collect()
}

fn mean(v: &[f64]) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let n = v.len().max(1) as f64;
    v.iter().sum::<f64>() / n
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

#[test]
#[ignore = "a measurement (about 3 minutes), not a test: run src-tauri/measure.sh"]
fn measure_start_and_idle() {
    let runs = env_u64("KF_MEASURE_RUNS", 5);
    let secs = env_u64("KF_MEASURE_SECS", 60);
    let binary = tray_binary();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Binary: `{}` ({} bytes). Machine: {} CPUs, {}.\n",
        binary.display(),
        std::fs::metadata(&binary).map_or(0, |m| m.len()),
        thread::available_parallelism().map_or(0, std::num::NonZero::get),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, m)| m.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".into())
    );

    let (mut sockets, mut trays) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let (s, t) = one_start();
        eprintln!(
            "start {}: socket answers after {s:.0} ms, tray item registered after {t:.0} ms",
            i + 1
        );
        sockets.push(s);
        trays.push(t);
    }
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        md,
        "| start → ready ({runs} runs) | median | all runs (ms) |"
    );
    let _ = writeln!(md, "|---|---|---|");
    let _ = writeln!(
        md,
        "| agent socket answers `hello` | {:.0} ms | {} |",
        median(&mut sockets.clone()),
        fmt(&sockets)
    );
    let _ = writeln!(
        md,
        "| tray item registered (StatusNotifierItem) | {:.0} ms | {} |\n",
        median(&mut trays.clone()),
        fmt(&trays)
    );

    let _ = writeln!(
        md,
        "| idle over {secs} s | process | RSS mean / max | PSS mean | CPU |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|");
    for (label, args) in [
        ("tray only (window hidden, as at login)", &[][..]),
        ("window open", &["--show"][..]),
    ] {
        let usage = idle(args, secs);
        for u in &usage {
            let _ = writeln!(
                md,
                "| {label} | {} | {:.1} / {:.1} MiB | {:.1} MiB | {:.2} % |",
                u.comm,
                mean(&u.rss),
                max(&u.rss),
                mean(&u.pss),
                u.cpu_pct
            );
        }
        let total_pss: f64 = usage.iter().map(|u| mean(&u.pss)).sum();
        let total_cpu: f64 = usage.iter().map(|u| u.cpu_pct).sum();
        let _ = writeln!(
            md,
            "| {label} | **all together** | | {total_pss:.1} MiB | {total_cpu:.2} % |"
        );
    }
    println!("\n{md}");
    let out = output_dir().join("tray-measure.md");
    std::fs::write(&out, &md).expect("write tray-measure.md");
    println!("written to {}", out.display());
}
