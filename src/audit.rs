//! The audit log: one JSON line per request (who, what, which credential, outcome), 0600,
//! in the state directory. Never a secret. Rotated at 8 MiB to `audit.jsonl.1`.
//!
//! Refusals of peers that are not the user (another uid, a foreign agent, a client that
//! never completed the handshake, a gateway request with no valid grant) go to their own
//! file, `audit-refused.jsonl`, rotated at 1 MiB: unauthenticated junk, however much of it,
//! can only rotate itself away, never the user's own accesses and refusals.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::domain::{Access, AuditOutcome, Op};
use crate::paths;

const ROTATE_AT: u64 = 8 << 20;
const JUNK_ROTATE_AT: u64 = 1 << 20;

pub struct Audit {
    path: PathBuf,
    /// The open log and its size, tracked here so a record costs one `write`.
    file: Mutex<Option<(File, u64)>>,
    /// The same for refusals of peers that are not the user.
    junk: Mutex<Option<(File, u64)>>,
}

/// The file for refusals of peers that are not the user, next to `path`.
#[must_use]
pub fn junk_path(path: &Path) -> PathBuf {
    path.with_file_name("audit-refused.jsonl")
}

/// A refusal of a peer that is not the user: another uid, or a request that never proved
/// anything (no handshake, malformed, a foreign agent, a placeholder matching no grant).
#[must_use]
pub fn is_junk(a: &Access) -> bool {
    use crate::domain::ErrorCode as E;
    if a.outcome == AuditOutcome::Allowed {
        return false;
    }
    // The gateway names the grant of every authenticated request; none means none matched.
    (a.op == Op::Gateway && a.credential.is_none())
        || a.peer.uid != crate::sys::euid()
        || matches!(
            a.code,
            Some(
                E::ForbiddenUser
                    | E::ForeignAgent
                    | E::BadRequest
                    | E::HandshakeRequired
                    | E::VersionMismatch
                    | E::NoSuchGrant
            )
        )
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
            junk: Mutex::new(None),
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
        let (slot, path, limit) = if is_junk(access) {
            (&self.junk, junk_path(&self.path), JUNK_ROTATE_AT)
        } else {
            (&self.file, self.path.clone(), ROTATE_AT)
        };
        let mut guard = slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let result = (|| {
            if guard.is_none() {
                let file = Self::open(&path)?;
                let len = file.metadata()?.len();
                *guard = Some((file, len));
            }
            let (file, len) = guard.as_mut().expect("opened above");
            if *len > limit {
                let _ = fs::rename(&path, path.with_extension("jsonl.1"));
                *file = Self::open(&path)?;
                *len = 0;
            }
            file.write_all(line.as_bytes())?;
            *len += line.len() as u64;
            Ok::<(), std::io::Error>(())
        })();
        if let Err(e) = result {
            *guard = None;
            tracing::error!(path = %paths::display(&path), error = %e, "cannot write the audit log");
        }
    }

    /// The last `n` records, the user's and the refused peers' merged by time.
    ///
    /// # Errors
    /// The log cannot be read.
    pub fn tail(path: &Path, n: usize) -> std::io::Result<Vec<Access>> {
        let mut all = Self::read_all(path)?;
        all.extend(Self::read_all(&junk_path(path))?);
        // RFC 3339 UTC stamps of one format sort as text; the sort is stable.
        all.sort_by(|a, b| a.ts.cmp(&b.ts));
        let skip = all.len().saturating_sub(n);
        Ok(all.split_off(skip))
    }

    fn read_all(path: &Path) -> std::io::Result<Vec<Access>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str(&l).ok())
            .collect())
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
        None => a.outcome.to_string(),
    };
    let line = format!(
        "{}  {:<7} {:<8} {:<24} {}",
        a.ts,
        a.op,
        a.credential.as_deref().unwrap_or("-"),
        outcome,
        a.peer
    );
    crate::escape::escape(&line).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ErrorCode, Peer};

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
                    sandbox: None,
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

    fn access(ts: String, outcome: &str, code: Option<ErrorCode>, uid: u32) -> Access {
        Access {
            ts,
            op: "get".into(),
            credential: Some("claude".into()),
            outcome: outcome.into(),
            code,
            peer: Peer {
                uid,
                pid: Some(7),
                exe: Some("/usr/bin/socat".into()),
                sandbox: None,
            },
        }
    }

    #[test]
    fn junk_cannot_rotate_the_users_entries_away() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/audit.jsonl");
        let audit = Audit::new(path.clone());
        let me = crate::sys::euid();
        audit.record(&access("2026-01-01T00:00:00Z".into(), "allowed", None, me));
        let own = Some(ErrorCode::NotAllowed);
        audit.record(&access("2026-01-01T00:00:01Z".into(), "refused", own, me));
        // ~3 rotations' worth of junk: a foreign uid, and the user's uid without a handshake.
        for i in 0..8_000 {
            let ts = format!("2026-01-01T01:{:02}:{:02}Z", i / 3600 % 60, i % 60);
            audit.record(&access(ts.clone(), "refused", None, me.wrapping_add(1)));
            let code = Some(ErrorCode::HandshakeRequired);
            audit.record(&access(ts.clone(), "refused", code, me));
            let mut gateway = access(ts, "401 POST /v1/messages", None, me);
            (gateway.op, gateway.credential) = ("gateway".into(), None);
            audit.record(&gateway);
        }
        assert!(fs::metadata(junk_path(&path)).unwrap().len() <= JUNK_ROTATE_AT + 1024);
        let mine = Audit::read_all(&path).unwrap();
        assert_eq!(
            mine.iter().map(|a| a.outcome.as_str()).collect::<Vec<_>>(),
            ["allowed", "refused"],
            "the user's own entries stay, alone, in the main log"
        );
        let all = Audit::tail(&path, usize::MAX).unwrap();
        assert_eq!(all[0].ts, "2026-01-01T00:00:00Z");
        assert!(
            all.len() > 2,
            "the recent junk is shown too, merged by time"
        );
    }
}
