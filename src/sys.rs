//! Every `unsafe` call in the library: thin, checked wrappers over libc (uids, passwd
//! entries, peer credentials, `flock`, process liveness, executable paths). The rest of the
//! crate is `#![deny(unsafe_code)]`.

#![allow(unsafe_code)]

use std::io;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;

/// The effective uid of this process.
#[must_use]
pub fn euid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}

/// Which field of this user's passwd entry to read.
#[derive(Clone, Copy)]
pub enum PasswdField {
    Home,
    Name,
}

/// A field of the passwd entry of the effective uid, copied out at once.
#[must_use]
pub fn passwd(field: PasswdField) -> Option<String> {
    // SAFETY: getpwuid returns a pointer into static storage or null; the strings it points
    // to are NUL-terminated and copied before any other libc call can reuse that storage.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if pw.is_null() {
            return None;
        }
        let ptr = match field {
            PasswdField::Home => (*pw).pw_dir,
            PasswdField::Name => (*pw).pw_name,
        };
        if ptr.is_null() {
            return None;
        }
        Some(std::ffi::CStr::from_ptr(ptr).to_string_lossy().into_owned())
    }
}

/// How to `flock` a descriptor.
#[derive(Clone, Copy)]
pub enum Flock {
    /// Wait for an exclusive lock.
    Exclusive,
    /// Take an exclusive lock or fail with `WouldBlock` at once.
    TryExclusive,
}

/// `flock(2)` on an open file; the lock lives as long as the descriptor.
///
/// # Errors
/// The kernel refused (or `WouldBlock` for [`Flock::TryExclusive`] when held elsewhere).
pub fn flock(fd: &impl AsRawFd, how: Flock) -> io::Result<()> {
    let op = match how {
        Flock::Exclusive => libc::LOCK_EX,
        Flock::TryExclusive => libc::LOCK_EX | libc::LOCK_NB,
    };
    // SAFETY: flock on a descriptor the caller keeps open for the duration of the call.
    if unsafe { libc::flock(fd.as_raw_fd(), op) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Opens the directory `name` under `dir` (or `/` when `dir` is `None`) without following
/// a symlink: `O_NOFOLLOW | O_DIRECTORY` (and `O_PATH` on Linux: nothing is read from it).
/// A symlink fails with `ENOTDIR` or `ELOOP`.
///
/// # Errors
/// As openat(2).
pub fn open_dir_nofollow(
    dir: Option<&std::os::fd::OwnedFd>,
    name: &std::ffi::CStr,
) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd as _, FromRawFd};
    #[cfg(target_os = "linux")]
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    #[cfg(not(target_os = "linux"))]
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let at = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: openat reads a NUL-terminated name; the returned descriptor is ours alone.
    let fd = unsafe { libc::openat(at, name.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor from openat.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// `lstat` of `name` in `dir`: (is a symlink, owner uid).
///
/// # Errors
/// As fstatat(2).
pub fn lstat_at(dir: &std::os::fd::OwnedFd, name: &std::ffi::CStr) -> io::Result<(bool, u32)> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: an all-zero stat is a valid value for fstatat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstatat writes one stat struct we own and reads a NUL-terminated name.
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((st.st_mode & libc::S_IFMT == libc::S_IFLNK, st.st_uid))
}

/// `mkdirat(dir, name, mode)`.
///
/// # Errors
/// As mkdirat(2).
pub fn mkdir_at(dir: &std::os::fd::OwnedFd, name: &std::ffi::CStr, mode: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: mkdirat reads a NUL-terminated name.
    if unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether a process with this pid exists (signal 0 checks without sending anything).
#[must_use]
pub fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 performs only the existence and permission check.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Sends SIGTERM to `pid` if it is still the process `check` accepts: the pid is pinned
/// with a pidfd first, so a pid freed and reused meanwhile is never signalled. Returns
/// whether the signal was sent.
///
/// # Errors
/// No such process, not ours to signal, or pidfds unsupported (Linux before 5.3).
#[cfg(target_os = "linux")]
pub fn terminate_checked(pid: i32, check: impl Fn(i32) -> bool) -> io::Result<bool> {
    if pid <= 0 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: the kernel just returned this descriptor to us; OwnedFd closes it once.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // Checked after pinning: while `fd` is open the pid cannot name another process.
    if !check(pid) {
        return Ok(false);
    }
    // SAFETY: pidfd_send_signal with a live pidfd, a signal number, no siginfo, no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            libc::SIGTERM,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc == 0 {
        Ok(true)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Hands freed heap pages back to the kernel (glibc keeps them for reuse otherwise).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim_heap() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Makes this process unreadable by the user's other processes: not dumpable on Linux
/// (`/proc/PID/mem`, ptrace and core dumps then need CAP_SYS_PTRACE), `PT_DENY_ATTACH` on
/// macOS (no debugger attaches), as ssh-agent does.
///
/// # Errors
/// The kernel refused.
pub fn deny_inspection() -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl(PR_SET_DUMPABLE, 0) takes plain integers and changes only a flag.
        if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(target_os = "macos")]
    {
        const PT_DENY_ATTACH: libc::c_int = 31;
        // SAFETY: PT_DENY_ATTACH takes no address or data.
        if unsafe { libc::ptrace(PT_DENY_ATTACH, 0, std::ptr::null_mut(), 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    {
        Ok(())
    }
}

/// Whether this process is dumpable (Linux; `true` elsewhere, where there is no flag).
#[must_use]
pub fn dumpable() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_GET_DUMPABLE only reads a flag.
        unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) != 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        true
    }
}

/// Sets a resource limit's soft and hard values.
fn set_rlimit(resource: RlimitResource, soft: u64, hard: u64) -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit reads one rlimit struct we own.
    if unsafe { libc::setrlimit(resource as _, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A resource limit's (soft, hard) values.
fn get_rlimit(resource: RlimitResource) -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct we own.
    if unsafe { libc::getrlimit(resource as _, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::useless_conversion)]
    Ok((u64::from(lim.rlim_cur), u64::from(lim.rlim_max)))
}

#[cfg(target_os = "linux")]
type RlimitResource = libc::__rlimit_resource_t;
#[cfg(not(target_os = "linux"))]
type RlimitResource = libc::c_int;

/// No core dumps: a crash must not write the agent's memory to disk.
///
/// # Errors
/// The kernel refused.
pub fn no_core_dumps() -> io::Result<()> {
    set_rlimit(libc::RLIMIT_CORE, 0, 0)
}

/// The soft locked-memory limit in bytes (`RLIMIT_MEMLOCK`).
///
/// # Errors
/// The kernel would not say.
pub fn memlock_limit() -> io::Result<u64> {
    get_rlimit(libc::RLIMIT_MEMLOCK).map(|(soft, _)| soft)
}

/// The size of a memory page.
#[must_use]
pub fn page_size() -> usize {
    // SAFETY: sysconf reads a constant.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(4096)
}

/// Locks one page at `page` (page-aligned) in RAM, and keeps it out of core dumps; `false`
/// when the kernel refused (over the limit).
#[must_use]
pub fn lock_page(page: usize) -> bool {
    let len = page_size();
    // SAFETY: mlock/madvise only change how the pages are kept; the caller passes the
    // start of a page that holds a live allocation of ours.
    unsafe {
        #[cfg(target_os = "linux")]
        libc::madvise(page as *mut libc::c_void, len, libc::MADV_DONTDUMP);
        libc::mlock(page as *const libc::c_void, len) == 0
    }
}

/// Unlocks a page [`lock_page`] locked.
pub fn unlock_page(page: usize) {
    // SAFETY: as in lock_page; munlock of a page that is still mapped only unlocks it.
    unsafe {
        libc::munlock(page as *const libc::c_void, page_size());
    }
}

/// Pins glibc's mmap threshold at its 128 KiB default. Left dynamic, glibc raises it to
/// the size of any large block freed (the lock's 19 MiB KDF buffer), after which such
/// blocks come from per-thread arenas whose tops `malloc_trim` never gives back. Pinned,
/// every large block is its own mapping, returned to the kernel when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn pin_mmap_threshold() {
    // SAFETY: mallopt only sets allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Asks the kernel to reclaim the resident pages of `len` bytes at `addr`, a read-only
/// file mapping of this process (`MADV_PAGEOUT`: contents are kept, the pages are read back
/// from the page cache or the file when next touched). Returns whether the kernel took the
/// hint (kernels before 5.4 refuse it with EINVAL).
#[cfg(target_os = "linux")]
pub fn page_out(addr: usize, len: usize) -> bool {
    // SAFETY: MADV_PAGEOUT never changes what the memory holds, only where it lives. If
    // part of the range was unmapped meanwhile, the advice applies to what is still mapped
    // and the call reports ENOMEM; locked or special mappings are refused with EINVAL.
    unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_PAGEOUT) == 0 }
}

/// The peer uid of a connected Unix socket (SO_PEERCRED on Linux, getpeereid elsewhere).
///
/// # Errors
/// The kernel would not say.
pub fn peer_uid(fd: &impl AsRawFd) -> io::Result<u32> {
    #[cfg(target_os = "linux")]
    {
        let mut cred = libc::ucred {
            pid: 0,
            uid: 0,
            gid: 0,
        };
        let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::ucred>())
            .map_err(io::Error::other)?;
        // SAFETY: getsockopt writes at most `len` bytes into `cred`, which is that large.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                std::ptr::addr_of_mut!(cred).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(cred.uid)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let (mut uid, mut gid) = (0, 0);
        // SAFETY: getpeereid writes two integers we own.
        if unsafe { libc::getpeereid(fd.as_raw_fd(), &mut uid, &mut gid) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(uid)
    }
}

/// A pidfd for the peer of a connected Unix socket (`SO_PEERPIDFD`, Linux 6.5+): it names
/// the very process that connected, so a pid reused after it exits cannot pass for it.
/// `Ok(None)` where the kernel has no such option.
///
/// # Errors
/// The kernel refused for another reason.
#[cfg(target_os = "linux")]
pub fn peer_pidfd(fd: &impl AsRawFd) -> io::Result<Option<std::os::fd::OwnedFd>> {
    use std::os::fd::FromRawFd;
    const SO_PEERPIDFD: libc::c_int = 77;
    let mut pidfd: libc::c_int = -1;
    let mut len =
        libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).map_err(io::Error::other)?;
    // SAFETY: getsockopt writes at most `len` bytes (one c_int) into `pidfd`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            std::ptr::addr_of_mut!(pidfd).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOPROTOOPT | libc::EINVAL) => Ok(None),
            _ => Err(e),
        };
    }
    if pidfd < 0 {
        return Ok(None);
    }
    // SAFETY: the kernel just gave us this descriptor; we are its only owner.
    Ok(Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(pidfd) }))
}

/// Whether the process a pidfd names is still running (signal 0 through the pidfd).
#[cfg(target_os = "linux")]
#[must_use]
pub fn pidfd_alive(pidfd: &impl AsRawFd) -> bool {
    // SAFETY: pidfd_send_signal with signal 0 only checks; the descriptor is open and ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Whether the macOS sandbox (Seatbelt, App Sandbox) confines `pid`; `None` if it won't say.
#[cfg(target_os = "macos")]
#[must_use]
pub fn macos_sandboxed(pid: i32) -> Option<bool> {
    extern "C" {
        // libsystem_sandbox (part of libSystem): 1 when sandboxed, 0 when not, -1 on error.
        fn sandbox_check(
            pid: libc::pid_t,
            operation: *const libc::c_char,
            kind: libc::c_int,
            ...
        ) -> libc::c_int;
    }
    // SAFETY: a NULL operation with SANDBOX_FILTER_NONE (0) takes no further arguments and
    // only asks whether the process is sandboxed at all.
    let rc = unsafe { sandbox_check(pid, std::ptr::null(), 0) };
    match rc {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    }
}

/// Raises the soft open-file limit to the hard one and returns the soft limit now in force
/// (the old one if raising failed). The agent sizes its connection caps from it.
///
/// # Errors
/// `getrlimit` failed.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // macOS refuses RLIM_INFINITY (and anything above OPEN_MAX, 10240 in
    // <sys/syslimits.h>; libc does not export it) for the soft limit.
    #[cfg(target_os = "macos")]
    let want = lim.rlim_max.min(10_240);
    #[cfg(not(target_os = "macos"))]
    let want = lim.rlim_max;
    if want > lim.rlim_cur {
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = want;
        }
    }
    #[allow(clippy::useless_conversion)] // rlim_t is u64 on Linux, not everywhere
    Ok(u64::try_from(lim.rlim_cur).unwrap_or(u64::MAX))
}

/// The executable of a process: `/proc/PID/exe` on Linux, `proc_pidpath` on macOS.
#[must_use]
pub fn exe_of(pid: i32) -> Option<PathBuf> {
    #[cfg(target_os = "linux")]
    {
        std::fs::read_link(format!("/proc/{pid}/exe")).ok()
    }
    #[cfg(target_os = "macos")]
    {
        let mut buf = vec![0u8; libc::PROC_PIDPATHINFO_MAXSIZE as usize];
        let cap = u32::try_from(buf.len()).ok()?;
        // SAFETY: proc_pidpath writes at most `cap` bytes into `buf` and returns the length.
        let n = unsafe { libc::proc_pidpath(pid, buf.as_mut_ptr().cast(), cap) };
        let n = usize::try_from(n).ok().filter(|n| *n > 0)?;
        buf.truncate(n);
        Some(PathBuf::from(String::from_utf8_lossy(&buf).into_owned()))
    }
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    {
        let _ = pid;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_huge_pid_is_not() {
        assert!(process_alive(i32::try_from(std::process::id()).unwrap()));
        assert!(!process_alive(99_999_999));
        assert!(!process_alive(0));
        assert!(!process_alive(-1));
    }

    #[test]
    fn peer_uid_of_a_socketpair_is_ours() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(peer_uid(&a).unwrap(), euid());
    }

    #[test]
    fn try_lock_fails_while_another_descriptor_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        let a = std::fs::File::create(&p).unwrap();
        let b = std::fs::File::open(&p).unwrap();
        flock(&a, Flock::TryExclusive).unwrap();
        let e = flock(&b, Flock::TryExclusive).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn our_own_exe_is_known() {
        let me = exe_of(i32::try_from(std::process::id()).unwrap()).unwrap();
        assert_eq!(me, std::env::current_exe().unwrap());
    }
}
