//! Load generators: closed loop (N connections, back to back) and open loop (a fixed
//! offered rate over N connections, measured from the scheduled send time).

use super::*;

/// `clients` persistent connections, each hello once then back-to-back `get`s for
/// [`WARMUP`] + `dur`; latencies recorded after the warm-up.
pub fn closed_loop(socket: &Path, agent_pid: u32, clients: usize, dur: Duration) -> LoadResult {
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
pub fn open_loop(
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
