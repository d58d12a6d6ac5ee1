//! Sources: where a token comes from (variable, keychain item, file, Claude Code's login, `.env`).

pub mod chain;
mod file;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use chain::{Attempt, Lookup, Resolution, Resolved};
pub use file::read_private;

use crate::credential::CredentialError;
use crate::dotenv::DotenvError;
use crate::store::StoreError;

/// The default `.env` key holding a Claude token (seed 004).
pub const DEFAULT_DOTENV_KEY: &str = "CLAUDE_CODE_OAUTH_TOKEN";

/// One step of a lookup chain. Written in config and shown by `status` as
/// `env:VAR`, `keychain:SERVICE[#ACCOUNT]`, `file:PATH`, `claude-login`, `dotenv:PATH[#KEY]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Source {
    Env {
        var: String,
    },
    /// Account defaults to `$USER`.
    Keychain {
        service: String,
        account: Option<String>,
    },
    /// A raw token or credential JSON; must not be group/world accessible.
    File {
        path: String,
    },
    /// Claude Code's own login: Keychain `Claude Code-credentials[-hash]` on macOS,
    /// `$CLAUDE_CONFIG_DIR/.credentials.json` or `~/.claude/.credentials.json` on Linux.
    ClaudeLogin,
    Dotenv {
        path: String,
        key: String,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env { var } => write!(f, "env:{var}"),
            Self::Keychain {
                service,
                account: None,
            } => write!(f, "keychain:{service}"),
            Self::Keychain {
                service,
                account: Some(a),
            } => write!(f, "keychain:{service}#{a}"),
            Self::File { path } => write!(f, "file:{path}"),
            Self::ClaudeLogin => f.write_str("claude-login"),
            Self::Dotenv { path, key } if key == DEFAULT_DOTENV_KEY => write!(f, "dotenv:{path}"),
            Self::Dotenv { path, key } => write!(f, "dotenv:{path}#{key}"),
        }
    }
}

impl FromStr for Source {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, arg) = s.split_once(':').unwrap_or((s, ""));
        let need = |what: &str| {
            if arg.is_empty() {
                Err(format!("source {s:?} needs {what} after `{kind}:`"))
            } else {
                Ok(())
            }
        };
        let split = |default: Option<&str>| match arg.rsplit_once('#') {
            Some((a, b)) if !b.is_empty() => (a.to_owned(), Some(b.to_owned())),
            _ => (arg.to_owned(), default.map(str::to_owned)),
        };
        Ok(match kind {
            "env" => {
                need("a variable name")?;
                Self::Env { var: arg.to_owned() }
            }
            "keychain" => {
                need("a service name")?;
                let (service, account) = split(None);
                Self::Keychain { service, account }
            }
            "file" => {
                need("a path")?;
                Self::File { path: arg.to_owned() }
            }
            "claude-login" if arg.is_empty() => Self::ClaudeLogin,
            "dotenv" => {
                need("a path")?;
                let (path, key) = split(Some(DEFAULT_DOTENV_KEY));
                Self::Dotenv {
                    path,
                    key: key.unwrap_or_default(),
                }
            }
            _ => {
                return Err(format!(
                    "unknown source {s:?}; use env:VAR, keychain:SERVICE[#ACCOUNT], file:PATH, claude-login or dotenv:PATH[#KEY]"
                ))
            }
        })
    }
}

impl TryFrom<String> for Source {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Source> for String {
    fn from(s: Source) -> Self {
        s.to_string()
    }
}

/// Why one source could not be used. Names the file, item or variable and the fix.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cf: token file {path} has unsafe permissions ({mode:o}) — expected 600, skipping")]
    UnsafeMode { path: String, mode: u32 },
    #[error("{path} is owned by uid {owner}, not by you (uid {uid}); skipping")]
    WrongOwner { path: String, owner: u32, uid: u32 },
    #[error("{path} is larger than {limit} bytes; not a credential file")]
    TooLarge { path: String, limit: u64 },
    #[error("{path}: cannot read: {reason}")]
    Unreadable { path: String, reason: String },
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error(transparent)]
    Dotenv(#[from] DotenvError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SourceError {
    /// Permission problems are skipped with a warning, like cfauth; the rest are errors.
    #[must_use]
    pub fn is_skip(&self) -> bool {
        matches!(self, Self::UnsafeMode { .. } | Self::WrongOwner { .. })
    }

    /// The file it is about, as shown (`~/.config/cf/claude-token`), when it is about one.
    #[must_use]
    pub fn path(&self) -> Option<&str> {
        match self {
            Self::UnsafeMode { path, .. }
            | Self::WrongOwner { path, .. }
            | Self::TooLarge { path, .. }
            | Self::Unreadable { path, .. } => Some(path),
            Self::Credential(_) | Self::Dotenv(_) | Self::Store(_) => None,
        }
    }

    /// The shell command that fixes a skipped file, printed as `fix: …` under cfauth's
    /// warning (which must stay byte for byte as cf prints it, so it cannot carry it).
    #[must_use]
    pub fn fix(&self) -> Option<String> {
        match self {
            Self::UnsafeMode { path, .. } => Some(format!("chmod 600 {}", shell_word(path))),
            Self::WrongOwner { path, .. } => Some(format!(
                "remove {} or have its owner give it to you (sudo chown \"$USER\" {})",
                shell_word(path),
                shell_word(path)
            )),
            _ => None,
        }
    }

    #[must_use]
    pub fn code(&self) -> crate::domain::ErrorCode {
        use crate::domain::ErrorCode;
        match self {
            Self::UnsafeMode { .. } | Self::WrongOwner { .. } => ErrorCode::UnsafeFile,
            Self::TooLarge { .. } | Self::Unreadable { .. } => ErrorCode::Unreadable,
            Self::Credential(_) | Self::Dotenv(_) => ErrorCode::Malformed,
            Self::Store(e) => e.code(),
        }
    }
}

/// `path` as one shell word: as is when it is plain (a leading `~/` stays expandable),
/// else single-quoted after the `~/`.
fn shell_word(path: &str) -> String {
    let plain = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@%=".contains(c))
    };
    let (home, rest) = path
        .strip_prefix("~/")
        .map_or(("", path), |rest| ("~/", rest));
    if !rest.is_empty() && plain(rest) {
        format!("{home}{rest}")
    } else {
        format!("{home}'{}'", rest.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_round_trip_through_strings() {
        for s in [
            "env:CF_CLAUDE_API_KEY",
            "keychain:cf-claude-token",
            "keychain:Claude Code-credentials#alice",
            "file:~/.config/cf/claude-token",
            "claude-login",
            "dotenv:~/proj/.env",
            "dotenv:.env#ANTHROPIC_API_KEY",
        ] {
            let parsed: Source = s.parse().unwrap();
            assert_eq!(parsed.to_string(), s);
        }
        assert_eq!(
            "dotenv:/x/.env".parse::<Source>().unwrap(),
            Source::Dotenv {
                path: "/x/.env".into(),
                key: DEFAULT_DOTENV_KEY.into()
            }
        );
        assert!("keychain:".parse::<Source>().is_err());
        assert!("ftp:x"
            .parse::<Source>()
            .unwrap_err()
            .contains("unknown source"));
    }

    #[test]
    fn unsafe_mode_message_matches_cfauth() {
        let e = SourceError::UnsafeMode {
            path: "~/.config/cf/claude-token".into(),
            mode: 0o644,
        };
        assert_eq!(
            e.to_string(),
            "cf: token file ~/.config/cf/claude-token has unsafe permissions (644) — expected 600, skipping"
        );
    }

    #[test]
    fn a_skipped_file_names_its_fix_as_one_shell_word() {
        let fix = |path: &str| {
            SourceError::UnsafeMode {
                path: path.into(),
                mode: 0o644,
            }
            .fix()
            .unwrap()
        };
        assert_eq!(
            fix("~/.config/cf/claude-token"),
            "chmod 600 ~/.config/cf/claude-token"
        );
        assert_eq!(fix("/tmp/my token"), "chmod 600 '/tmp/my token'");
        assert_eq!(fix("~/it's"), r"chmod 600 ~/'it'\''s'");
        let broken = SourceError::TooLarge {
            path: "/x".into(),
            limit: 1,
        };
        assert_eq!(broken.fix(), None);
        assert_eq!(broken.path(), Some("/x"));
    }
}
