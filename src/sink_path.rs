//! Where a sink's file really is, found without following any link.
//!
//! `O_NOFOLLOW` guards only the last component of a path. A sandbox that can write to a
//! folder above a sink (a mounted project whose `proj/.auth/claude` it replaces with a link
//! to `~/.claude`) would otherwise redirect the next write onto Claude Code's own login.
//! So the sink's folder is opened component by component from `/`, each with
//! `O_NOFOLLOW | O_DIRECTORY`, relative to the folder opened before it; every folder must
//! be owned by the user (or by root) and not writable by others, unless it is a root-owned
//! sticky folder such as `/tmp`. The only links followed are root-owned links in
//! root-owned folders nobody else may write (`/var` → `/private/var` on macOS, a
//! distribution's `/home` link): a process of the user cannot make one. When the user is
//! root, only such a link directly under `/` is followed.
//!
//! The file is then reached through the opened folder itself (`/proc/self/fd/N/NAME` on
//! Linux), so swapping a folder after the walk changes nothing. macOS has no such path; there
//! the walk's result is used by its real path, leaving a window between the check and the
//! write that only a rename race could use.

use std::ffi::{CString, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::safe_file::FileError;

/// How many system links (root's own) a walk may follow before it gives up.
const MAX_SYSTEM_LINKS: usize = 8;

/// A sink's folder, held open, and the file's name in it.
#[derive(Debug)]
pub struct SinkPath {
    /// The folder the walk ended on; macOS has no path through a descriptor, so there it
    /// is only held.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    dir: OwnedFd,
    name: OsString,
    /// The folder's real path (for messages, and the path used where /proc is absent).
    real_dir: PathBuf,
}

impl SinkPath {
    /// Walks to `path`'s folder; `create` makes missing folders (0700) on the way.
    ///
    /// # Errors
    /// A folder on the way is a link, another user's, writable by others, or missing
    /// (without `create`); the path has no file name or holds `..`.
    pub fn resolve(path: &Path, create: bool) -> Result<Self, FileError> {
        let shown = || crate::paths::display(path);
        let absolute = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| FileError::io(path, e))?
                .join(path)
        };
        let (Some(parent), Some(name)) = (absolute.parent(), absolute.file_name()) else {
            return Err(FileError::BadPath {
                path: shown(),
                why: "it names no file",
            });
        };
        let mut folders: Vec<OsString> = Vec::new();
        for c in parent.components() {
            match c {
                Component::Normal(n) => folders.push(n.to_owned()),
                Component::ParentDir => {
                    return Err(FileError::BadPath {
                        path: shown(),
                        why: "it holds `..`",
                    })
                }
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            }
        }
        let mut links = 0;
        'walk: loop {
            let mut dir =
                crate::sys::open_dir_nofollow(None, c"/").map_err(|e| FileError::io(path, e))?;
            let mut walked = PathBuf::from("/");
            for (i, folder) in folders.iter().enumerate() {
                let cname = cstring(folder, path)?;
                let next = match crate::sys::open_dir_nofollow(Some(&dir), &cname) {
                    Ok(fd) => fd,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create => {
                        match crate::sys::mkdir_at(&dir, &cname, 0o700) {
                            Ok(()) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                            Err(e) => return Err(FileError::io(&walked.join(folder), e)),
                        }
                        crate::sys::open_dir_nofollow(Some(&dir), &cname)
                            .map_err(|e| FileError::io(&walked.join(folder), e))?
                    }
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) => {
                        let here = walked.join(folder);
                        let (is_link, owner) = crate::sys::lstat_at(&dir, &cname)
                            .map_err(|e| FileError::io(&here, e))?;
                        if !is_link {
                            return Err(FileError::io(&here, e));
                        }
                        // For root every link is root's: only a top-level system link
                        // (`/var`, `/home`, `/lib`) is followed then.
                        let system = owner == 0
                            && root_only(&dir)
                            && (crate::paths::current_uid() != 0 || i == 0);
                        if !system || links >= MAX_SYSTEM_LINKS {
                            return Err(FileError::ParentSymlink {
                                path: shown(),
                                folder: crate::paths::display(&here),
                            });
                        }
                        // root's own link: go on from where it really leads.
                        links += 1;
                        let real =
                            std::fs::canonicalize(&here).map_err(|e| FileError::io(&here, e))?;
                        let mut rest: Vec<OsString> = real
                            .components()
                            .filter_map(|c| match c {
                                Component::Normal(n) => Some(n.to_owned()),
                                _ => None,
                            })
                            .collect();
                        rest.extend(folders[i + 1..].iter().cloned());
                        folders = rest;
                        continue 'walk;
                    }
                    Err(e) => return Err(FileError::io(&walked.join(folder), e)),
                };
                walked.push(folder);
                check_folder(&next, &walked, path)?;
                dir = next;
            }
            return Ok(Self {
                dir,
                name: name.to_owned(),
                real_dir: walked,
            });
        }
    }

    /// The path to open the file by: through the held folder on Linux, so no swap of a
    /// folder after the walk can redirect it.
    #[must_use]
    pub fn path(&self) -> PathBuf {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            PathBuf::from(format!("/proc/self/fd/{}", self.dir.as_raw_fd())).join(&self.name)
        }
        #[cfg(not(target_os = "linux"))]
        {
            self.real_dir.join(&self.name)
        }
    }

    /// The file's real path, for messages and for comparing with the sources.
    #[must_use]
    pub fn real_path(&self) -> PathBuf {
        self.real_dir.join(&self.name)
    }
}

fn cstring(name: &OsString, path: &Path) -> Result<CString, FileError> {
    CString::new(name.as_bytes()).map_err(|_| FileError::BadPath {
        path: crate::paths::display(path),
        why: "it holds a NUL byte",
    })
}

fn meta(fd: &OwnedFd) -> Option<std::fs::Metadata> {
    let file = std::fs::File::from(fd.try_clone().ok()?);
    file.metadata().ok()
}

/// A root-owned folder only root may write: the only place a link is trusted.
fn root_only(fd: &OwnedFd) -> bool {
    meta(fd).is_some_and(|m| m.uid() == 0 && m.permissions().mode() & 0o022 == 0)
}

/// A folder on a sink's path: the user's or root's, and nobody else may write it (a
/// root-owned sticky folder like `/tmp` lets others create files but not replace ours).
fn check_folder(fd: &OwnedFd, walked: &Path, path: &Path) -> Result<(), FileError> {
    let m = meta(fd)
        .ok_or_else(|| FileError::io(walked, std::io::Error::other("cannot stat the folder")))?;
    let me = crate::paths::current_uid();
    let mode = m.permissions().mode();
    let others_write = mode & 0o022 != 0;
    let sticky = mode & 0o1000 != 0;
    let fine = match m.uid() {
        0 => !others_write || sticky,
        uid if uid == me => !others_write,
        _ => false,
    };
    if fine {
        Ok(())
    } else {
        Err(FileError::UnsafeFolder {
            path: crate::paths::display(path),
            folder: crate::paths::display(walked),
            owner: m.uid(),
            mode: mode & 0o7777,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_linked_parent_folder_is_refused_and_its_target_untouched() {
        let t = tempfile::tempdir().unwrap();
        let login = t.path().join("dot-claude");
        std::fs::create_dir(&login).unwrap();
        std::fs::create_dir_all(t.path().join("proj/.auth")).unwrap();
        symlink(&login, t.path().join("proj/.auth/claude")).unwrap();
        let e = SinkPath::resolve(&t.path().join("proj/.auth/claude/.credentials.json"), true)
            .unwrap_err();
        assert!(matches!(e, FileError::ParentSymlink { .. }), "{e}");
        assert!(e.to_string().contains("proj/.auth/claude"), "{e}");
    }

    #[test]
    fn a_folder_swapped_after_the_walk_cannot_redirect_the_write() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("proj/a");
        std::fs::create_dir_all(&a).unwrap();
        let other = t.path().join("other");
        std::fs::create_dir(&other).unwrap();
        let sink = SinkPath::resolve(&a.join(".env"), false).unwrap();
        // The sandbox swaps the folder for a link between our check and our write.
        std::fs::rename(&a, t.path().join("proj/a-moved")).unwrap();
        symlink(&other, &a).unwrap();
        std::fs::write(sink.path(), "TOKEN=x\n").unwrap();
        assert!(!other.join(".env").exists());
        assert_eq!(
            std::fs::read_to_string(t.path().join("proj/a-moved/.env")).unwrap(),
            "TOKEN=x\n"
        );
    }

    #[test]
    fn missing_folders_are_made_private_and_open_folders_refused() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("x/y/z.json");
        let sink = SinkPath::resolve(&p, true).unwrap();
        assert_eq!(
            sink.real_path(),
            std::fs::canonicalize(t.path()).unwrap().join("x/y/z.json")
        );
        let mode = std::fs::metadata(t.path().join("x/y"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(SinkPath::resolve(&t.path().join("nope/f"), false).is_err());
        let open = t.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = SinkPath::resolve(&open.join("f"), false).unwrap_err();
        assert!(matches!(e, FileError::UnsafeFolder { .. }), "{e}");
        assert!(SinkPath::resolve(&t.path().join("a/../b"), true).is_err());
    }
}
