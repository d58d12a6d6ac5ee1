//! Doctor checks of the AI CLIs on PATH: `X --version` for claude, codex and gemini, run
//! with a short deadline and an environment of PATH and HOME only, so no token of ours (or
//! the user's) reaches them.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{Check, Context, CLIS};
use crate::paths;

/// At most this much of a `--version` answer is read.
const MAX_OUTPUT: u64 = 4096;
const POLL: Duration = Duration::from_millis(10);

pub(super) fn checks(ctx: &Context<'_>) -> Vec<Check> {
    let path = (ctx.env)("PATH").unwrap_or_default();
    CLIS.iter()
        .map(|cli| {
            let name = format!("cli {cli}");
            match find(cli, &path) {
                None => Check::skip(name, "not found on PATH"),
                Some(exe) => version(&name, &exe, &path, ctx.version_timeout),
            }
        })
        .collect()
}

/// The first executable regular file named `program` in `path`'s directories.
fn find(program: &str, path: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path)
        .filter(|d| d.is_absolute())
        .map(|d| d.join(program))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The first non-empty line, with control characters dropped and a bounded length.
fn first_line(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    Some(line.chars().filter(|c| !c.is_control()).take(120).collect())
}

fn version(name: &str, exe: &Path, path: &str, timeout: Duration) -> Check {
    let shown = paths::display(exe);
    let mut cmd = Command::new(exe);
    // Nothing of our environment but where programs and home are: no token variables.
    cmd.arg("--version")
        .env_clear()
        .env("PATH", path)
        .env("HOME", paths::home())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Check::warn(
                name,
                format!("{shown} cannot be run: {e}"),
                format!("reinstall it, or remove {shown} from PATH"),
            )
        }
    };
    // A reader thread: a grandchild holding the pipe open must not hold the doctor up.
    let (tx, rx) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = out.take(MAX_OUTPUT).read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let Some(status) = status else {
        return Check::warn(
            name,
            format!(
                "{shown} --version gave no answer within {} s",
                timeout.as_secs_f32()
            ),
            format!("run `{shown} --version` yourself to see what it waits for"),
        );
    };
    let line = rx
        .recv_timeout(Duration::from_millis(500))
        .ok()
        .and_then(|b| first_line(&b));
    match (status.success(), line) {
        (true, Some(v)) => Check::ok(name, format!("{v} ({shown})")),
        (ok, _) => Check::warn(
            name,
            format!(
                "{shown} --version {}",
                if ok {
                    "printed nothing".to_owned()
                } else {
                    format!("failed ({status})")
                }
            ),
            format!("reinstall it, or remove {shown} from PATH"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_line_is_bounded_and_clean() {
        assert_eq!(
            first_line(b"\n  2.0.1 (Claude Code)\x1b[0m\nmore\n").as_deref(),
            Some("2.0.1 (Claude Code)[0m")
        );
        assert_eq!(first_line(b"  \n"), None);
        assert_eq!(first_line(&[b'9'; 500]).unwrap().len(), 120);
    }

    #[test]
    fn find_skips_relative_dirs_and_non_executables() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("codex");
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let path = format!(".:{}", dir.path().display());
        assert_eq!(find("codex", &path), None);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find("codex", &path), Some(p));
    }
}
