//! The library's top-level error: every module's error, a stable code, and an exit status.

use serde::Serialize;

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
    #[error("no token found for {name:?} (tried {tried}); {hint}")]
    NotFound {
        name: String,
        tried: String,
        hint: String,
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
}

/// Exit statuses, documented in the README.
pub mod exit {
    pub const OK: i32 = 0;
    pub const ERROR: i32 = 1;
    pub const USAGE: i32 = 2;
    /// No token found: cfauth's soft failure.
    pub const NOT_FOUND: i32 = 3;
    /// The keychain is locked, unavailable or denied access.
    pub const KEYCHAIN: i32 = 4;
    /// `--require-agent` and no agent answers.
    pub const NO_AGENT: i32 = 5;
    /// The agent refused: policy, lock, or another user.
    pub const REFUSED: i32 = 6;

    /// The exit status for an error `code` (library or agent).
    #[must_use]
    pub fn for_code(code: &str) -> i32 {
        match code {
            "not_found" => NOT_FOUND,
            "no_agent" => NO_AGENT,
            "agent_locked" | "not_allowed" | "approval_required" | "approval_timeout"
            | "denied" | "forbidden_user" | "foreign_agent" | "bad_passphrase" => REFUSED,
            c if c.starts_with("keychain_") => KEYCHAIN,
            _ => ERROR,
        }
    }
}

/// The wire and UI form of any error.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

impl Error {
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Config(_) => "config",
            Self::Source(e) => e.code(),
            Self::Store(e) => e.code(),
            Self::Credential(_) | Self::Dotenv(_) => "malformed",
            Self::Write(_) => "write_failed",
            Self::NotFound { .. } => "not_found",
            Self::Invalid(_) => "invalid",
            Self::Snapshot(_) => "unsupported",
            Self::Provision(_) => "provision_failed",
            Self::Reroll(_) => "reroll_failed",
        }
    }

    #[must_use]
    pub fn exit_code(&self) -> i32 {
        exit::for_code(self.code())
    }

    #[must_use]
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code().to_owned(),
            message: self.to_string(),
        }
    }
}
