//! An in-memory [`GatewayContext`]: a grants table, a token per credential name, and the
//! records kept in a list. For tests and benchmarks, and the pattern the agent follows.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use time::OffsetDateTime;

use super::grants::{Denial, GrantError, Grants, NewGrant};
use super::{GatewayContext, GrantView, RefusedSummary, RequestRecord, TokenError};
use crate::credential::Kind;
use crate::http::Upstream;
use crate::provider::{GatewayProvider, Lent};
use crate::secret::Secret;

/// Records kept: enough for any test, bounded for a long benchmark.
pub const KEPT_RECORDS: usize = 1024;

/// Grants, tokens and records behind locks.
pub struct MemoryContext {
    grants: Mutex<Grants>,
    tokens: Mutex<HashMap<String, Lent>>,
    records: Mutex<VecDeque<RequestRecord>>,
    refused: Mutex<VecDeque<RefusedSummary>>,
    upstream: Upstream,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryContext {
    #[must_use]
    pub fn new(upstream: Upstream) -> Self {
        Self {
            grants: Mutex::default(),
            tokens: Mutex::default(),
            records: Mutex::default(),
            refused: Mutex::default(),
            upstream,
        }
    }

    /// Sets (or swaps: a refresh, a reroll) a credential's token.
    pub fn set_token(&self, credential: &str, kind: Kind, token: Secret) {
        self.set_login(credential, Lent::new(kind, token));
    }

    /// Sets a credential's token with the account it acts for (a Codex login).
    pub fn set_login(&self, credential: &str, lent: Lent) {
        lock(&self.tokens).insert(credential.to_owned(), lent);
    }

    /// Creates a grant and returns its placeholder.
    ///
    /// # Errors
    /// See [`Grants::create`].
    pub fn grant(&self, spec: NewGrant) -> Result<Secret, GrantError> {
        Ok(lock(&self.grants)
            .create(spec, OffsetDateTime::now_utc())?
            .1)
    }

    /// # Errors
    /// No such grant.
    pub fn revoke(&self, name: &str) -> Result<(), GrantError> {
        lock(&self.grants).revoke(name).map(drop)
    }

    /// The table, to inspect or change (e.g. move an expiry into the past).
    pub fn grants(&self) -> MutexGuard<'_, Grants> {
        lock(&self.grants)
    }

    /// The latest records (at most [`KEPT_RECORDS`]), oldest first.
    #[must_use]
    pub fn records(&self) -> Vec<RequestRecord> {
        lock(&self.records).iter().cloned().collect()
    }

    /// The latest refusal summaries (at most [`KEPT_RECORDS`]), oldest first.
    #[must_use]
    pub fn refused(&self) -> Vec<RefusedSummary> {
        lock(&self.refused).iter().cloned().collect()
    }
}

impl GatewayContext for MemoryContext {
    fn verify(&self, placeholder: &str) -> Result<GrantView, Denial> {
        let grants = lock(&self.grants);
        let g = grants.verify(placeholder, OffsetDateTime::now_utc())?;
        Ok(GrantView {
            name: g.name.clone(),
            credential: g.credential.clone(),
            max_concurrent: g.max_concurrent,
            budget_left: g.budget_left(OffsetDateTime::now_utc()),
        })
    }

    fn token(&self, credential: &str) -> Result<Lent, TokenError> {
        lock(&self.tokens)
            .get(credential)
            .map(|l| Lent {
                kind: l.kind,
                token: l.token.clone(),
                account: l.account.clone(),
            })
            .ok_or_else(|| TokenError::UnknownCredential(credential.to_owned()))
    }

    fn record(&self, record: RequestRecord) {
        if let Some(name) = &record.grant {
            lock(&self.grants).record(name, &record.usage, OffsetDateTime::now_utc());
        }
        let mut records = lock(&self.records);
        if records.len() == KEPT_RECORDS {
            records.pop_front();
        }
        records.push_back(record);
    }

    fn refused(&self, summary: RefusedSummary) {
        let mut kept = lock(&self.refused);
        if kept.len() == KEPT_RECORDS {
            kept.pop_front();
        }
        kept.push_back(summary);
    }

    /// One upstream serves every provider here (a test's fake API).
    fn upstream(&self, _provider: &dyn GatewayProvider) -> Option<&Upstream> {
        Some(&self.upstream)
    }
}
