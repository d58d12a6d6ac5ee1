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
