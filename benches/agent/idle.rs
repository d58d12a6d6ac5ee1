//! The idle window: RSS, threads, CPU and wake-ups of an agent doing nothing.

use super::*;

pub struct IdleMark {
    pub rss_start: f64,
    pub hwm_start: f64,
    pub threads_start: u64,
    pub cpu: f64,
    pub ctx: u64,
}

pub struct IdleResult {
    pub label: String,
    pub rss_start: f64,
    pub hwm_start: f64,
    pub rss_end: f64,
    pub hwm_end: f64,
    pub threads: (u64, u64),
    pub cpu_pct: f64,
    pub wakeups_per_s: f64,
}

impl IdleResult {
    pub fn to_json(&self) -> Value {
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

pub fn idle_mark(pid: u32) -> IdleMark {
    IdleMark {
        rss_start: status_mb(pid, "VmRSS"),
        hwm_start: status_mb(pid, "VmHWM"),
        threads_start: status_num(pid, "Threads"),
        cpu: proc_cpu_secs(pid),
        ctx: ctx_switches(pid),
    }
}

pub fn idle_finish(label: &str, pid: u32, m: &IdleMark, secs: f64) -> IdleResult {
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
