//! Doctor checks of sinks: every `[[sink]]` of the config and every sink a running agent
//! keeps, looked at on disk the way the agent opens them (no symlink, FIFO or foreign
//! file) and with the agent's last write failure.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{Check, Context};
use crate::domain::{ErrorCode, SinkStatus};
use crate::paths;
use crate::protocol::Status;
use crate::safe_file::{self, Access, FileError};
use crate::sink::Sink;

const SINK: &str = "sink";

fn file_fix(e: &FileError, shown: &str) -> String {
    match e {
        FileError::Symlink { .. } => format!(
            "replace the link with a regular file: `rm {shown}` (the agent writes a new one), \
             or point the [[sink]] at the real file"
        ),
        FileError::NotRegular { .. } => {
            format!("remove {shown} (`rm {shown}`); the agent writes a regular file there")
        }
        FileError::ForeignOwner { .. } => {
            format!("remove {shown}, or `chown $USER {shown}` if it really is yours")
        }
        FileError::TooLarge { .. } => format!("check what {shown} is; a sink is a small file"),
        FileError::ParentSymlink { folder, .. } => format!(
            "replace the link {folder} with a real folder (something that can write above the sink may have swapped it), or point the sink elsewhere"
        ),
        FileError::UnsafeFolder { folder, .. } => {
            format!("`chmod go-w {folder}`, or point the sink at a folder only you can write")
        }
        FileError::HardLinked { .. } => {
            format!("`rm {shown}` (the agent writes it anew as the only name of its file)")
        }
        FileError::LiveLogin { .. } | FileError::IsSource { .. } => {
            "point the sink at a path inside the sandbox's mount, never at a login or a source"
                .to_owned()
        }
        FileError::BadPath { .. } => "give the sink an absolute path to a file".to_owned(),
        FileError::MissingFolder { folder, .. } => format!("`mkdir -p {folder}`"),
        FileError::Io { .. } => format!("check {shown}'s directory exists and is writable"),
    }
}

pub(super) fn checks(ctx: &Context<'_>, status: Option<&Status>) -> Vec<Check> {
    // Config sinks first, then any the agent keeps that the config does not list
    // (`keyferry snapshot` registrations).
    let mut sinks: BTreeMap<PathBuf, (String, Option<&SinkStatus>)> = BTreeMap::new();
    for t in &ctx.config.sinks {
        let kind = match t.sink {
            Sink::Dotenv { .. } => "dotenv",
            Sink::Snapshot { .. } => "snapshot",
        };
        sinks.insert(
            t.sink.path().to_path_buf(),
            (format!("{kind} for {}", t.credential), None),
        );
    }
    let mut superseded = Vec::new();
    for s in status.map(|s| s.sinks.as_slice()).unwrap_or_default() {
        // A snapshot registered at a [[sink]]'s file is not written: its own check, never
        // merged into the [[sink]]'s.
        if let Some(e) = s.error.as_ref().filter(|e| e.code == ErrorCode::ConfigSink) {
            let shown = paths::display(Path::new(&s.path));
            superseded.push(Check::warn(
                format!("{SINK} {shown}"),
                format!("{} for {}: {}", s.kind, s.credential, e.message),
                format!("`keyferry snapshot --forget {shown}` drops the registration; the [[sink]] goes on"),
            ));
            continue;
        }
        let entry = sinks
            .entry(PathBuf::from(&s.path))
            .or_insert_with(|| (format!("{} for {}", s.kind, s.credential), None));
        entry.1 = Some(s);
    }
    if sinks.is_empty() {
        return vec![Check::skip(SINK, "none configured")];
    }
    sinks
        .iter()
        .map(|(path, (what, kept))| one(path, what, *kept, status.is_some()))
        .chain(superseded)
        .collect()
}

fn one(path: &Path, what: &str, kept: Option<&SinkStatus>, agent: bool) -> Check {
    let shown = paths::display(path);
    let name = format!("{SINK} {shown}");
    let failed = kept
        .and_then(|k| k.error.as_ref())
        .map(|e| format!("the agent's last write failed: {}", e.message));
    let file = match safe_file::open(path, Access::Read, safe_file::MAX_FILE_BYTES) {
        Err(e) => {
            let also = failed.map(|f| format!("; {f}")).unwrap_or_default();
            return Check::fail(name, format!("{what}: {e}{also}"), file_fix(&e, &shown));
        }
        Ok(f) => f,
    };
    if let Some(failed) = failed {
        return Check::fail(
            name,
            format!("{what}: {failed}"),
            "fix what the message names; the agent retries on the next change (or restart it)",
        );
    }
    let Some(file) = file else {
        return if agent {
            Check::warn(
                name,
                format!("{what}: not written yet"),
                "check that the credential has a token (`keyferry status`) and the agent's log",
            )
        } else {
            Check::warn(
                name,
                format!("{what}: not written (no agent keeps it current)"),
                "start the agent: `keyferry agent`",
            )
        };
    };
    let mode = file.metadata().map(|m| m.mode() & 0o777).unwrap_or(0);
    if mode & 0o077 != 0 {
        return Check::warn(
            name,
            format!("{what}: readable by other users (mode {mode:o})"),
            format!("chmod 600 {shown}"),
        );
    }
    let written = kept
        .and_then(|k| k.written_at.as_deref())
        .map(|at| format!(", written {at}"))
        .unwrap_or_default();
    Check::ok(name, format!("{what}: a 0600 file of yours{written}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::State;

    #[test]
    fn links_and_missing_files_and_open_modes() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("id_ed25519");
        std::fs::write(&target, "key").unwrap();
        let link = tmp.path().join(".env");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let c = one(&link, "dotenv for claude", None, false);
        assert_eq!(c.state, State::Fail);
        assert!(c.fix.unwrap().contains("rm "));
        let missing = one(&tmp.path().join("none"), "dotenv", None, false);
        assert_eq!(missing.state, State::Warn);
        assert!(missing.fix.unwrap().contains("keyferry agent"));
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        let open = one(&target, "dotenv", None, true);
        assert_eq!(open.state, State::Warn);
        assert!(open.fix.unwrap().starts_with("chmod 600"));
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(one(&target, "dotenv", None, true).state, State::Ok);
    }
}
