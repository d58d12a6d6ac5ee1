//! The bench's own process helper: a watchdog that kills a short-lived child (a measured CLI
//! call) that overruns, without a thread per call. Daemons are `testkit::Proc`s.

use super::*;

/// Kills a short-lived child that overruns [`CHILD_TIMEOUT`]; one thread for the run.
pub struct Watchdog {
    pub slot: Arc<Mutex<Option<(u32, Instant)>>>,
    pub stop: Arc<AtomicBool>,
    pub handle: Option<thread::JoinHandle<()>>,
}

impl Watchdog {
    pub fn start() -> Self {
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

    pub fn set(&self, v: Option<(u32, Instant)>) {
        *self
            .slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = v;
    }

    /// Spawns `cmd` (own process group), waits for it; returns wall time and stdout.
    pub fn run(&self, cmd: &mut Command) -> (Duration, std::process::Output) {
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
