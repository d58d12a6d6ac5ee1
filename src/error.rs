//! The library's top-level error: every module's error, a stable code, and an exit status.

pub use crate::domain::{exit, ErrorBody, ErrorCode};

use crate::config::ConfigError;
use crate::credential::CredentialError;
use crate::source::SourceError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error(transparent)]
    Write(#[from] crate::atomic::WriteError),
    #[error(transparent)]
    Dotenv(#[from] crate::dotenv::DotenvError),
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    #[error(transparent)]
    File(#[from] crate::safe_file::FileError),
    #[error("no token found for {name:?} (tried {tried}); {hint}")]
    NotFound {
        name: String,
        tried: String,
        hint: String,
        warnings: Vec<String>,
    },
    /// Nothing found, but a source that holds a token was skipped (a 644 file): that file
    /// is what to fix, so it is the error rather than "not found".
    #[error(
        "no usable token for {name:?}: {} was skipped (tried {tried})",
        source.path().unwrap_or("a source")
    )]
    Skipped {
        name: String,
        tried: String,
        /// Boxed: the file's error is large, and every `Result<_, Error>` pays for it.
        source: Box<SourceError>,
        warnings: Vec<String>,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    #[error(transparent)]
    Provision(#[from] crate::provision::ProvisionError),
    #[error(transparent)]
    Reroll(#[from] crate::reroll::RerollError),
    #[error(transparent)]
    Launch(#[from] crate::launch::LaunchError),
}

impl Error {
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Config(_) => ErrorCode::Config,
            Self::Source(e) => e.code(),
            Self::Store(e) => e.code(),
            Self::Credential(_) => ErrorCode::Malformed,
            Self::Dotenv(e) => e.code(),
            Self::Sink(e) => e.code(),
            Self::File(e) => e.code(),
            Self::Write(_) => ErrorCode::WriteFailed,
            Self::NotFound { .. } => ErrorCode::NotFound,
            Self::Skipped { source, .. } => source.code(),
            Self::Invalid(_) => ErrorCode::Invalid,
            Self::Snapshot(_) => ErrorCode::Unsupported,
            Self::Provision(_) => ErrorCode::ProvisionFailed,
            Self::Reroll(_) => ErrorCode::RerollFailed,
            // Never sent over the wire: only `exec` meets it, and exits with its own status.
            Self::Launch(_) => ErrorCode::Invalid,
        }
    }

    #[must_use]
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Launch(e) => e.exit_status(),
            _ => self.code().exit_status(),
        }
    }

    /// The warnings met on the way to a miss (a skipped file and its fix), to print first.
    #[must_use]
    pub fn warnings(&self) -> &[String] {
        match self {
            Self::NotFound { warnings, .. } | Self::Skipped { warnings, .. } => warnings,
            _ => &[],
        }
    }

    #[must_use]
    pub fn body(&self) -> ErrorBody {
        ErrorBody::new(self.code(), self.to_string())
    }
}
