//! The broker: named credentials resolved through config, keychain and ledger; setup and clear.

use time::OffsetDateTime;

use crate::config::{Config, Spec};
use crate::credential::{Credential, Kind};
use crate::domain::Previous;
use crate::ledger::{self, Ledger};
use crate::secret::Secret;
use crate::source::{Attempt, Lookup, Resolution, Resolved};
use crate::store::{ItemId, LazyStore};
use crate::Error;

type EnvFn = dyn Fn(&str) -> Option<String> + Send + Sync;

pub struct Broker {
    pub config: Config,
    pub store: LazyStore,
    env: Box<EnvFn>,
}

/// A resolved credential plus the warnings met on the way (shown on stderr by the CLI).
#[derive(Debug)]
pub struct Found {
    pub name: String,
    pub resolved: Resolved,
    pub warnings: Vec<String>,
}

/// The result of `setup`/`reroll`.
#[derive(Debug)]
pub struct Stored {
    pub item: ItemId,
    pub backend: &'static str,
    pub credential: Credential,
    /// What the item held before; `None` when it could not be read first.
    pub previous: Option<Previous>,
}

impl Broker {
    #[must_use]
    pub fn new(config: Config) -> Self {
        let store = LazyStore::with_options(config.keychain.store_options());
        Self::with_store(config, store)
    }

    #[must_use]
    pub fn with_store(config: Config, store: LazyStore) -> Self {
        Self {
            config,
            store,
            env: Box::new(|k| std::env::var(k).ok()),
        }
    }

    /// Replaces the environment (tests).
    #[must_use]
    pub fn with_env(
        mut self,
        env: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.env = Box::new(env);
        self
    }

    /// # Errors
    /// Unknown credential name.
    pub fn spec(&self, name: &str) -> Result<Spec, Error> {
        Ok(self.config.spec(name)?)
    }

    /// Walks the chain. The `Resolution` keeps every attempt for `status`.
    ///
    /// # Errors
    /// Unknown credential name.
    pub fn resolve_all(&self, name: &str) -> Result<(Spec, Resolution), Error> {
        let spec = self.spec(name)?;
        let lookup = Lookup {
            store: &self.store,
            env: &*self.env,
        };
        let mut res = lookup.resolve(&spec.chain);
        if let Some(found) = res.found.as_mut() {
            apply_assumed_expiry(&spec, &mut found.credential);
        }
        Ok((spec, res))
    }

    /// The winning credential, or why there is none: the first hard failure (a locked
    /// keychain, a malformed file) or `NotFound` — the soft failure of cfauth.
    ///
    /// # Errors
    /// As described.
    pub fn resolve(&self, name: &str) -> Result<Found, Error> {
        let (spec, res) = self.resolve_all(name)?;
        let warnings = warnings(&res);
        let Some(resolved) = res.found else {
            let tried = spec
                .chain
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            // A hard failure (locked keychain, malformed file) explains a miss better, and
            // a skipped file (mode 644) is what to fix when nothing else has a token.
            let mut failure = None;
            let mut skipped = None;
            for a in res.attempts {
                match a {
                    Attempt::Failed(_, e) if failure.is_none() => failure = Some(e),
                    Attempt::Skipped(_, e) if skipped.is_none() => skipped = Some(e),
                    _ => {}
                }
            }
            return Err(match (failure, skipped) {
                (Some(e), _) => Error::Source(e),
                (None, Some(source)) => Error::Skipped {
                    name: name.to_owned(),
                    tried,
                    source: Box::new(source),
                    warnings,
                },
                (None, None) => Error::NotFound {
                    name: name.to_owned(),
                    tried,
                    hint: match &spec.store {
                        Some(_) if name == "claude" => "run `keyferry setup` to store one".to_owned(),
                        Some(_) => format!("run `keyferry setup {name}` to store one"),
                        None => format!("log in with that CLI, or add sources under [credentials.{name}] in the config"),
                    },
                    warnings,
                },
            });
        };
        Ok(Found {
            name: name.to_owned(),
            resolved,
            warnings,
        })
    }

    /// The leading `env:` sources of the chain, read from *this* process's environment.
    /// The CLI checks them before asking the agent, whose environment is not the caller's:
    /// an explicit override must win, as in cfauth.
    ///
    /// # Errors
    /// Unknown credential name, or a malformed value in the variable.
    pub fn env_override(&self, name: &str) -> Result<Option<Found>, Error> {
        let spec = self.spec(name)?;
        let leading: Vec<_> = spec
            .chain
            .iter()
            .take_while(|s| matches!(s, crate::source::Source::Env { .. }))
            .cloned()
            .collect();
        let lookup = Lookup {
            store: &self.store,
            env: &*self.env,
        };
        let mut res = lookup.resolve(&leading);
        if let Some(found) = res.found.take() {
            return Ok(Some(Found {
                name: name.to_owned(),
                resolved: found,
                warnings: Vec::new(),
            }));
        }
        match res.attempts.into_iter().find_map(|a| match a {
            Attempt::Failed(_, e) => Some(e),
            _ => None,
        }) {
            Some(e) => Err(Error::Source(e)),
            None => Ok(None),
        }
    }

    /// Validates and stores a token in the credential's keychain item, recording when.
    ///
    /// # Errors
    /// Invalid token, no store item configured, keychain failure.
    pub fn store_token(&self, name: &str, token: Secret) -> Result<Stored, Error> {
        let spec = self.spec(name)?;
        let item = spec.store_item(&self.config)?.clone();
        let mut credential = Credential::parse(&token, "the token you entered")?;
        if name == "claude" && credential.kind == Kind::Opaque {
            return Err(Error::Invalid(
                "this does not look like a Claude token (expected sk-ant-oat01-… from `claude setup-token`, \
                 or an sk-ant-api03-… API key)"
                    .into(),
            ));
        }
        let trimmed = token.expose().trim();
        crate::credential::check_whole(trimmed, "the token you entered")?;
        let store = self.store.get()?;
        let fp = crate::credential::fingerprint(credential.token.expose());
        // Read first, only to say what is replaced; a failed read must not stop the store.
        let previous = match store.get(&item) {
            Ok(None) => Some(Previous::Empty),
            Ok(Some(old)) => {
                // The fingerprint of the token it holds, as `show` prints it (a document's
                // access token, not the whole document).
                let old = Credential::parse(&old, "the stored item").map_or_else(
                    |_| crate::credential::fingerprint(old.expose().trim()),
                    |c| crate::credential::fingerprint(c.token.expose()),
                );
                Some(if old == fp {
                    Previous::Same
                } else {
                    Previous::Replaced { fingerprint: old }
                })
            }
            Err(e) => {
                tracing::debug!(error = %e, "could not read the item before replacing it");
                None
            }
        };
        store.set(&item, &Secret::new(trimmed.to_owned()))?;
        let now = OffsetDateTime::now_utc();
        let entry = ledger::Entry {
            credential: name.to_owned(),
            stored_at: now,
            first_seen: false,
        };
        let stored_at = match Ledger::update(|l| l.record(&fp, entry)) {
            Ok(kept) => kept.stored_at,
            Err(e) => {
                tracing::warn!(error = %e, "could not record the storage time; expiry will be estimated");
                now
            }
        };
        if credential.kind == Kind::SetupToken {
            credential.assume_expiry(stored_at, spec.setup_token_lifetime);
        }
        Ok(Stored {
            item,
            backend: store.backend().as_str(),
            credential,
            previous,
        })
    }

    /// Removes the stored token; `Ok(None)` when there was nothing to remove.
    ///
    /// # Errors
    /// No store item configured, keychain failure.
    pub fn clear(&self, name: &str) -> Result<Option<ItemId>, Error> {
        let spec = self.spec(name)?;
        let item = spec.store_item(&self.config)?.clone();
        Ok(self.store.get()?.delete(&item)?.then_some(item))
    }
}

/// Setup-tokens carry no expiry: use the ledger's storage time (or record first sight).
fn apply_assumed_expiry(spec: &Spec, credential: &mut Credential) {
    if credential.kind != Kind::SetupToken || credential.expires_at.is_some() {
        return;
    }
    let fp = crate::credential::fingerprint(credential.token.expose());
    let stored_at = match Ledger::load().get(&fp) {
        Some(e) => e.stored_at,
        None => {
            let now = OffsetDateTime::now_utc();
            let _ = Ledger::update(|l| {
                l.record(
                    &fp,
                    ledger::Entry {
                        credential: spec.name.clone(),
                        stored_at: now,
                        first_seen: true,
                    },
                );
            });
            now
        }
    };
    credential.assume_expiry(stored_at, spec.setup_token_lifetime);
}

/// How a warning that is a fix begins; the CLI prints it as is, under the warning it fixes.
pub const FIX_PREFIX: &str = "fix: ";

fn warnings(res: &Resolution) -> Vec<String> {
    res.attempts
        .iter()
        .filter_map(|a| match a {
            // cfauth's line stays whole; its fix is the next warning, `fix: chmod 600 …`.
            Attempt::Skipped(_, e) => Some(
                std::iter::once(e.to_string())
                    .chain(e.fix().map(|f| format!("{FIX_PREFIX}{f}")))
                    .collect(),
            ),
            Attempt::Failed(src, e) => Some(vec![format!("{src}: {e}; trying the next source")]),
            Attempt::Absent(_) => None,
        })
        .flatten()
        .collect()
}
