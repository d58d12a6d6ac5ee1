//! Who is on the other end of a Unix socket: uid from the kernel, pid, executable path.

use std::os::unix::io::AsRawFd;

use crate::protocol::Peer;

/// The peer of an accepted connection (SO_PEERCRED on Linux, getpeereid + LOCAL_PEERPID on macOS).
///
/// # Errors
/// The kernel would not say.
pub fn of(stream: &tokio::net::UnixStream) -> std::io::Result<Peer> {
    let cred = stream.peer_cred()?;
    let pid = cred.pid();
    Ok(Peer {
        uid: cred.uid(),
        pid,
        exe: pid.and_then(exe_of),
    })
}

/// The peer uid of a connected std socket (the client checking it reached *its* agent).
///
/// # Errors
/// The kernel would not say.
pub fn uid_of(fd: &impl AsRawFd) -> std::io::Result<u32> {
    #[cfg(target_os = "linux")]
    {
        let mut cred = libc::ucred {
            pid: 0,
            uid: 0,
            gid: 0,
        };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `cred`.
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
            return Err(std::io::Error::last_os_error());
        }
        Ok(cred.uid)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let (mut uid, mut gid) = (0, 0);
        // SAFETY: getpeereid writes two integers.
        if unsafe { libc::getpeereid(fd.as_raw_fd(), &mut uid, &mut gid) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(uid)
    }
}

/// The executable of a process: `/proc/PID/exe` on Linux, `proc_pidpath` on macOS.
#[must_use]
pub fn exe_of(pid: i32) -> Option<String> {
    #[cfg(target_os = "linux")]
    {
        std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .map(|p| p.display().to_string())
    }
    #[cfg(target_os = "macos")]
    {
        let mut buf = vec![0u8; libc::PROC_PIDPATHINFO_MAXSIZE as usize];
        // SAFETY: proc_pidpath writes at most buf.len() bytes and returns the length.
        let n = unsafe { libc::proc_pidpath(pid, buf.as_mut_ptr().cast(), buf.len() as u32) };
        (n > 0).then(|| String::from_utf8_lossy(&buf[..n as usize]).into_owned())
    }
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    {
        let _ = pid;
        None
    }
}
