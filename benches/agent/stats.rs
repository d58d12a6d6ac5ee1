//! Statistics: latency samples and percentiles, one load scenario's result, CPU marks.

use super::*;

#[derive(Default, Clone)]
pub struct Lat {
    /// Sorted, nanoseconds.
    pub ns: Vec<u64>,
}

impl Lat {
    pub fn new(mut ns: Vec<u64>) -> Self {
        ns.sort_unstable();
        Self { ns }
    }
    pub fn pct(&self, p: f64) -> f64 {
        if self.ns.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.ns.len() as f64).ceil() as usize;
        self.ns[rank.clamp(1, self.ns.len()) - 1] as f64
    }
    pub fn max(&self) -> f64 {
        self.ns.last().map_or(f64::NAN, |&v| v as f64)
    }
    pub fn mean(&self) -> f64 {
        if self.ns.is_empty() {
            return f64::NAN;
        }
        self.ns.iter().map(|&v| v as f64).sum::<f64>() / self.ns.len() as f64
    }
}

pub fn us(ns: f64) -> f64 {
    ns / 1000.0
}

pub fn ms(d: f64) -> f64 {
    d / 1e6
}

pub struct LoadResult {
    pub label: String,
    pub clients: usize,
    /// Send → reply.
    pub lat: Lat,
    /// Open loop only: scheduled send time → reply (includes queueing behind a late send).
    pub sched_lat: Option<Lat>,
    pub rps: f64,
    pub offered: Option<f64>,
    pub errors: usize,
    pub agent_cpu_us_per_req: f64,
    pub bench_cpu_us_per_req: f64,
    pub other_cores: f64,
}

impl LoadResult {
    pub fn to_json(&self) -> Value {
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
pub struct CpuMark {
    pub t: Instant,
    pub agent: f64,
    pub me: f64,
    pub sys: f64,
}

impl CpuMark {
    pub fn now(agent_pid: u32) -> Self {
        Self {
            t: Instant::now(),
            agent: proc_cpu_secs(agent_pid),
            me: self_cpu_secs(),
            sys: system_busy_secs(),
        }
    }
    /// (agent cpu s, bench cpu s, other processes' average cores) since `self`.
    pub fn since(&self, agent_pid: u32) -> (f64, f64, f64) {
        let now = Self::now(agent_pid);
        let dt = now.t.duration_since(self.t).as_secs_f64().max(1e-9);
        let agent = now.agent - self.agent;
        let me = now.me - self.me;
        let other = ((now.sys - self.sys) - agent - me).max(0.0) / dt;
        (agent, me, other)
    }
}
