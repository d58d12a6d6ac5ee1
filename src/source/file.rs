//! Reading credential files safely: owner and mode checked first, size bounded.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::SourceError;
use crate::paths;
use crate::secret::Secret;

/// Credential files are small; anything bigger is a mistake (or `/dev/zero`).
const MAX_FILE: u64 = 1 << 20;

/// Reads a file that must belong to the caller and be closed to group and others.
/// `Ok(None)` when it does not exist.
///
/// # Errors
/// Unsafe mode or owner (to be skipped with a warning), unreadable or oversized file.
pub fn read_private(path: &Path) -> Result<Option<Secret>, SourceError> {
    let shown = paths::display(path);
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(SourceError::Unreadable {
                path: shown,
                reason: e.to_string(),
            })
        }
    };
    // Check the opened file, not the path, so a swap between check and read is harmless.
    let meta = file.metadata().map_err(|e| SourceError::Unreadable {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    let uid = paths::current_uid();
    if meta.uid() != uid {
        return Err(SourceError::WrongOwner {
            path: shown,
            owner: meta.uid(),
            uid,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SourceError::UnsafeMode { path: shown, mode });
    }
    if !meta.is_file() || meta.len() > MAX_FILE {
        return Err(SourceError::TooLarge {
            path: shown,
            limit: MAX_FILE,
        });
    }
    let mut text = String::new();
    (&mut file)
        .take(MAX_FILE)
        .read_to_string(&mut text)
        .map_err(|e| SourceError::Unreadable {
            path: shown,
            reason: e.to_string(),
        })?;
    Ok(Some(Secret::new(text)))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn refuses_group_readable_and_reads_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tok");
        std::fs::write(&p, "sk-ant-oat01-x\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = read_private(&p).unwrap_err();
        assert!(
            matches!(err, SourceError::UnsafeMode { mode: 0o640, .. }),
            "{err}"
        );
        assert!(err.is_skip());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            read_private(&p).unwrap().unwrap().expose(),
            "sk-ant-oat01-x\n"
        );
        assert!(read_private(&dir.path().join("missing")).unwrap().is_none());
    }
}
