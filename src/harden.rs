//! Keeping the agent's memory to itself: the agent and the tray hold the refresh tokens the
//! single refresher exists to protect, and any process of the same user could otherwise
//! read them through `/proc/PID/mem` or ptrace (Yama is absent or at scope 0 on many
//! hosts). [`process`] makes the process non-dumpable (`PT_DENY_ATTACH` on macOS) and
//! turns core dumps off, as ssh-agent and gpg-agent do; from then on the pages that hold
//! a [`crate::secret::Secret`] are locked in RAM (kept out of swap and core dumps) within
//! `RLIMIT_MEMLOCK`, never failing when the limit is reached.
//!
//! The plain CLI does not call [`process`]: the agent tells a sandboxed peer by reading its
//! `/proc/PID/ns`, which a non-dumpable peer hides, so a hidden peer counts as sandboxed
//! and a dumpable `keyferry get` is what a host process looks like.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Pages locked for secrets, with how many live secrets each holds (several small
/// allocations share a page, and `munlock` is not counted by the kernel), and the budget.
struct Locked {
    pages: BTreeMap<usize, u32>,
    budget_pages: usize,
}

static LOCKED: Mutex<Locked> = Mutex::new(Locked {
    pages: BTreeMap::new(),
    budget_pages: 0,
});

/// What [`process`] could apply; each failure is logged and never fatal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub non_dumpable: bool,
    pub no_core: bool,
    /// Bytes of secrets that may be locked in RAM (`RLIMIT_MEMLOCK`, less a margin).
    pub lockable_bytes: u64,
}

/// Hardens the current process; call first thing in the agent and the tray.
pub fn process() -> Applied {
    let non_dumpable = crate::sys::deny_inspection()
        .map_err(|e| tracing::warn!(error = %e, "cannot make the agent non-dumpable"))
        .is_ok();
    let no_core = crate::sys::no_core_dumps()
        .map_err(|e| tracing::warn!(error = %e, "cannot turn core dumps off"))
        .is_ok();
    // Half the limit: the rest stays for whatever else the process (WebKit in the tray)
    // may lock. Unlimited (root) is capped at 16 MiB of secrets, far more than needed.
    let lockable_bytes = crate::sys::memlock_limit().map_or(0, |l| (l / 2).min(16 * 1024 * 1024));
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    crate::sys::pin_mmap_threshold();
    let page = crate::sys::page_size();
    {
        let mut locked = LOCKED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        locked.budget_pages = usize::try_from(lockable_bytes).unwrap_or(0) / page;
    }
    ENABLED.store(true, Relaxed);
    tracing::debug!(non_dumpable, no_core, lockable_bytes, "process hardened");
    Applied {
        non_dumpable,
        no_core,
        lockable_bytes,
    }
}

fn pages(ptr: usize, len: usize) -> impl Iterator<Item = usize> {
    let page = crate::sys::page_size();
    let first = ptr & !(page - 1);
    let end = ptr + len.max(1);
    (first..end).step_by(page)
}

/// Locks the pages under `len` bytes at `ptr` (a secret's buffer), if hardening is on.
pub(crate) fn lock(ptr: usize, len: usize) {
    if !ENABLED.load(Relaxed) || len == 0 {
        return;
    }
    let mut locked = LOCKED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for page in pages(ptr, len) {
        let full = locked.pages.len() >= locked.budget_pages;
        match locked.pages.get_mut(&page) {
            Some(n) => *n += 1,
            None if !full && crate::sys::lock_page(page) => {
                locked.pages.insert(page, 1);
            }
            // Over the limit (or refused): the secret stays usable, just swappable.
            None => {}
        }
    }
}

/// Releases what [`lock`] took for the same buffer; a page is unlocked with its last secret.
pub(crate) fn unlock(ptr: usize, len: usize) {
    if !ENABLED.load(Relaxed) || len == 0 {
        return;
    }
    let mut locked = LOCKED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for page in pages(ptr, len) {
        if let Some(n) = locked.pages.get_mut(&page) {
            *n -= 1;
            if *n == 0 {
                locked.pages.remove(&page);
                crate::sys::unlock_page(page);
            }
        }
    }
}

/// How many pages are locked for secrets now (for tests and `doctor`).
#[must_use]
pub fn locked_pages() -> usize {
    LOCKED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .pages
        .len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_of_a_buffer_cover_its_first_and_last_byte() {
        let page = crate::sys::page_size();
        assert_eq!(pages(page * 3 + 10, 5).collect::<Vec<_>>(), [page * 3]);
        assert_eq!(
            pages(page * 3 + page - 2, 4).collect::<Vec<_>>(),
            [page * 3, page * 4]
        );
    }

    /// How many secrets hold `page` locked.
    fn holders(page: usize) -> u32 {
        LOCKED
            .lock()
            .unwrap()
            .pages
            .get(&page)
            .copied()
            .unwrap_or(0)
    }

    #[test]
    fn a_shared_page_stays_locked_until_its_last_secret_goes() {
        ENABLED.store(true, Relaxed);
        // Other tests make secrets meanwhile: never let the budget be what refuses.
        LOCKED.lock().unwrap().budget_pages = usize::MAX;
        // Three pages of our own: the middle one holds no other test's secret.
        let page = crate::sys::page_size();
        let buf = vec![0u8; page * 3];
        let mid = (buf.as_ptr() as usize).next_multiple_of(page) + page;
        assert!(mid + page <= buf.as_ptr() as usize + buf.len());
        assert_eq!(holders(mid), 0);
        lock(mid, 8);
        lock(mid + 16, 8);
        assert_eq!(holders(mid), 2, "both secrets hold the page");
        unlock(mid, 8);
        assert_eq!(holders(mid), 1, "the page went with its first secret");
        unlock(mid + 16, 8);
        assert_eq!(holders(mid), 0);
        drop(buf);
    }
}
