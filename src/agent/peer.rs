//! Who is on the other end of a Unix socket: uid from the kernel, pid, executable path.

use crate::domain::Peer;

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
pub fn uid_of(fd: &impl std::os::unix::io::AsRawFd) -> std::io::Result<u32> {
    crate::sys::peer_uid(fd)
}

/// The executable of a process, as text for the audit log.
#[must_use]
pub fn exe_of(pid: i32) -> Option<String> {
    crate::sys::exe_of(pid).map(|p| p.display().to_string())
}
