//! One refresh flight: finish a pending write-back, take the CLI's lock, re-read the source,
//! decide, call the token endpoint, journal, write back. Runs under the per-login flight lock.

use std::sync::Arc;

use time::OffsetDateTime;

use super::cli_lock::CliLock;
use super::journal::{self, fingerprint, Pending};
use super::plan::{self, Due};
use super::writeback::WritebackError;
use super::{lock, token, Entry, Error, Event, Mode, Outcome, Refresher, Would};
use crate::credential::Credential;
use crate::secret::Secret;

pub(super) async fn run(r: &Refresher, entry: &Entry, mode: Mode) -> Result<Outcome, Error> {
    if has_pending(r, entry).await? {
        let _cli = take_cli_lock(entry).await?;
        if let Some(done) = finish_pending(r, entry).await? {
            return Ok(done);
        }
    }
    if mode == Mode::RecoverOnly {
        return Ok(Outcome::NotDue { at: None });
    }
    // A first look without the CLI's lock, so a login that is not due never touches it.
    let (_, cred) = read(entry).await?;
    if let Some(done) = decide(r, entry, mode, &cred) {
        return Ok(done);
    }
    // Then, under the lock, the store as it is now: the CLI may have refreshed meanwhile.
    let _cli = take_cli_lock(entry).await?;
    let (doc, cred) = read(entry).await?;
    if let Some(done) = decide(r, entry, mode, &cred) {
        return Ok(done);
    }
    let Some(rt) = cred.refresh_token.clone() else {
        return Ok(Outcome::NotDue { at: None });
    };
    let rt_fp = fingerprint(&rt);
    tracing::info!(credential = %entry.name, "refreshing the login");
    let answer = token::refresh(&r.client, entry.provider, &entry.token_url, &rt, &doc).await;
    let new = match answer {
        Ok(new) => new,
        Err(source) => return Err(failed(r, entry, &rt_fp, source)),
    };
    let location = entry.source.location();
    let now = OffsetDateTime::now_utc();
    let new_doc = entry
        .provider
        .merge(&doc, &new, now, &location)
        .map_err(|e| Error::Read {
            name: entry.name.clone(),
            source: Arc::new(e),
        })?;
    // The expiry as the CLI will read it (Codex's is inside the new access JWT).
    let merged = Credential::parse(&new_doc, &location).ok();
    let expires_at = merged.as_ref().and_then(|c| c.expires_at).unwrap_or(now);
    let lifetime = (expires_at - now).unsigned_abs();
    let pending = Pending {
        replaces: rt_fp,
        document: new_doc,
        lifetime: Some(lifetime),
    };
    let store = Arc::clone(&r.journal);
    let name = entry.name.clone();
    let (saved, pending) = tokio::task::spawn_blocking(move || {
        let saved = journal::save(store.as_ref(), &name, &pending);
        (saved, pending)
    })
    .await
    .expect("journal write does not panic");
    let journaled = match saved {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(credential = %entry.name, error = %e, "cannot journal the new login; writing it back unjournaled");
            false
        }
    };
    write_back(r, entry, &pending.document, journaled).await?;
    if let Some(c) = &merged {
        remember(entry, c);
    }
    {
        let mut st = lock(&entry.state);
        st.backoff.reset();
        st.retry_at = None;
        st.expires_at = Some(expires_at);
        st.lifetime = Some(lifetime);
    }
    r.emit(Event::Refreshed {
        name: entry.name.clone(),
        expires_at,
    });
    Ok(Outcome::Refreshed { expires_at })
}

/// `Some(outcome)` when this flight ends without a token call; `None` to refresh.
fn decide(r: &Refresher, entry: &Entry, mode: Mode, cred: &Credential) -> Option<Outcome> {
    let now = OffsetDateTime::now_utc();
    let Some(rt) = &cred.refresh_token else {
        remember(entry, cred);
        return Some(Outcome::NotDue { at: None });
    };
    let rt_fp = fingerprint(rt);
    let (was_due, changed) = {
        let mut st = lock(&entry.state);
        let was_due = plan::plan(
            st.expires_at,
            st.has_refresh,
            now,
            entry.ahead(&st),
            st.cli_from,
        ) == Due::Now;
        let access = fingerprint(&cred.token);
        let changed = st.known_access.as_ref().is_some_and(|k| *k != access);
        match &st.dead {
            Some(dead) if *dead == rt_fp => return Some(Outcome::NeedsLogin),
            Some(_) => {
                tracing::info!(credential = %entry.name, "a new login replaced the rejected one");
                st.dead = None;
                st.backoff.reset();
                st.retry_at = None;
            }
            None => {}
        }
        (was_due, changed)
    };
    remember(entry, cred);
    match due(entry, cred, now) {
        Due::Never => return Some(Outcome::NotDue { at: None }),
        Due::LeaveToCli => return Some(Outcome::LeftToCli),
        Due::At(_) if mode == Mode::IfDue && (was_due || changed) => {
            r.emit(Event::Adopted {
                name: entry.name.clone(),
            });
            return Some(Outcome::Adopted {
                expires_at: cred.expires_at,
            });
        }
        Due::At(at) if mode == Mode::IfDue => return Some(Outcome::NotDue { at: Some(at) }),
        Due::At(_) | Due::Now => {}
    }
    if mode == Mode::IfDue {
        if let Some(until) = lock(&entry.state).retry_at.filter(|t| *t > now) {
            return Some(Outcome::BackingOff { until });
        }
    }
    None
}

async fn has_pending(r: &Refresher, entry: &Entry) -> Result<bool, Error> {
    let store = Arc::clone(&r.journal);
    let name = entry.name.clone();
    let found = tokio::task::spawn_blocking(move || journal::load(store.as_ref(), &name))
        .await
        .expect("journal read does not panic")
        .map_err(|e| journal_err(entry, e))?;
    Ok(found.is_some())
}

pub(super) async fn dry_run(r: &Refresher, entry: &Entry, force: bool) -> Result<Would, Error> {
    let pending = {
        let store = Arc::clone(&r.journal);
        let name = entry.name.clone();
        tokio::task::spawn_blocking(move || journal::load(store.as_ref(), &name))
            .await
            .expect("journal read does not panic")
            .map_err(|e| journal_err(entry, e))?
    };
    if pending.is_some() {
        return Ok(Would::FinishPendingWriteback);
    }
    let (_, cred) = read(entry).await?;
    remember(entry, &cred);
    let Some(rt) = &cred.refresh_token else {
        return Ok(Would::NothingToRefresh);
    };
    let now = OffsetDateTime::now_utc();
    let due = due(entry, &cred, now);
    let st = lock(&entry.state);
    if st.dead.as_deref() == Some(fingerprint(rt).as_str()) {
        return Ok(Would::NeedsLogin);
    }
    Ok(match due {
        Due::Never => Would::NothingToRefresh,
        Due::LeaveToCli => Would::LeaveToCli,
        Due::At(_) if force => Would::Refresh,
        Due::At(until) => Would::Wait { until },
        Due::Now => match st.retry_at.filter(|t| *t > now && !force) {
            Some(until) => Would::Wait { until },
            None => Would::Refresh,
        },
    })
}

/// Writes a journaled login back only when the source still holds exactly the login it
/// replaces; drops it when the source holds anything else (it already has it, a newer
/// `/login`, a logout that removed the refresh token). An unreadable source (half-written,
/// not a Claude login) keeps it for the next try.
async fn finish_pending(r: &Refresher, entry: &Entry) -> Result<Option<Outcome>, Error> {
    let store = Arc::clone(&r.journal);
    let name = entry.name.clone();
    let Some(pending) = tokio::task::spawn_blocking(move || journal::load(store.as_ref(), &name))
        .await
        .expect("journal read does not panic")
        .map_err(|e| journal_err(entry, e))?
    else {
        lock(&entry.state).pending = false;
        return Ok(None);
    };
    lock(&entry.state).pending = true;
    let new = Credential::parse(&pending.document, "pending refresh").ok();
    let new_rt = new
        .as_ref()
        .and_then(|c| c.refresh_token.as_ref())
        .map(fingerprint);
    let current = read(entry).await;
    let current_rt = match &current {
        Ok((_, c)) => c.refresh_token.as_ref().map(fingerprint),
        Err(Error::Read { source, .. }) if matches!(**source, WritebackError::Vanished { .. }) => {
            return Err(Error::Writeback {
                name: entry.name.clone(),
                kept: true,
                source: Arc::clone(source),
            })
        }
        Err(e) => return Err(e.clone()),
    };
    let apply = current_rt.as_deref() == Some(pending.replaces.as_str());
    if apply {
        tracing::info!(credential = %entry.name, "finishing an interrupted write-back");
        write_back(r, entry, &pending.document, true).await?;
    } else {
        if current_rt != new_rt {
            tracing::info!(credential = %entry.name, "a newer login replaced the pending one; dropping it");
        }
        let store = Arc::clone(&r.journal);
        let name = entry.name.clone();
        tokio::task::spawn_blocking(move || journal::clear(store.as_ref(), &name))
            .await
            .expect("journal delete does not panic")
            .map_err(|e| journal_err(entry, e))?;
        lock(&entry.state).pending = false;
        return Ok(None);
    }
    let expires_at = new.as_ref().and_then(|c| c.expires_at);
    if let Some(c) = &new {
        remember(entry, c);
    }
    // The lifetime the endpoint gave, as the flight that got it would have learned it: the
    // next trigger must not find the login due at once (Google's last an hour).
    if let Some(lifetime) = pending.lifetime {
        lock(&entry.state).lifetime = Some(lifetime);
    }
    let expires_at = expires_at.unwrap_or_else(OffsetDateTime::now_utc);
    r.emit(Event::Refreshed {
        name: entry.name.clone(),
        expires_at,
    });
    Ok(Some(Outcome::Refreshed { expires_at }))
}

/// Writes the document to the source; on success drops the journal item.
async fn write_back(
    r: &Refresher,
    entry: &Entry,
    doc: &Secret,
    journaled: bool,
) -> Result<(), Error> {
    let source = Arc::clone(&entry.source);
    let doc = doc.clone();
    let written = tokio::task::spawn_blocking(move || source.write(&doc))
        .await
        .expect("write-back does not panic");
    if let Err(e) = written {
        lock(&entry.state).pending = journaled;
        let err = Error::Writeback {
            name: entry.name.clone(),
            kept: journaled,
            source: Arc::new(e),
        };
        r.emit(Event::Failed {
            name: entry.name.clone(),
            code: err.code(),
            message: err.to_string(),
            retry_at: None,
        });
        return Err(err);
    }
    let store = Arc::clone(&r.journal);
    let name = entry.name.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || journal::clear(store.as_ref(), &name))
        .await
        .expect("journal delete does not panic")
    {
        // Harmless: the next flight sees the source already holds it and drops the item.
        tracing::warn!(credential = %entry.name, error = %e, "pending refresh item not deleted");
    }
    lock(&entry.state).pending = false;
    Ok(())
}

fn failed(r: &Refresher, entry: &Entry, rt_fp: &str, source: token::RefreshError) -> Error {
    let now = OffsetDateTime::now_utc();
    let mut st = lock(&entry.state);
    let err = Error::Refresh {
        name: entry.name.clone(),
        source: source.clone(),
    };
    if source.is_permanent() {
        st.dead = Some(rt_fp.to_owned());
        drop(st);
        r.emit(Event::NeedsLogin {
            name: entry.name.clone(),
            message: err.to_string(),
        });
    } else {
        let retry_after = match &source {
            token::RefreshError::Transient { retry_after, .. } => *retry_after,
            token::RefreshError::Permanent { .. } => None,
        };
        let retry_at = now + st.backoff.next_delay(retry_after);
        st.retry_at = Some(retry_at);
        drop(st);
        r.emit(Event::Failed {
            name: entry.name.clone(),
            code: err.code(),
            message: err.to_string(),
            retry_at: Some(retry_at),
        });
    }
    err
}

async fn take_cli_lock(entry: &Entry) -> Result<Option<CliLock>, Error> {
    let Some(kind) = entry.provider.cli_lock() else {
        return Ok(None);
    };
    let Some(dir) = entry.source.cli_lock_dir() else {
        return Ok(None);
    };
    CliLock::acquire(kind, &dir)
        .await
        .map(Some)
        .map_err(|e| Error::Lock {
            name: entry.name.clone(),
            source: Arc::new(e),
        })
}

async fn read(entry: &Entry) -> Result<(Secret, Credential), Error> {
    let source = Arc::clone(&entry.source);
    let location = source.location();
    let doc = tokio::task::spawn_blocking(move || source.read())
        .await
        .expect("login read does not panic")
        .map_err(|e| Error::Read {
            name: entry.name.clone(),
            source: Arc::new(e),
        })?
        .ok_or_else(|| Error::Read {
            name: entry.name.clone(),
            source: Arc::new(WritebackError::Vanished {
                path: location.clone(),
            }),
        })?;
    let not_a_login = |reason: String| Error::NotALogin {
        name: entry.name.clone(),
        location: location.clone(),
        cli: entry.provider.cli(),
        reason,
    };
    let cred = Credential::parse(&doc, &location).map_err(|e| not_a_login(e.to_string()))?;
    if cred.kind != entry.provider.kind() {
        return Err(not_a_login(format!(
            "it is a {} credential",
            cred.kind.as_str()
        )));
    }
    Ok((doc, cred))
}

/// The schedule of the login as it is in the source now.
fn due(entry: &Entry, cred: &Credential, now: OffsetDateTime) -> Due {
    let ahead = entry.ahead(&lock(&entry.state));
    plan::plan(
        cred.expires_at,
        true,
        now,
        ahead,
        entry.provider.cli_refreshes_from(cred),
    )
}

fn remember(entry: &Entry, cred: &Credential) {
    let cli_from = entry.provider.cli_refreshes_from(cred);
    let mut st = lock(&entry.state);
    st.cli_from = cli_from;
    st.expires_at = cred.expires_at;
    st.has_refresh = cred.refresh_token.is_some();
    st.known_access = Some(fingerprint(&cred.token));
}

fn journal_err(entry: &Entry, e: crate::store::StoreError) -> Error {
    Error::Journal {
        name: entry.name.clone(),
        source: Arc::new(e),
    }
}
