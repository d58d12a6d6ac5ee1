//! Walking a credential's lookup chain: first source that yields a token wins.

use sha2::{Digest, Sha256};

use super::{file::read_private, Source, SourceError};
use crate::credential::Credential;
use crate::dotenv::Dotenv;
use crate::paths;
use crate::secret::Secret;
use crate::store::{ItemId, LazyStore};

/// What the chain found.
#[derive(Debug)]
pub struct Resolved {
    pub credential: Credential,
    pub source: Source,
    /// Where exactly, as `status` prints it: `keychain:cf-claude-token`,
    /// `claude-login:file:~/.claude/.credentials.json`.
    pub origin: String,
}

/// What happened at one step.
#[derive(Debug)]
pub enum Attempt {
    Absent(Source),
    /// Skipped with a warning (unsafe permissions), like cfauth.
    Skipped(Source, SourceError),
    Failed(Source, SourceError),
}

/// The outcome of a whole chain: the winner (if any) and every step before it.
#[derive(Debug, Default)]
pub struct Resolution {
    pub found: Option<Resolved>,
    pub attempts: Vec<Attempt>,
}

/// Resolves sources against an environment and a (lazily opened) keychain.
pub struct Lookup<'a> {
    pub store: &'a LazyStore,
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

impl Lookup<'_> {
    #[must_use]
    pub fn resolve(&self, chain: &[Source]) -> Resolution {
        let mut res = Resolution::default();
        for source in chain {
            tracing::trace!(%source, "trying source");
            match self.read(source) {
                Ok(Some((text, origin))) => match Credential::parse(&text, &origin) {
                    Ok(credential) => {
                        tracing::debug!(%origin, kind = %credential.kind, credential = ?credential, "resolved");
                        res.found = Some(Resolved {
                            credential,
                            source: source.clone(),
                            origin,
                        });
                        return res;
                    }
                    Err(e) => res.attempts.push(Attempt::Failed(source.clone(), e.into())),
                },
                Ok(None) => res.attempts.push(Attempt::Absent(source.clone())),
                Err(e) if e.is_skip() => res.attempts.push(Attempt::Skipped(source.clone(), e)),
                Err(e) => res.attempts.push(Attempt::Failed(source.clone(), e)),
            }
        }
        res
    }

    /// The raw text at one source, and its origin label.
    fn read(&self, source: &Source) -> Result<Option<(Secret, String)>, SourceError> {
        let label = source.to_string();
        match source {
            Source::Env { var } => Ok((self.env)(var)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (Secret::new(v), label))),
            Source::Keychain { service, account } => {
                let id = ItemId::new(service, account.clone().unwrap_or_else(paths::user));
                Ok(self.store.get()?.get(&id)?.map(|s| (s, label)))
            }
            Source::File { path } => Ok(read_private(&paths::expand(path))?.map(|s| (s, label))),
            Source::Dotenv { path, key } => {
                let full = paths::expand(path);
                let Some(text) = read_private(&full)? else {
                    return Ok(None);
                };
                let shown = paths::display(&full);
                Ok(Dotenv::parse(text.expose())
                    .get(key, &shown)?
                    .filter(|v| !v.is_empty())
                    .map(|s| (s, label)))
            }
            Source::ClaudeLogin => match claude_login(self.env, cfg!(target_os = "macos")) {
                LoginLocation::Keychain(id) => Ok(self
                    .store
                    .get()?
                    .get(&id)?
                    .map(|s| (s, format!("claude-login:keychain:{}", id.service)))),
                LoginLocation::File(p) => Ok(read_private(&p)?
                    .map(|s| (s, format!("claude-login:file:{}", paths::display(&p))))),
            },
        }
    }
}

/// Where Claude Code keeps its own login on this OS.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginLocation {
    Keychain(ItemId),
    File(std::path::PathBuf),
}

/// Claude Code's login: Keychain service `Claude Code-credentials`, suffixed with the first
/// 8 hex chars of sha256(`CLAUDE_CONFIG_DIR`) when that is set; on Linux a 0600 file.
#[must_use]
pub fn claude_login(env: &dyn Fn(&str) -> Option<String>, macos: bool) -> LoginLocation {
    let config_dir = env("CLAUDE_CONFIG_DIR").filter(|d| !d.is_empty());
    if macos {
        let service = match &config_dir {
            Some(dir) => {
                let digest = Sha256::digest(dir.as_bytes());
                format!("Claude Code-credentials-{}", &hex::encode(digest)[..8])
            }
            None => "Claude Code-credentials".to_owned(),
        };
        LoginLocation::Keychain(ItemId::new(service, paths::user()))
    } else {
        let dir = config_dir.map_or_else(|| paths::home().join(".claude"), |d| paths::expand(&d));
        LoginLocation::File(dir.join(".credentials.json"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Backend;

    #[test]
    fn claude_login_location_follows_config_dir() {
        let none = |_: &str| None;
        let set = |k: &str| (k == "CLAUDE_CONFIG_DIR").then(|| "/tmp/cc".to_owned());
        match claude_login(&none, true) {
            LoginLocation::Keychain(id) => assert_eq!(id.service, "Claude Code-credentials"),
            other => panic!("{other:?}"),
        }
        let expected = format!(
            "Claude Code-credentials-{}",
            &hex::encode(Sha256::digest(b"/tmp/cc"))[..8]
        );
        assert_eq!(
            claude_login(&set, true),
            LoginLocation::Keychain(ItemId::new(expected, paths::user()))
        );
        assert_eq!(
            claude_login(&set, false),
            LoginLocation::File("/tmp/cc/.credentials.json".into())
        );
    }

    #[test]
    fn first_source_with_a_token_wins() {
        let store = LazyStore::new(Backend::Memory, 0);
        store
            .get()
            .unwrap()
            .set(
                &ItemId::new("svc", paths::user()),
                &Secret::new("sk-ant-oat01-fromkeychain".into()),
            )
            .unwrap();
        let env = |k: &str| (k == "SET").then(|| "sk-ant-api03-fromenv".to_owned());
        let lookup = Lookup {
            store: &store,
            env: &env,
        };
        let chain: Vec<Source> = ["env:UNSET", "keychain:svc", "env:SET"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let res = lookup.resolve(&chain);
        let found = res.found.unwrap();
        assert_eq!(found.origin, "keychain:svc");
        assert_eq!(found.credential.token.expose(), "sk-ant-oat01-fromkeychain");
        assert_eq!(res.attempts.len(), 1);
    }
}
