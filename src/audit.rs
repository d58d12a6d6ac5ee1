//! The audit log: one JSON line per request (who, what, which credential, outcome), 0600,
//! in the state directory. Never a secret. Rotated at 8 MiB to `audit.jsonl.1`.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::domain::Access;
use crate::paths;

const ROTATE_AT: u64 = 8 << 20;

pub struct Audit {
    path: PathBuf,
    /// The open log and its size, tracked here so a record costs one `write`.
    file: Mutex<Option<(File, u64)>>,
}

impl Audit {
    #[must_use]
    pub fn default_path() -> PathBuf {
        paths::state_dir().join("audit.jsonl")
    }

    #[must_use]
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            file: Mutex::new(None),
        }
    }

    fn open(path: &Path) -> std::io::Result<File> {
        if let Some(dir) = path.parent() {
            crate::atomic::private_dir(dir).map_err(|e| e.source)?;
        }
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
    }

    /// Appends one record. Failures are logged, never fatal: serving must not stop
    /// because the disk is full, but the failure is visible.
    pub fn record(&self, access: &Access) {
        let mut line = serde_json::to_string(access).unwrap_or_default();
        line.push('\n');
        let mut guard = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let result = (|| {
            if guard.is_none() {
                let file = Self::open(&self.path)?;
                let len = file.metadata()?.len();
                *guard = Some((file, len));
            }
            let (file, len) = guard.as_mut().expect("opened above");
            if *len > ROTATE_AT {
                let _ = fs::rename(&self.path, self.path.with_extension("jsonl.1"));
                *file = Self::open(&self.path)?;
                *len = 0;
            }
            file.write_all(line.as_bytes())?;
            *len += line.len() as u64;
            Ok::<(), std::io::Error>(())
        })();
        if let Err(e) = result {
            *guard = None;
            tracing::error!(path = %paths::display(&self.path), error = %e, "cannot write the audit log");
        }
    }

    /// The last `n` records.
    ///
    /// # Errors
    /// The log cannot be read.
    pub fn tail(path: &Path, n: usize) -> std::io::Result<Vec<Access>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut all: Vec<Access> = BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str(&l).ok())
            .collect();
        let skip = all.len().saturating_sub(n);
        Ok(all.split_off(skip))
    }

    /// Follows the log like `tail -f`, calling `each` for every new record. Handles rotation.
    ///
    /// # Errors
    /// The log cannot be read.
    pub fn follow(path: &Path, mut each: impl FnMut(&Access)) -> std::io::Result<()> {
        let mut pos = fs::metadata(path).map_or(0, |m| m.len());
        let mut partial = String::new();
        loop {
            std::thread::sleep(std::time::Duration::from_millis(250));
            let Ok(meta) = fs::metadata(path) else {
                continue;
            };
            if meta.len() < pos {
                pos = 0; // rotated
            }
            if meta.len() == pos {
                continue;
            }
            let mut f = File::open(path)?;
            f.seek(SeekFrom::Start(pos))?;
            let mut reader = BufReader::new(f);
            loop {
                let mut line = String::new();
                let n = reader.read_line(&mut line)?;
                if n == 0 {
                    break;
                }
                pos += n as u64;
                partial.push_str(&line);
                if partial.ends_with('\n') {
                    if let Ok(a) = serde_json::from_str::<Access>(partial.trim_end()) {
                        each(&a);
                    }
                    partial.clear();
                }
            }
        }
    }
}

/// `2026-11-22T05:00:00Z  get     claude   allowed   /usr/local/bin/cf (pid 4211, uid 1000)`
#[must_use]
pub fn line(a: &Access) -> String {
    let outcome = match &a.code {
        Some(code) => format!("{} ({code})", a.outcome),
        None => a.outcome.clone(),
    };
    format!(
        "{}  {:<7} {:<8} {:<24} {}",
        a.ts,
        a.op,
        a.credential.as_deref().unwrap_or("-"),
        outcome,
        a.peer
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Peer;

    #[test]
    fn records_append_and_tail_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/audit.jsonl");
        let audit = Audit::new(path.clone());
        for i in 0..5 {
            audit.record(&Access {
                ts: format!("t{i}"),
                op: "get".into(),
                credential: Some("claude".into()),
                outcome: "allowed".into(),
                code: None,
                peer: Peer {
                    uid: 1,
                    pid: Some(2),
                    exe: Some("/bin/x".into()),
                },
            });
        }
        let last = Audit::tail(&path, 2).unwrap();
        assert_eq!(
            last.iter().map(|a| a.ts.as_str()).collect::<Vec<_>>(),
            ["t3", "t4"]
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(line(&last[0]).contains("/bin/x (pid 2, uid 1)"));
    }
}
