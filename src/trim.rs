//! Giving memory back once the app goes idle (Linux): after start-up, and when its window
//! closes. The window's WebKit processes and the pages they made the app touch outlive it
//! otherwise: WebKitGTK never ends its network process while the web context lives (Tauri
//! keeps it for the app's lifetime), and the libraries start-up and the page needed stay
//! resident. macOS's WebKit ends its helpers by itself.

#[cfg(any(target_os = "linux", test))]
use std::path::Path;

/// What [`give_back`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// Child processes sent SIGTERM.
    pub stopped: usize,
    /// Bytes of read-only file mappings the kernel was asked to reclaim (an upper bound:
    /// only their resident pages go).
    pub advised: usize,
}

/// Stops this process's children whose name starts with `stop` (WebKit starts a new network
/// process for the next page) unless one whose name starts with `unless` runs (a web process
/// means a page is open after all), returns freed heap to the kernel, and asks it to reclaim
/// the resident pages of read-only file mappings (libraries, the binary): they are read back
/// from the page cache when next touched. Call when no window is open.
#[must_use]
pub fn give_back(stop: &str, unless: &str) -> Released {
    #[cfg(target_os = "linux")]
    {
        give_back_linux(stop, unless)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (stop, unless);
        Released::default()
    }
}

#[cfg(target_os = "linux")]
fn give_back_linux(stop: &str, unless: &str) -> Released {
    let mut released = Released::default();
    let me = std::process::id();
    let proc = Path::new("/proc");
    if children_named(proc, me, unless).is_empty() {
        for pid in children_named(proc, me, stop) {
            // Signalled only if, pinned by a pidfd, it is still that child.
            let still = |p: i32| children_named(proc, me, stop).contains(&p);
            if crate::sys::terminate_checked(pid, still).unwrap_or(false) {
                released.stopped += 1;
            }
        }
    }
    #[cfg(target_env = "gnu")]
    crate::sys::trim_heap();
    if let Ok(maps) = std::fs::read_to_string("/proc/self/maps") {
        for (start, len) in read_only_file_mappings(&maps) {
            if crate::sys::page_out(start, len) {
                released.advised += len;
            }
        }
    }
    released
}

/// `(start, length)` of every private read-only mapping of a regular file (`r--p`, `r-xp`):
/// pages that can only come back unchanged from the file. Writable, shared, device, memfd
/// and System V mappings are left alone.
#[cfg(any(target_os = "linux", test))]
fn read_only_file_mappings(maps: &str) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|l| {
            let mut cols = l.split_whitespace();
            let range = cols.next()?;
            let perms = cols.next()?;
            let path = cols.nth(3)?;
            let plain_file = path.starts_with('/')
                && !["/dev/", "/memfd:", "/SYSV", "/proc/"]
                    .iter()
                    .any(|p| path.starts_with(p));
            if !plain_file || !matches!(perms, "r--p" | "r-xp") {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            let (a, b) = (
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
            );
            (b > a).then_some((a, b - a))
        })
        .collect()
}

/// Pids under `proc` whose parent is `parent` and whose `comm` starts with `prefix`.
#[cfg(any(target_os = "linux", test))]
fn children_named(proc: &Path, parent: u32, prefix: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir(proc) else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        // `stat` is "pid (comm) state ppid …"; comm may hold spaces and parentheses.
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let (head, rest) = stat.rsplit_once(") ")?;
        let comm = head.split_once(" (")?.1;
        let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == parent && comm.starts_with(prefix)).then_some(pid)
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_read_only_file_mappings_are_paged_out() {
        let maps = "\
55d0c0a00000-55d0c0a10000 r--p 00000000 08:01 123 /usr/bin/keyferry-tray
55d0c0a10000-55d0c0a20000 rw-p 00010000 08:01 123 /usr/bin/keyferry-tray
7f0000000000-7f0000021000 rw-p 00000000 00:00 0 
7f1000000000-7f1000400000 r-xp 00010000 08:01 456 /usr/lib/x86_64-linux-gnu/libwebkit2gtk-4.1.so.0 (deleted)
7f2000000000-7f2000001000 rw-s 00000000 00:05 9 /dev/dri/card0
7f3000000000-7f3000001000 r--s 00000000 00:01 9 /memfd:wayland-cursor (deleted)
7f4000000000-7f4000001000 r--p 00000000 00:05 9 /dev/zero
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
";
        assert_eq!(
            read_only_file_mappings(maps),
            [(0x55d0_c0a0_0000, 0x10000), (0x7f10_0000_0000, 0x40_0000)]
        );
    }

    #[test]
    fn children_are_found_by_parent_and_name() {
        let dir = tempfile::tempdir().unwrap();
        for (pid, stat) in [
            ("101", "101 (WebKitNetworkPr) S 42 1 1"),
            ("102", "102 (WebKitWebProces) S 42 1 1"),
            ("103", "103 (WebKitNetworkPr) S 7 1 1"),
            ("104", "104 (odd) name) S 42 1 1"),
            ("self", "junk"),
        ] {
            std::fs::create_dir(dir.path().join(pid)).unwrap();
            std::fs::write(dir.path().join(pid).join("stat"), stat).unwrap();
        }
        assert_eq!(children_named(dir.path(), 42, "WebKitNetworkPr"), [101]);
        assert_eq!(children_named(dir.path(), 42, "odd) name"), [104]);
    }
}
