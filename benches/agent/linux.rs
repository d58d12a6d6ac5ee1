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
//! (`PR_SET_PDEATHSIG`), and is stopped by a Drop guard (also on panic).

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};
use testkit::{isolate, signal_group};

use serde_json::{json, Value};

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

// ---------------------------------------------------------------------------------------
// Processes

/// A command in its own process group that gets SIGTERM when the bench dies.
fn guarded_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    isolate(&mut cmd);
    cmd
}

/// A started daemon; dropping it stops its whole process group (SIGTERM, then SIGKILL).
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, log: PathBuf, stdin: Option<&str>) -> Self {
        let out = fs::File::create(&log).expect("create a log file");
        let err = out.try_clone().expect("clone the log file handle");
        cmd.stdout(out).stderr(err).stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            let _ = pipe.write_all(text.as_bytes());
            // Dropping the pipe closes the daemon's stdin.
        }
        Self {
            name: name.to_owned(),
            child,
            log,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn check_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited early ({status}); its log:\n{}",
                self.name,
                fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pgid = self.child.id();
        if let Ok(Some(_)) = self.child.try_wait() {
            signal_group(pgid, libc::SIGKILL);
            return;
        }
        signal_group(pgid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                signal_group(pgid, libc::SIGKILL);
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        signal_group(pgid, libc::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills a short-lived child that overruns [`CHILD_TIMEOUT`]; one thread for the run.
struct Watchdog {
    slot: Arc<Mutex<Option<(u32, Instant)>>>,
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Watchdog {
    fn start() -> Self {
        let slot: Arc<Mutex<Option<(u32, Instant)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (Arc::clone(&slot), Arc::clone(&stop));
        let handle = thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(50));
                let guard = s.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some((pid, deadline)) = *guard {
                    if Instant::now() > deadline {
                        eprintln!("watchdog: killing pid {pid} after {CHILD_TIMEOUT:?}");
                        signal_group(pid, libc::SIGKILL);
                    }
                }
            }
        });
        Self {
            slot,
            stop,
            handle: Some(handle),
        }
    }

    fn set(&self, v: Option<(u32, Instant)>) {
        *self
            .slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = v;
    }

    /// Spawns `cmd` (own process group), waits for it; returns wall time and stdout.
    fn run(&self, cmd: &mut Command) -> (Duration, std::process::Output) {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let t0 = Instant::now();
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()));
        self.set(Some((child.id(), t0 + CHILD_TIMEOUT)));
        let out = child.wait_with_output();
        let elapsed = t0.elapsed();
        self.set(None);
        (elapsed, out.expect("wait for a child"))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

// ---------------------------------------------------------------------------------------
// /proc

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime+stime of a process (all threads, dead ones included), in seconds.
fn proc_cpu_secs(pid: u32) -> f64 {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = text.rsplit_once(')').map_or("", |(_, rest)| rest);
    // Fields after the comm: state(3) ... utime(14) stime(15): indexes 11 and 12 here.
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / clk_tck()
}

fn self_cpu_secs() -> f64 {
    proc_cpu_secs(std::process::id())
}

/// A `kB` field of /proc/PID/status, in MiB.
fn status_mb(pid: u32, field: &str) -> f64 {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn status_num(pid: u32, field: &str) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Context switches summed over the live threads (wake-ups, roughly).
fn ctx_switches(pid: u32) -> u64 {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    dir.flatten()
        .map(|t| {
            let text = fs::read_to_string(t.path().join("status")).unwrap_or_default();
            text.lines()
                .filter_map(|l| {
                    l.strip_prefix("voluntary_ctxt_switches:")
                        .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                })
                .filter_map(|v| v.trim().parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

/// Busy CPU seconds of the whole machine (all cores), from /proc/stat.
fn system_busy_secs() -> f64 {
    let text = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().next() else {
        return 0.0;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    total.saturating_sub(idle) as f64 / clk_tck()
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn cores() -> usize {
    thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

// ---------------------------------------------------------------------------------------
// Protocol client (raw, minimal: the bench must not out-eat the agent)

struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    line: String,
    req: Vec<u8>,
    expect: String,
}

impl Conn {
    fn open(socket: &Path) -> std::io::Result<Self> {
        let stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let writer = stream.try_clone()?;
        let mut c = Self {
            reader: BufReader::with_capacity(8192, stream),
            writer,
            line: String::with_capacity(1024),
            req: Vec::with_capacity(128),
            expect: String::with_capacity(64),
        };
        c.writer
            .write_all(b"{\"op\":\"hello\",\"version\":1,\"id\":0}\n")?;
        c.read_line()?;
        if !c.line.contains("\"ok\":true") {
            return Err(std::io::Error::other(format!(
                "hello refused: {}",
                c.line.trim()
            )));
        }
        Ok(c)
    }

    fn read_line(&mut self) -> std::io::Result<()> {
        self.line.clear();
        let n = self.reader.read_line(&mut self.line)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "agent closed the connection",
            ));
        }
        Ok(())
    }

    /// One `get` round trip; checks the reply echoes `id` and is ok.
    fn get(&mut self, id: u64) -> std::io::Result<()> {
        self.req.clear();
        let _ = writeln!(
            self.req,
            "{{\"op\":\"get\",\"name\":\"claude\",\"id\":{id}}}"
        );
        self.writer.write_all(&self.req)?;
        self.read_line()?;
        self.expect.clear();
        let _ = write!(self.expect, "{{\"id\":{id},\"ok\":true,");
        if !self.line.starts_with(&self.expect) {
            return Err(std::io::Error::other(format!(
                "unexpected reply to get {id}: {:.200}",
                self.line.trim()
            )));
        }
        Ok(())
    }

    /// The full `result` of a `get` (for verification only).
    fn get_result(&mut self, id: u64) -> std::io::Result<Value> {
        self.get(id)?;
        let v: Value = serde_json::from_str(&self.line).map_err(std::io::Error::other)?;
        Ok(v["result"].clone())
    }
}

fn wait_for_agent(proc: &mut Proc, socket: &Path) -> Value {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        proc.check_alive();
        if let Ok(mut c) = Conn::open(socket) {
            if let Ok(r) = c.get_result(1) {
                return r;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} did not serve {} within {STARTUP_TIMEOUT:?}; its log:\n{}",
            proc.name,
            socket.display(),
            fs::read_to_string(&proc.log).unwrap_or_default()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------
// Statistics

#[derive(Default, Clone)]
struct Lat {
    /// Sorted, nanoseconds.
    ns: Vec<u64>,
}

impl Lat {
    fn new(mut ns: Vec<u64>) -> Self {
        ns.sort_unstable();
        Self { ns }
    }
    fn pct(&self, p: f64) -> f64 {
        if self.ns.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.ns.len() as f64).ceil() as usize;
        self.ns[rank.clamp(1, self.ns.len()) - 1] as f64
    }
    fn max(&self) -> f64 {
        self.ns.last().map_or(f64::NAN, |&v| v as f64)
    }
    fn mean(&self) -> f64 {
        if self.ns.is_empty() {
            return f64::NAN;
        }
        self.ns.iter().map(|&v| v as f64).sum::<f64>() / self.ns.len() as f64
    }
}

fn us(ns: f64) -> f64 {
    ns / 1000.0
}

fn ms(d: f64) -> f64 {
    d / 1e6
}

struct LoadResult {
    label: String,
    clients: usize,
    /// Send → reply.
    lat: Lat,
    /// Open loop only: scheduled send time → reply (includes queueing behind a late send).
    sched_lat: Option<Lat>,
    rps: f64,
    offered: Option<f64>,
    errors: usize,
    agent_cpu_us_per_req: f64,
    bench_cpu_us_per_req: f64,
    other_cores: f64,
}

impl LoadResult {
    fn to_json(&self) -> Value {
        json!({
            "label": self.label,
            "clients": self.clients,
            "requests": self.lat.ns.len(),
            "rps": self.rps.round(),
            "offered_rps": self.offered,
            "p50_ns": self.lat.pct(50.0),
            "p99_ns": self.lat.pct(99.0),
            "max_ns": self.lat.max(),
            "mean_ns": self.lat.mean().round(),
            "sched_p99_ns": self.sched_lat.as_ref().map(|l| l.pct(99.0)),
            "errors": self.errors,
            "agent_cpu_us_per_req": (self.agent_cpu_us_per_req * 100.0).round() / 100.0,
            "bench_cpu_us_per_req": (self.bench_cpu_us_per_req * 100.0).round() / 100.0,
            "other_load_cores": (self.other_cores * 100.0).round() / 100.0,
        })
    }
}

/// Per-scenario CPU accounting: the agent, this process, and everything else.
struct CpuMark {
    t: Instant,
    agent: f64,
    me: f64,
    sys: f64,
}

impl CpuMark {
    fn now(agent_pid: u32) -> Self {
        Self {
            t: Instant::now(),
            agent: proc_cpu_secs(agent_pid),
            me: self_cpu_secs(),
            sys: system_busy_secs(),
        }
    }
    /// (agent cpu s, bench cpu s, other processes' average cores) since `self`.
    fn since(&self, agent_pid: u32) -> (f64, f64, f64) {
        let now = Self::now(agent_pid);
        let dt = now.t.duration_since(self.t).as_secs_f64().max(1e-9);
        let agent = now.agent - self.agent;
        let me = now.me - self.me;
        let other = ((now.sys - self.sys) - agent - me).max(0.0) / dt;
        (agent, me, other)
    }
}

// ---------------------------------------------------------------------------------------
// Load generators

/// `clients` persistent connections, each hello once then back-to-back `get`s for
/// [`WARMUP`] + `dur`; latencies recorded after the warm-up.
fn closed_loop(socket: &Path, agent_pid: u32, clients: usize, dur: Duration) -> LoadResult {
    let connected = Barrier::new(clients + 1);
    let go = Barrier::new(clients + 1);
    let times: OnceLock<(Instant, Instant)> = OnceLock::new();
    let mut mark = None;
    let results: Vec<(Vec<u64>, usize)> = thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| {
                    let conn = Conn::open(socket);
                    connected.wait();
                    go.wait();
                    let Ok(mut conn) = conn else {
                        return (Vec::new(), 1);
                    };
                    let (warm_end, end) = *times.get().expect("times set before go");
                    let mut lat = Vec::with_capacity(64 * 1024);
                    let mut id = 1u64;
                    let mut errors = 0;
                    while (id as usize) < MAX_PER_CLIENT {
                        let t = Instant::now();
                        if t >= end {
                            break;
                        }
                        if conn.get(id).is_err() {
                            errors += 1;
                            break;
                        }
                        if t >= warm_end {
                            lat.push(t.elapsed().as_nanos() as u64);
                        }
                        id += 1;
                    }
                    (lat, errors)
                })
            })
            .collect();
        connected.wait();
        let start = Instant::now();
        let _ = times.set((start + WARMUP, start + WARMUP + dur));
        go.wait();
        thread::sleep(WARMUP);
        mark = Some(CpuMark::now(agent_pid));
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let (agent_cpu, me_cpu, other) = mark.expect("mark taken").since(agent_pid);
    let errors = results.iter().map(|r| r.1).sum();
    let lat = Lat::new(results.into_iter().flat_map(|r| r.0).collect());
    let n = lat.ns.len().max(1) as f64;
    LoadResult {
        label: format!(
            "closed loop, {clients} client{}",
            if clients == 1 { "" } else { "s" }
        ),
        clients,
        rps: lat.ns.len() as f64 / dur.as_secs_f64(),
        lat,
        sched_lat: None,
        offered: None,
        errors,
        agent_cpu_us_per_req: agent_cpu * 1e6 / n,
        bench_cpu_us_per_req: me_cpu * 1e6 / n,
        other_cores: other,
    }
}

/// `clients` persistent connections sharing a fixed total offered `rate`, sends evenly
/// staggered across connections; each connection sends on schedule (or at once if late).
fn open_loop(
    socket: &Path,
    agent_pid: u32,
    clients: usize,
    rate: f64,
    dur: Duration,
) -> LoadResult {
    let connected = Barrier::new(clients + 1);
    let go = Barrier::new(clients + 1);
    let times: OnceLock<(Instant, Instant, Instant)> = OnceLock::new();
    let gap = Duration::from_secs_f64(1.0 / rate);
    let per_conn = gap * u32::try_from(clients).unwrap_or(1);
    let mut mark = None;
    type R = (Vec<u64>, Vec<u64>, usize);
    let results: Vec<R> = thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|i| {
                let (connected, go, times) = (&connected, &go, &times);
                s.spawn(move || {
                    // 1 ns timer slack: sleeps end on time (the default 50 µs would skew the schedule).
                    // SAFETY: PR_SET_TIMERSLACK only changes the calling thread's timer slack.
                    unsafe {
                        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
                    }
                    let conn = Conn::open(socket);
                    connected.wait();
                    go.wait();
                    let Ok(mut conn) = conn else {
                        return (Vec::new(), Vec::new(), 1);
                    };
                    let (start, warm_end, end) = *times.get().expect("times set before go");
                    let mut lat = Vec::with_capacity(4096);
                    let mut sched_lat = Vec::with_capacity(4096);
                    let mut errors = 0;
                    let mut next = start + gap * u32::try_from(i).unwrap_or(0);
                    let mut id = 1u64;
                    while next < end && (id as usize) < MAX_PER_CLIENT {
                        let now = Instant::now();
                        if next > now {
                            thread::sleep(next - now);
                        }
                        let t = Instant::now();
                        if conn.get(id).is_err() {
                            errors += 1;
                            break;
                        }
                        let done = Instant::now();
                        if next >= warm_end {
                            lat.push(done.duration_since(t).as_nanos() as u64);
                            sched_lat.push(done.duration_since(next).as_nanos() as u64);
                        }
                        next += per_conn;
                        id += 1;
                    }
                    (lat, sched_lat, errors)
                })
            })
            .collect();
        connected.wait();
        let start = Instant::now() + Duration::from_millis(10);
        let _ = times.set((start, start + WARMUP, start + WARMUP + dur));
        go.wait();
        thread::sleep(WARMUP + Duration::from_millis(10));
        mark = Some(CpuMark::now(agent_pid));
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let (agent_cpu, me_cpu, other) = mark.expect("mark taken").since(agent_pid);
    let errors = results.iter().map(|r| r.2).sum();
    let mut lat = Vec::new();
    let mut sched = Vec::new();
    for (l, s, _) in results {
        lat.extend(l);
        sched.extend(s);
    }
    let lat = Lat::new(lat);
    let n = lat.ns.len().max(1) as f64;
    LoadResult {
        label: format!("open loop, {clients} clients @ {rate:.0} req/s"),
        clients,
        rps: lat.ns.len() as f64 / dur.as_secs_f64(),
        lat,
        sched_lat: Some(Lat::new(sched)),
        offered: Some(rate),
        errors,
        agent_cpu_us_per_req: agent_cpu * 1e6 / n,
        bench_cpu_us_per_req: me_cpu * 1e6 / n,
        other_cores: other,
    }
}

// ---------------------------------------------------------------------------------------
// Environment

struct Dirs {
    root: PathBuf,
}

impl Dirs {
    fn private(&self, rel: &str) -> PathBuf {
        let p = self.root.join(rel);
        fs::create_dir_all(&p).expect("create a bench directory");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o700)).expect("chmod 700");
        p
    }
}

/// The environment of every child: nothing inherited but PATH and a locale.
fn isolated_env(cmd: &mut Command, home: &Path, bus: Option<&str>) {
    cmd.env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .env("LANG", "C.UTF-8")
        .env("USER", SS_USER)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("XDG_STATE_HOME", home.join(".local/state"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env("XDG_RUNTIME_DIR", home.join("run"));
    if let Some(addr) = bus {
        cmd.env("DBUS_SESSION_BUS_ADDRESS", addr);
    }
}

fn make_home(dirs: &Dirs, name: &str) -> PathBuf {
    let home = dirs.private(name);
    for sub in [
        ".config/keyferry",
        ".local/share",
        ".local/state",
        ".cache",
        "run",
    ] {
        dirs.private(&format!("{name}/{sub}"));
    }
    home
}

fn find_binary() -> Option<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let candidates = [
        std::env::var_os("KF_BENCH_BIN").map(PathBuf::from),
        Some(manifest.join("target/release/keyferry")),
        option_env!("CARGO_BIN_EXE_keyferry").map(PathBuf::from),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

struct SecretService {
    address: String,
    // Field order = drop order: the keyring daemon goes before its bus.
    _keyring: Proc,
    _bus: Proc,
}

fn start_secret_service(dirs: &Dirs, token: &str, watchdog: &Watchdog) -> SecretService {
    let dir = dirs.private("ss");
    let home = make_home(dirs, "ss/home");
    let socket = dir.join("bus");
    let address = format!("unix:path={}", socket.display());
    let conf = dir.join("bus.conf");
    fs::write(
        &conf,
        format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
            socket.display()
        ),
    )
    .expect("write the bus config");
    let mut cmd = guarded_command(Path::new("dbus-daemon"));
    isolated_env(&mut cmd, &home, None);
    cmd.arg(format!("--config-file={}", conf.display()))
        .arg("--nofork")
        .arg("--nopidfile");
    let mut bus = Proc::spawn("dbus-daemon", cmd, dir.join("dbus.log"), None);
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    while UnixStream::connect(&socket).is_err() {
        bus.check_alive();
        assert!(Instant::now() < deadline, "dbus-daemon did not listen");
        thread::sleep(Duration::from_millis(10));
    }
    let mut cmd = guarded_command(Path::new("gnome-keyring-daemon"));
    isolated_env(&mut cmd, &home, Some(&address));
    cmd.args(["--unlock", "--components=secrets", "--foreground"]);
    let mut keyring = Proc::spawn(
        "gnome-keyring-daemon",
        cmd,
        dir.join("gnome-keyring.log"),
        Some(KEYRING_PASSWORD),
    );
    // Store the token; retried until the daemon owns org.freedesktop.secrets.
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        keyring.check_alive();
        let mut cmd = Command::new("secret-tool");
        isolated_env(&mut cmd, &home, Some(&address));
        cmd.args([
            "store",
            "--label=keyferry bench",
            "service",
            SS_SERVICE,
            "username",
            SS_USER,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
        let mut child = cmd.spawn().expect("run secret-tool (libsecret-tools)");
        if let Some(mut pipe) = child.stdin.take() {
            let _ = pipe.write_all(token.as_bytes());
        }
        watchdog.set(Some((child.id(), Instant::now() + CHILD_TIMEOUT)));
        let out = child.wait_with_output().expect("wait for secret-tool");
        watchdog.set(None);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "secret-tool store kept failing: {}\ngnome-keyring log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            fs::read_to_string(&keyring.log).unwrap_or_default()
        );
        thread::sleep(Duration::from_millis(100));
    }
    SecretService {
        address,
        _keyring: keyring,
        _bus: bus,
    }
}

struct AgentSetup {
    proc: Proc,
    home: PathBuf,
    config: PathBuf,
    socket: PathBuf,
    bus: Option<String>,
    source: String,
}

fn start_agent(
    bin: &Path,
    dirs: &Dirs,
    name: &str,
    config_text: &str,
    bus: Option<&str>,
) -> AgentSetup {
    let home = make_home(dirs, name);
    let config = home.join(".config/keyferry/config.toml");
    fs::write(&config, config_text).expect("write the agent config");
    let socket = dirs.private(&format!("{name}/sock")).join("agent.sock");
    let mut cmd = guarded_command(bin);
    isolated_env(&mut cmd, &home, bus);
    if let Ok(n) = std::env::var("KF_BENCH_TOKIO_WORKERS") {
        cmd.env("TOKIO_WORKER_THREADS", n);
    }
    cmd.arg("--config")
        .arg(&config)
        .arg("--socket")
        .arg(&socket)
        .arg("agent");
    let mut proc = Proc::spawn(
        &format!("keyferry agent ({name})"),
        cmd,
        home.join("agent.log"),
        None,
    );
    let first = wait_for_agent(&mut proc, &socket);
    AgentSetup {
        proc,
        home,
        config,
        socket,
        bus: bus.map(str::to_owned),
        source: first["source"].as_str().unwrap_or_default().to_owned(),
    }
}

// ---------------------------------------------------------------------------------------
// CLI comparison

struct CliRow {
    label: String,
    times_ns: Lat,
}

fn cli_compare(
    bin: &Path,
    b: &AgentSetup,
    ss_home: &Path,
    token: &str,
    runs: usize,
    watchdog: &Watchdog,
) -> Vec<CliRow> {
    let kf = |extra: &[&str]| {
        let mut cmd = Command::new(bin);
        isolated_env(&mut cmd, &b.home, b.bus.as_deref());
        cmd.arg("--config")
            .arg(&b.config)
            .arg("--socket")
            .arg(&b.socket)
            .args(extra)
            .args(["get", "claude"]);
        cmd
    };
    let st = || {
        let mut cmd = Command::new("secret-tool");
        isolated_env(&mut cmd, ss_home, b.bus.as_deref());
        cmd.args(["lookup", "service", SS_SERVICE, "username", SS_USER]);
        cmd
    };
    let truth = || Command::new("true");
    type Make<'a> = Box<dyn Fn() -> Command + 'a>;
    let commands: Vec<(&str, Make<'_>, bool)> = vec![
        (
            "keyferry --require-agent get (via agent)",
            Box::new(|| kf(&["--require-agent"])),
            true,
        ),
        ("secret-tool lookup (Secret Service)", Box::new(st), true),
        (
            "keyferry --no-agent get (direct Secret Service, info)",
            Box::new(|| kf(&["--no-agent"])),
            true,
        ),
        ("/bin/true (spawn floor, info)", Box::new(truth), false),
    ];
    let mut samples: Vec<Vec<u64>> = vec![Vec::with_capacity(runs); commands.len()];
    let warm = 5;
    for i in 0..runs + warm {
        for (k, (label, make, check)) in commands.iter().enumerate() {
            let (t, out) = watchdog.run(&mut make());
            if *check {
                let got = String::from_utf8_lossy(&out.stdout);
                assert!(
                    out.status.success() && got.trim_end() == token,
                    "{label}: unexpected result (status {}, stdout {} bytes, stderr {})",
                    out.status,
                    got.len(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            if i >= warm {
                samples[k].push(t.as_nanos() as u64);
            }
        }
    }
    commands
        .iter()
        .zip(samples)
        .map(|((label, _, _), s)| CliRow {
            label: (*label).to_owned(),
            times_ns: Lat::new(s),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Idle

struct IdleMark {
    rss_start: f64,
    hwm_start: f64,
    threads_start: u64,
    cpu: f64,
    ctx: u64,
}

struct IdleResult {
    label: String,
    rss_start: f64,
    hwm_start: f64,
    rss_end: f64,
    hwm_end: f64,
    threads: (u64, u64),
    cpu_pct: f64,
    wakeups_per_s: f64,
}

impl IdleResult {
    fn to_json(&self) -> Value {
        let r = |v: f64| (v * 1000.0).round() / 1000.0;
        json!({
            "label": self.label,
            "rss_start_mb": r(self.rss_start),
            "hwm_start_mb": r(self.hwm_start),
            "rss_end_mb": r(self.rss_end),
            "hwm_end_mb": r(self.hwm_end),
            "threads_start": self.threads.0,
            "threads_end": self.threads.1,
            "cpu_pct": r(self.cpu_pct),
            "ctx_switches_per_s": r(self.wakeups_per_s),
        })
    }
}

fn idle_mark(pid: u32) -> IdleMark {
    IdleMark {
        rss_start: status_mb(pid, "VmRSS"),
        hwm_start: status_mb(pid, "VmHWM"),
        threads_start: status_num(pid, "Threads"),
        cpu: proc_cpu_secs(pid),
        ctx: ctx_switches(pid),
    }
}

fn idle_finish(label: &str, pid: u32, m: &IdleMark, secs: f64) -> IdleResult {
    IdleResult {
        label: label.to_owned(),
        rss_start: m.rss_start,
        hwm_start: m.hwm_start,
        rss_end: status_mb(pid, "VmRSS"),
        hwm_end: status_mb(pid, "VmHWM"),
        threads: (m.threads_start, status_num(pid, "Threads")),
        cpu_pct: (proc_cpu_secs(pid) - m.cpu) / secs * 100.0,
        wakeups_per_s: ctx_switches(pid).saturating_sub(m.ctx) as f64 / secs,
    }
}

// ---------------------------------------------------------------------------------------
// Report

fn verdict(ok: bool) -> &'static str {
    if ok {
        "MET"
    } else {
        "MISSED"
    }
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
    let ss = start_secret_service(&dirs, &token_ss, &watchdog);
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

    // ----- Report -----
    let mut out = String::new();
    let workers = std::env::var("KF_BENCH_TOKIO_WORKERS").ok();
    let _ = writeln!(
        out,
        "\n## keyferry agent benchmark\n\n{} cores; load average at start {load_start}, at end {load_end}; binary {}{}\n",
        cores(),
        bin.display(),
        workers
            .as_deref()
            .map_or_else(String::new, |n| format!("; agents run with TOKIO_WORKER_THREADS={n}"))
    );
    let _ = writeln!(
        out,
        "### `get` round trip over the socket (agent A, token from a file)\n"
    );
    let _ = writeln!(
        out,
        "| scenario | req/s | p50 µs | p99 µs | max µs | mean µs | agent CPU µs/req | bench CPU µs/req | other load (cores) | errors |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for l in &loads {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {} |",
            l.label,
            l.rps,
            us(l.lat.pct(50.0)),
            us(l.lat.pct(99.0)),
            us(l.lat.max()),
            us(l.lat.mean()),
            l.agent_cpu_us_per_req,
            l.bench_cpu_us_per_req,
            l.other_cores,
            l.errors
        );
    }
    let open = loads.last().expect("open-loop result");
    let c64 = &loads[2];
    if let Some(s) = &open.sched_lat {
        let _ = writeln!(
            out,
            "\nOpen loop, measured from the *scheduled* send time (no coordinated omission; includes the bench threads' own wake-up lateness on 2 busy cores): p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs.",
            us(s.pct(50.0)),
            us(s.pct(99.0)),
            us(s.max())
        );
    }
    let needed = 64.0 / (TARGET_P99_US * 1e-6);
    let _ = writeln!(
        out,
        "\nLittle's law (L = λ·W): a closed loop keeps exactly L = 64 requests in flight, so the mean \
         latency is W = L/λ = 64 / {:.0} req/s = {:.1} µs (measured mean {:.1} µs). p99 ≥ mean, so on \
         {} cores a closed-loop p99 ≤ {TARGET_P99_US:.0} µs at 64 clients would need λ ≥ 64 / {TARGET_P99_US:.0} µs = \
         {needed:.0} req/s, i.e. ≤ {:.2} µs of CPU per request for agent and clients together \
         (measured {:.1} µs). Closed-loop p99 at 64 clients measures queueing depth, not service \
         time. At a fixed offered load of {:.0} req/s the queue is short: L = λ·W = {:.0} × {:.1} µs = {:.2} \
         requests in flight on average, and p99 is {:.1} µs.",
        c64.rps,
        64.0 / c64.rps * 1e6,
        us(c64.lat.mean()),
        cores(),
        cores() as f64 / needed * 1e6,
        c64.agent_cpu_us_per_req + c64.bench_cpu_us_per_req,
        rate,
        open.rps,
        us(open.lat.mean()),
        open.rps * open.lat.mean() * 1e-9,
        us(open.lat.pct(99.0)),
    );

    let _ = writeln!(
        out,
        "\n### CLI per call, process spawn included ({runs} runs each, alternating; agent B, Secret Service item)\n"
    );
    let _ = writeln!(out, "| command | mean ms | median ms | p90 ms | max ms |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    for r in &cli {
        let _ = writeln!(
            out,
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            r.label,
            ms(r.times_ns.mean()),
            ms(r.times_ns.pct(50.0)),
            ms(r.times_ns.pct(90.0)),
            ms(r.times_ns.max())
        );
    }
    let ratio_mean = cli[1].times_ns.mean() / cli[0].times_ns.mean();
    let ratio_median = cli[1].times_ns.pct(50.0) / cli[0].times_ns.pct(50.0);

    let _ = writeln!(
        out,
        "\n### Idle agent ({idle_secs:.0} s window; other processes used {idle_other:.2} cores meanwhile)\n"
    );
    let _ = writeln!(
        out,
        "| agent | VmRSS start MB | VmHWM start MB | VmRSS after idle MB | VmHWM after idle MB | threads | CPU % | ctx switches/s |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for i in &idle {
        let _ = writeln!(
            out,
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {}→{} | {:.3} | {:.2} |",
            i.label,
            i.rss_start,
            i.hwm_start,
            i.rss_end,
            i.hwm_end,
            i.threads.0,
            i.threads.1,
            i.cpu_pct,
            i.wakeups_per_s
        );
    }
    let _ = writeln!(
        out,
        "\nAgent A after the load tests: VmRSS {:.2} MB, VmHWM {:.2} MB. CPU% resolution: {:.3} % (one clock tick over the window).",
        after_load.0,
        after_load.1,
        100.0 / clk_tck() / idle_secs
    );

    let p99_64 = us(c64.lat.pct(99.0));
    let p99_open = us(open.lat.pct(99.0));
    let rss_worst = idle
        .iter()
        .flat_map(|i| [i.rss_start, i.rss_end])
        .fold(0.0_f64, f64::max);
    let cpu_a = idle[0].cpu_pct;
    let cpu_b = idle[1].cpu_pct;
    let best_rps = loads.iter().map(|l| l.rps).fold(0.0_f64, f64::max);
    let _ = writeln!(out, "\n### Targets\n");
    let _ = writeln!(out, "| target | measured | status |");
    let _ = writeln!(out, "|---|---:|---|");
    let row = |out: &mut String, t: &str, m: String, ok: bool, by: String| {
        let _ = writeln!(out, "| {t} | {m} | {} {by} |", verdict(ok));
    };
    row(
        &mut out,
        "p99 ≤ 200 µs at 64 clients, open loop @ offered rate",
        format!("{p99_open:.1} µs"),
        p99_open <= TARGET_P99_US,
        format!("({:.2}× the limit)", p99_open / TARGET_P99_US),
    );
    row(
        &mut out,
        "p99 ≤ 200 µs at 64 clients, closed loop (Little-bound, see above)",
        format!("{p99_64:.1} µs"),
        p99_64 <= TARGET_P99_US,
        format!("({:.2}× the limit)", p99_64 / TARGET_P99_US),
    );
    row(
        &mut out,
        "≥ 20k req/s at 64 clients (closed loop)",
        format!("{:.0} req/s (best of all: {best_rps:.0})", c64.rps),
        c64.rps >= TARGET_RPS,
        format!("({:.2}× the target)", c64.rps / TARGET_RPS),
    );
    row(
        &mut out,
        "≥ 5× faster than secret-tool (mean; median)",
        format!("{ratio_mean:.2}×; {ratio_median:.2}×"),
        ratio_mean >= TARGET_CLI_RATIO,
        format!("({:.2}× the target)", ratio_mean / TARGET_CLI_RATIO),
    );
    row(
        &mut out,
        "RSS ≤ 15 MB (worst of both agents, start and after idle)",
        format!("{rss_worst:.2} MB"),
        rss_worst <= TARGET_RSS_MB,
        format!("({:.2}× the limit)", rss_worst / TARGET_RSS_MB),
    );
    row(
        &mut out,
        "idle CPU ≤ 0.1 % (agent A, file source)",
        format!("{cpu_a:.3} %"),
        cpu_a <= TARGET_IDLE_CPU_PCT,
        format!("({:.2}× the limit)", cpu_a / TARGET_IDLE_CPU_PCT),
    );
    row(
        &mut out,
        "idle CPU ≤ 0.1 % (agent B, Secret Service)",
        format!("{cpu_b:.3} %"),
        cpu_b <= TARGET_IDLE_CPU_PCT,
        format!("({:.2}× the limit)", cpu_b / TARGET_IDLE_CPU_PCT),
    );
    println!("{out}");

    let report = json!({
        "bench": "keyferry-agent",
        "cores": cores(),
        "loadavg_start": load_start,
        "loadavg_end": load_end,
        "idle_secs": idle_secs,
        "tokio_worker_threads": workers,
        "load_secs": secs,
        "get": loads.iter().map(LoadResult::to_json).collect::<Vec<_>>(),
        "open_loop_sched_p99_ns": open.sched_lat.as_ref().map(|l| l.pct(99.0)),
        "cli": cli.iter().map(|r| json!({
            "label": r.label,
            "runs": r.times_ns.ns.len(),
            "mean_ns": r.times_ns.mean().round(),
            "median_ns": r.times_ns.pct(50.0),
        })).collect::<Vec<_>>(),
        "cli_ratio_mean": (ratio_mean * 100.0).round() / 100.0,
        "cli_ratio_median": (ratio_median * 100.0).round() / 100.0,
        "idle": idle.iter().map(IdleResult::to_json).collect::<Vec<_>>(),
        "idle_other_load_cores": (idle_other * 100.0).round() / 100.0,
        "after_load_rss_mb": after_load.0,
        "after_load_hwm_mb": after_load.1,
        "targets": {
            "p99_open_64_ok": p99_open <= TARGET_P99_US,
            "p99_closed_64_ok": p99_64 <= TARGET_P99_US,
            "rps_64_ok": c64.rps >= TARGET_RPS,
            "cli_ratio_ok": ratio_mean >= TARGET_CLI_RATIO,
            "rss_ok": rss_worst <= TARGET_RSS_MB,
            "idle_cpu_a_ok": cpu_a <= TARGET_IDLE_CPU_PCT,
            "idle_cpu_b_ok": cpu_b <= TARGET_IDLE_CPU_PCT,
        },
    });
    println!("BENCH_JSON {report}");

    // Agents before the Secret Service, then the temporary directory.
    drop(a);
    drop(b);
    drop(ss);
    drop(watchdog);
    drop(tmp);
    ExitCode::SUCCESS
}
