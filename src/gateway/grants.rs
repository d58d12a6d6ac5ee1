//! Grants: a name, the credential it draws on, an expiry, a placeholder kept only as a
//! hash, usage counters and limits. The table verifies placeholders and meters use; its
//! file (see `grants_file`) holds hashes only.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::history::History;
use super::placeholder::{self, Hash, RandomError};
use super::usage::Usage;
use crate::secret::Secret;

/// One grant as stored and listed. Holds no secret: the placeholder is only hashed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    pub name: String,
    pub credential: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    /// SHA-256 of the placeholder, hex.
    pub placeholder_sha256: String,
    #[serde(default)]
    pub requests: u64,
    #[serde(default)]
    pub tokens: Usage,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_use: Option<OffsetDateTime>,
    #[serde(default)]
    pub max_concurrent: Option<u32>,
    #[serde(default)]
    pub daily_token_budget: Option<u64>,
    /// Tokens spent on `budget_day` (UTC), for the daily budget.
    #[serde(default)]
    pub budget_day: Option<time::Date>,
    #[serde(default)]
    pub day_tokens: u64,
    /// Use per hour over the last 7 days.
    #[serde(default)]
    pub history: History,
}

/// A placeholder the table no longer honours, remembered until its expiry so the answer
/// can say "revoked" rather than "unknown".
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Revoked {
    pub name: String,
    pub placeholder_sha256: String,
    /// Retired by a newer grant of the same name rather than by `revoke`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replaced: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
}

pub use crate::domain::NewGrant;

/// Why a request's placeholder is not honoured. Names the grant when known, never the
/// placeholder.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("no placeholder: send it as `Authorization: Bearer` or `x-api-key`")]
    Missing,
    #[error("the placeholder matches no grant")]
    Unknown,
    #[error("grant {name:?} has expired")]
    Expired { name: String },
    #[error("grant {name:?} has been revoked")]
    Revoked { name: String },
    #[error("grant {name:?} was replaced by a newer grant of the same name: use its placeholder")]
    Replaced { name: String },
    #[error("grant {name:?} has spent its daily token budget")]
    OverBudget { name: String, retry_after_secs: u64 },
}

/// A grant cannot be made or changed.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("grant name {0:?}: use 1-64 characters from A-Z a-z 0-9 . _ -")]
    BadName(String),
    #[error("grant {name:?}: the lifetime must be between 1 second and 366 days")]
    BadTtl { name: String },
    #[error("no grant named {0:?}")]
    NoSuchGrant(String),
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// Long enough for a year-long setup token's sandbox; bounded so a typo is not forever.
const MAX_TTL: Duration = crate::expiry::GRANT_TTL_MAX;

/// The grants table. Mutations through it; persistence in `grants_file`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Grants {
    #[serde(default)]
    pub grants: Vec<Grant>,
    #[serde(default)]
    pub revoked: Vec<Revoked>,
}

impl Grants {
    /// Creates `spec.name`, replacing (and so revoking) a grant of that name. Returns the
    /// grant and its placeholder, which exists nowhere else: show it once.
    ///
    /// # Errors
    /// A bad name or lifetime, or the OS random source failed.
    pub fn create(
        &mut self,
        spec: NewGrant,
        now: OffsetDateTime,
    ) -> Result<(Grant, Secret), GrantError> {
        if !valid_name(&spec.name) {
            return Err(GrantError::BadName(spec.name));
        }
        if spec.ttl < Duration::from_secs(1) || spec.ttl > MAX_TTL {
            return Err(GrantError::BadTtl { name: spec.name });
        }
        let (secret, hash) = placeholder::generate()?;
        let _ = self.retire(&spec.name, true);
        let grant = Grant {
            name: spec.name,
            credential: spec.credential,
            created: now,
            expires: now + spec.ttl,
            placeholder_sha256: hash.to_hex(),
            requests: 0,
            tokens: Usage::default(),
            last_use: None,
            max_concurrent: spec.max_concurrent,
            daily_token_budget: spec.daily_token_budget,
            budget_day: None,
            day_tokens: 0,
            history: History::default(),
        };
        self.grants.push(grant.clone());
        Ok((grant, secret))
    }

    /// Revokes `name`: its placeholder is refused from now on.
    ///
    /// # Errors
    /// No grant has that name.
    pub fn revoke(&mut self, name: &str) -> Result<Grant, GrantError> {
        self.retire(name, false)
    }

    fn retire(&mut self, name: &str, replaced: bool) -> Result<Grant, GrantError> {
        let i = self
            .grants
            .iter()
            .position(|g| g.name == name)
            .ok_or_else(|| GrantError::NoSuchGrant(name.to_owned()))?;
        let g = self.grants.remove(i);
        self.revoked.push(Revoked {
            name: g.name.clone(),
            placeholder_sha256: g.placeholder_sha256.clone(),
            replaced,
            expires: g.expires,
        });
        Ok(g)
    }

    #[must_use]
    pub fn list(&self) -> &[Grant] {
        &self.grants
    }

    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Grant> {
        self.grants.iter().find(|g| g.name == name)
    }

    /// The grant `placeholder` opens, or why none does. Every stored hash is compared, in
    /// constant time each, so timing says nothing about which one nearly matched.
    ///
    /// # Errors
    /// The [`Denial`] to answer with.
    pub fn verify(&self, placeholder: &str, now: OffsetDateTime) -> Result<&Grant, Denial> {
        if placeholder.is_empty() {
            return Err(Denial::Missing);
        }
        let hex = Hash::of(placeholder).hex();
        let matches = |stored: &str| hex.matches(stored);
        let found = self.grants.iter().fold(None, |hit, g| {
            if matches(&g.placeholder_sha256) {
                Some(g)
            } else {
                hit
            }
        });
        let revoked = self.revoked.iter().fold(None, |hit, r| {
            if matches(&r.placeholder_sha256) {
                Some(r)
            } else {
                hit
            }
        });
        match (found, revoked) {
            (Some(g), _) if g.expires <= now => Err(Denial::Expired {
                name: g.name.clone(),
            }),
            (Some(g), _) => match g.daily_token_budget {
                Some(budget) if g.budget_day == Some(now.date()) && g.day_tokens >= budget => {
                    Err(Denial::OverBudget {
                        name: g.name.clone(),
                        retry_after_secs: secs_to_utc_midnight(now),
                    })
                }
                _ => Ok(g),
            },
            (None, Some(r)) if r.replaced => Err(Denial::Replaced {
                name: r.name.clone(),
            }),
            (None, Some(r)) => Err(Denial::Revoked {
                name: r.name.clone(),
            }),
            (None, None) => Err(Denial::Unknown),
        }
    }

    /// Counts one request's use against `name` (a grant revoked meanwhile is skipped).
    pub fn record(&mut self, name: &str, usage: &Usage, now: OffsetDateTime) {
        let Some(g) = self.grants.iter_mut().find(|g| g.name == name) else {
            return;
        };
        g.requests = g.requests.saturating_add(1);
        g.tokens.add(usage);
        g.last_use = Some(now);
        if g.budget_day != Some(now.date()) {
            g.budget_day = Some(now.date());
            g.day_tokens = 0;
        }
        g.day_tokens = g.day_tokens.saturating_add(usage.total());
        g.history.record(usage, now);
    }

    /// Drops expired grants and expired revocation notes.
    pub fn prune(&mut self, now: OffsetDateTime) {
        self.grants.retain(|g| g.expires > now);
        self.revoked.retain(|r| r.expires > now);
    }
}

impl Grant {
    /// What is left of the daily budget on `now`'s day (UTC), if the grant has one.
    #[must_use]
    pub fn budget_left(&self, now: OffsetDateTime) -> Option<u64> {
        let budget = self.daily_token_budget?;
        let spent = if self.budget_day == Some(now.date()) {
            self.day_tokens
        } else {
            0
        };
        Some(budget.saturating_sub(spent))
    }
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub(crate) fn secs_to_utc_midnight(now: OffsetDateTime) -> u64 {
    let now = now.to_offset(time::UtcOffset::UTC);
    let next = now
        .date()
        .next_day()
        .map_or(now, |d| d.midnight().assume_utc());
    u64::try_from((next - now).whole_seconds())
        .unwrap_or(0)
        .max(1)
}

#[cfg(test)]
#[path = "grants_tests.rs"]
mod tests;
