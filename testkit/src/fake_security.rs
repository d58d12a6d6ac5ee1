//! The stand-in macOS `security` tool (`testkit/bin/security`, Python 3) set up for one
//! test: its item file, its argv/stdin log, and a wrapper script to use as `security_path`
//! (so the stand-in needs no variables in the environment of the process under test).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Failure modes the stand-in answers with the real tool's statuses and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeFailure {
    /// errSecItemNotFound (-25300, exit 44) on every lookup.
    NotFound,
    /// errSecInteractionNotAllowed (-25308, exit 36) on data reads, writes and deletes.
    InteractionNotAllowed,
    /// -25308 (exit 36) on every keychain access: a locked login keychain over SSH.
    Locked,
    /// errSecAuthFailed (-25293, exit 51): the user clicked Deny.
    Deny,
    /// errSecUserCanceled (-128, exit 128): the dialog was dismissed.
    Cancel,
}

impl FakeFailure {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "not-found",
            Self::InteractionNotAllowed => "interaction-not-allowed",
            Self::Locked => "locked",
            Self::Deny => "deny",
            Self::Cancel => "cancel",
        }
    }
}

/// One stand-in keychain under `dir` (which the caller owns and removes).
pub struct FakeSecurity {
    dir: PathBuf,
}

impl FakeSecurity {
    /// The stand-in itself.
    #[must_use]
    pub fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("bin/security")
    }

    /// Writes the wrapper `dir/security`; the keychain starts empty.
    ///
    /// # Panics
    /// `dir` cannot be written, or its path contains a quote.
    #[must_use]
    pub fn new(dir: &Path) -> Self {
        let me = Self {
            dir: dir.to_path_buf(),
        };
        let quoted = |p: &Path| {
            let s = p.display().to_string();
            assert!(!s.contains('\''), "path with a quote: {s}");
            format!("'{s}'")
        };
        let wrapper = format!(
            "#!/bin/sh\nKF_FAKE_SECURITY_DB={}\nKF_FAKE_SECURITY_LOG={}\n\
             export KF_FAKE_SECURITY_DB KF_FAKE_SECURITY_LOG\nexec {} \"$@\"\n",
            quoted(&me.db()),
            quoted(&me.log_path()),
            quoted(&Self::script())
        );
        std::fs::write(me.program(), wrapper).expect("write the security wrapper");
        std::fs::set_permissions(me.program(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod the security wrapper");
        me
    }

    /// What to set as `[keychain] security_path`.
    #[must_use]
    pub fn program(&self) -> PathBuf {
        self.dir.join("security")
    }

    #[must_use]
    pub fn db(&self) -> PathBuf {
        self.dir.join("keychain.json")
    }

    #[must_use]
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("security-runs.jsonl")
    }

    /// Every run so far, one JSON object per line: `{"argv": [...], "stdin": "..."}`.
    #[must_use]
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Forgets the runs logged so far.
    pub fn clear_log(&self) {
        let _ = std::fs::remove_file(self.log_path());
    }

    /// Makes later runs fail like the real tool (`None`: behave normally).
    ///
    /// # Panics
    /// The control file cannot be written.
    pub fn fail(&self, mode: Option<FakeFailure>) {
        let control = PathBuf::from(format!("{}.fail", self.db().display()));
        match mode {
            Some(m) => std::fs::write(control, m.as_str()).expect("write the failure mode"),
            None => {
                let _ = std::fs::remove_file(control);
            }
        }
    }
}
