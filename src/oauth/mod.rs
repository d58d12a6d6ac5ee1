//! The single refresher: Keyferry keeps a CLI's login (Claude Code, Codex, Gemini CLI) alive
//! ahead of expiry, one refresh in flight per credential, and writes the new login back where
//! the host CLI reads it.
//!
//! Independent of the agent: a login is a [`writeback::LoginSource`] (file or keychain item)
//! read and written the way its [`login::LoginProvider`] says, the journal is any [`Store`],
//! and results leave as [`Outcome`]s and [`Event`]s (no secrets). See `docs/refresher.md`
//! for the facts this relies on and their sources.

pub mod cli_lock;
mod flight;
pub mod journal;
pub mod login;
pub mod plan;
pub mod token;
pub mod transport;
pub mod usage;
pub mod writeback;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::broadcast;

use crate::domain::ErrorCode;
use crate::store::{Store, StoreError};
use cli_lock::LockError;
use login::LoginProvider;
use token::RefreshError;
use transport::{HttpClient, TransportConfig, TransportError};
use writeback::{LoginSource, WritebackError};

/// `[oauth]` settings plus the per-credential refresh-ahead time.
#[derive(Debug, Clone)]
pub struct OauthConfig {
    /// Anthropic's token endpoint (`[oauth] token_url`).
    pub token_url: String,
    /// Other providers' token endpoints by provider id (`[providers.ID] token_url`); a
    /// provider not named here uses its default.
    pub token_urls: BTreeMap<String, String>,
    /// Anthropic's usage endpoint (`[oauth] usage_url`).
    pub usage_url: String,
    /// Other providers' usage endpoints by provider id (`[providers.ID] usage_url`).
    pub usage_urls: BTreeMap<String, String>,
    pub extra_ca_file: Option<PathBuf>,
    /// Default for logins added without their own `refresh_ahead_mins`.
    pub refresh_ahead: Duration,
    pub timeout: Duration,
}

impl Default for OauthConfig {
    fn default() -> Self {
        Self {
            token_url: token::DEFAULT_TOKEN_URL.to_owned(),
            token_urls: BTreeMap::new(),
            usage_url: usage::DEFAULT_USAGE_URL.to_owned(),
            usage_urls: BTreeMap::new(),
            extra_ca_file: None,
            refresh_ahead: plan::DEFAULT_REFRESH_AHEAD,
            timeout: transport::DEFAULT_TIMEOUT,
        }
    }
}

/// What a trigger did (or, for a joiner, what the shared flight did).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new login was obtained and written back.
    Refreshed { expires_at: OffsetDateTime },
    /// The store already held a newer login (the CLI refreshed, or a new `/login`): used as is.
    Adopted { expires_at: Option<OffsetDateTime> },
    /// Not due yet (`at`), or nothing to refresh (`None`: no refresh token or no expiry).
    NotDue { at: Option<OffsetDateTime> },
    /// Too close to the CLI's own refresh (Claude Code: the last 10 minutes): the host CLI
    /// refreshes it on its next use.
    LeftToCli,
    /// The refresh token was rejected; waits for a new login in the source.
    NeedsLogin,
    /// A transient failure; the next scheduled try is at `until`.
    BackingOff { until: OffsetDateTime },
}

/// What a refresh would do now (`keyferry refresh --dry-run`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Would {
    Refresh,
    FinishPendingWriteback,
    Wait { until: OffsetDateTime },
    LeaveToCli,
    NothingToRefresh,
    NeedsLogin,
}

/// Refresher failures. Cloneable so every joiner of a flight gets the same answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("no refreshable credential named {0:?}")]
    Unknown(String),
    #[error("{name}: {source}")]
    Refresh {
        name: String,
        #[source]
        source: RefreshError,
    },
    #[error("{name}: cannot read the login: {source}")]
    Read {
        name: String,
        #[source]
        source: Arc<WritebackError>,
    },
    #[error("{name}: {location} holds no {cli} login ({reason})")]
    NotALogin {
        name: String,
        location: String,
        cli: &'static str,
        reason: String,
    },
    #[error("{name}: the new login could not be written back{}: {source}", if *.kept { " (kept in the keychain, retried on the next trigger)" } else { " and could not be kept in the keychain either" })]
    Writeback {
        name: String,
        kept: bool,
        #[source]
        source: Arc<WritebackError>,
    },
    #[error("{name}: {source}")]
    Lock {
        name: String,
        #[source]
        source: Arc<LockError>,
    },
    #[error("{name}: refresh journal: {source}")]
    Journal {
        name: String,
        #[source]
        source: Arc<StoreError>,
    },
}

impl Error {
    /// Stable code for events, audit entries and replies.
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Unknown(_) => ErrorCode::UnknownCredential,
            Self::Refresh { source, .. } => source.code(),
            Self::Read { .. } | Self::NotALogin { .. } => ErrorCode::LoginUnreadable,
            Self::Writeback { .. } => ErrorCode::WritebackFailed,
            Self::Lock { .. } => ErrorCode::CliRefreshing,
            Self::Journal { .. } => ErrorCode::JournalFailed,
        }
    }

    /// Whether the login itself is dead (only a new `/login` helps).
    #[must_use]
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Refresh { source, .. } if source.is_permanent())
    }
}

/// What subscribers hear; never a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Refreshed {
        name: String,
        expires_at: OffsetDateTime,
    },
    Adopted {
        name: String,
    },
    NeedsLogin {
        name: String,
        message: String,
    },
    Failed {
        name: String,
        code: ErrorCode,
        message: String,
        retry_at: Option<OffsetDateTime>,
    },
}

/// A non-secret view of one login's refresh state (for `status`, `show`, the tray).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub needs_login: bool,
    pub pending_writeback: bool,
    pub retry_at: Option<OffsetDateTime>,
    pub expires_at: Option<OffsetDateTime>,
    pub last_error: Option<String>,
    /// What to run when `needs_login` ("run `codex login`").
    pub relogin_hint: &'static str,
}

#[derive(Default)]
struct State {
    generation: u64,
    last: Option<Result<Outcome, Error>>,
    /// Fingerprint of the refresh token the endpoint rejected; cleared when the source changes.
    dead: Option<String>,
    backoff: plan::Backoff,
    retry_at: Option<OffsetDateTime>,
    expires_at: Option<OffsetDateTime>,
    has_refresh: bool,
    /// When the CLI starts refreshing the login by itself (the provider's rule).
    cli_from: Option<OffsetDateTime>,
    /// How long the last login Keyferry obtained lasted, once one was obtained.
    lifetime: Option<Duration>,
    known_access: Option<String>,
    pending: bool,
    last_error: Option<String>,
}

struct Entry {
    name: String,
    provider: &'static dyn LoginProvider,
    token_url: String,
    refresh_ahead: Duration,
    source: Arc<dyn LoginSource>,
    flight: tokio::sync::Mutex<()>,
    state: Mutex<State>,
}

impl Entry {
    /// `refresh_ahead`, but at most half the lifetime of the logins the endpoint hands out:
    /// Google's last an hour, so the default 60 minutes ahead would make every new login
    /// due at once and refresh it on every trigger.
    fn ahead(&self, st: &State) -> Duration {
        st.lifetime
            .map_or(self.refresh_ahead, |l| self.refresh_ahead.min(l / 2))
    }
}

/// The refresher for all logins the agent manages.
pub struct Refresher {
    client: HttpClient,
    config: OauthConfig,
    journal: Arc<dyn Store>,
    logins: Mutex<HashMap<String, Arc<Entry>>>,
    events: broadcast::Sender<Event>,
    usage: usage::UsageCache,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    IfDue,
    Force,
    RecoverOnly,
}

impl Refresher {
    /// # Errors
    /// The extra CA file is unusable; `token_url` or `usage_url` breaks the URL rule (https,
    /// or plain http to loopback; no query, fragment or credentials).
    pub fn new(mut config: OauthConfig, journal: Arc<dyn Store>) -> Result<Self, TransportError> {
        // `[oauth] token_url` is Anthropic's: one lookup by provider id serves all of them.
        config.token_urls.insert(
            login::claude::CLAUDE.provider_id().to_owned(),
            config.token_url.clone(),
        );
        // A URL breaking the rules fails the start, not every refresh after it.
        crate::http::parse_upstream(&config.token_url)?;
        crate::http::parse_upstream(&config.usage_url)?;
        for url in config.token_urls.values().chain(config.usage_urls.values()) {
            crate::http::parse_upstream(url)?;
        }
        let client = HttpClient::new(&TransportConfig {
            extra_ca_file: config.extra_ca_file.clone(),
            timeout: config.timeout,
            ..TransportConfig::default()
        })?;
        Ok(Self {
            client,
            config,
            journal,
            logins: Mutex::new(HashMap::new()),
            events: broadcast::channel(64).0,
            usage: usage::UsageCache::default(),
        })
    }

    /// Registers (or replaces) a Claude Code login with `refresh = "auto"` and the default
    /// refresh-ahead.
    pub fn add(&self, name: &str, source: Arc<dyn LoginSource>) {
        self.add_with(name, source, self.config.refresh_ahead);
    }

    /// Registers (or replaces) a Claude Code login refreshed `refresh_ahead` before expiry
    /// (`refresh_ahead_mins` of the credential).
    pub fn add_with(&self, name: &str, source: Arc<dyn LoginSource>, refresh_ahead: Duration) {
        self.add_login(name, &login::claude::CLAUDE, source, Some(refresh_ahead));
    }

    /// Registers (or replaces) `provider`'s login kept in `source`, refreshed `refresh_ahead`
    /// (default: the config's) before expiry.
    pub fn add_login(
        &self,
        name: &str,
        provider: &'static dyn LoginProvider,
        source: Arc<dyn LoginSource>,
        refresh_ahead: Option<Duration>,
    ) {
        let entry = Arc::new(Entry {
            name: name.to_owned(),
            provider,
            token_url: self.token_url(provider),
            refresh_ahead: refresh_ahead.unwrap_or(self.config.refresh_ahead),
            source,
            flight: tokio::sync::Mutex::new(()),
            state: Mutex::new(State::default()),
        });
        lock(&self.logins).insert(name.to_owned(), entry);
    }

    pub fn remove(&self, name: &str) {
        lock(&self.logins).remove(name);
    }

    #[must_use]
    pub fn names(&self) -> Vec<String> {
        lock(&self.logins).keys().cloned().collect()
    }

    /// Whose login `name` is.
    #[must_use]
    pub fn provider(&self, name: &str) -> Option<&'static dyn LoginProvider> {
        self.entry(name).ok().map(|e| e.provider)
    }

    fn token_url(&self, provider: &dyn LoginProvider) -> String {
        self.config
            .token_urls
            .get(provider.provider_id())
            .cloned()
            .unwrap_or_else(|| provider.default_token_url().to_owned())
    }

    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    #[must_use]
    pub fn client(&self) -> &HttpClient {
        &self.client
    }

    #[must_use]
    pub fn config(&self) -> &OauthConfig {
        &self.config
    }

    /// Refreshes if due (a rescan, a file change, the schedule). Concurrent triggers for one
    /// login share one flight and its result.
    ///
    /// # Errors
    /// See [`Error`]; a transient one schedules a jittered retry.
    pub async fn trigger(&self, name: &str) -> Result<Outcome, Error> {
        self.single_flight(name, Mode::IfDue).await
    }

    /// Refreshes now even if not yet due (`keyferry refresh NAME`); still never inside the
    /// CLI's window, never with a rejected refresh token, never with a spent one.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn refresh_now(&self, name: &str) -> Result<Outcome, Error> {
        self.single_flight(name, Mode::Force).await
    }

    /// Finishes a write-back interrupted by a crash or a failing source; call at start-up.
    /// `Ok(None)` when nothing was pending.
    ///
    /// # Errors
    /// The source still cannot be written (the pending item stays).
    pub async fn recover_pending(&self, name: &str) -> Result<Option<Outcome>, Error> {
        self.single_flight(name, Mode::RecoverOnly)
            .await
            .map(|o| match o {
                Outcome::NotDue { at: None } => None,
                other => Some(other),
            })
    }

    /// Says what [`Self::refresh_now`] (`force`) or [`Self::trigger`] would do, without a call.
    ///
    /// # Errors
    /// The login cannot be read.
    pub async fn dry_run(&self, name: &str, force: bool) -> Result<Would, Error> {
        let entry = self.entry(name)?;
        flight::dry_run(self, &entry, force).await
    }

    /// The next time the schedule should trigger `name` (`None`: nothing to do until its
    /// source changes).
    #[must_use]
    pub fn next_check(&self, name: &str) -> Option<OffsetDateTime> {
        let entry = self.entry(name).ok()?;
        let st = lock(&entry.state);
        if st.dead.is_some() {
            return None;
        }
        let due = plan::plan(
            st.expires_at,
            st.has_refresh,
            OffsetDateTime::now_utc(),
            entry.ahead(&st),
            st.cli_from,
        );
        let at = match due {
            plan::Due::Now => OffsetDateTime::now_utc(),
            plan::Due::At(t) => t,
            plan::Due::LeaveToCli | plan::Due::Never => return None,
        };
        Some(st.retry_at.map_or(at, |r| r.max(at)))
    }

    /// Subscription usage of login `name` on `provider`'s endpoint (its current access
    /// token, scopes and account in `ask`), fetched at most every 5 minutes; a login that
    /// can have none (a setup-token, an API key) says why.
    ///
    /// # Errors
    /// See [`usage::UsageError`].
    pub async fn usage(
        &self,
        name: &str,
        provider: &'static dyn LoginProvider,
        ask: &usage::UsageAsk<'_>,
    ) -> Result<usage::Usage, usage::UsageError> {
        let Some(default) = provider.default_usage_url() else {
            return Err(usage::UsageError::NotASubscription);
        };
        let url = if provider.provider_id() == login::claude::CLAUDE.provider_id() {
            self.config.usage_url.as_str()
        } else {
            self.config
                .usage_urls
                .get(provider.provider_id())
                .map_or(default, String::as_str)
        };
        self.usage.get(&self.client, url, name, provider, ask).await
    }

    /// The login obtained but not yet written back to its source (journaled), if any: the
    /// agent serves it meanwhile, since the refresh revoked the access token the source
    /// still holds.
    pub async fn pending_login(&self, name: &str) -> Option<journal::Pending> {
        let store = Arc::clone(&self.journal);
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || journal::load(store.as_ref(), &name))
            .await
            .ok()?
            .ok()?
    }

    #[must_use]
    pub fn status(&self, name: &str) -> Option<Status> {
        let entry = self.entry(name).ok()?;
        let st = lock(&entry.state);
        Some(Status {
            needs_login: st.dead.is_some(),
            pending_writeback: st.pending,
            retry_at: st.retry_at,
            expires_at: st.expires_at,
            last_error: st.last_error.clone(),
            relogin_hint: entry.provider.relogin_hint(),
        })
    }

    /// Triggers every login whose time has come, then sleeps until the next one (at most a
    /// minute, so a changed clock or login is noticed). Runs until the task is dropped.
    pub async fn run_schedule(self: Arc<Self>) {
        for name in self.names() {
            if let Err(e) = self.recover_pending(&name).await {
                tracing::warn!(credential = %name, error = %e, "pending refresh not finished");
            }
            let _ = self.dry_run(&name, false).await;
        }
        loop {
            let mut sleep = Duration::from_secs(60);
            for name in self.names() {
                let next = self.next_check(&name);
                let now = OffsetDateTime::now_utc();
                match next {
                    Some(at) if at <= now => {
                        if let Err(e) = self.trigger(&name).await {
                            tracing::warn!(credential = %name, error = %e, "refresh failed");
                        }
                    }
                    Some(at) => sleep = sleep.min((at - now).unsigned_abs()),
                    None => {}
                }
            }
            tokio::time::sleep(sleep.max(Duration::from_millis(200))).await;
        }
    }

    fn entry(&self, name: &str) -> Result<Arc<Entry>, Error> {
        lock(&self.logins)
            .get(name)
            .cloned()
            .ok_or_else(|| Error::Unknown(name.to_owned()))
    }

    async fn single_flight(&self, name: &str, mode: Mode) -> Result<Outcome, Error> {
        let entry = self.entry(name)?;
        let seen = lock(&entry.state).generation;
        let _flight = entry.flight.lock().await;
        {
            let st = lock(&entry.state);
            if st.generation != seen {
                if let Some(last) = &st.last {
                    return last.clone();
                }
            }
        }
        let result = flight::run(self, &entry, mode).await;
        let mut st = lock(&entry.state);
        let now = OffsetDateTime::now_utc();
        match &result {
            // Any failure short of a dead login (lock busy, unreadable source, failed
            // write-back) waits its backoff, so the schedule never spins on it.
            Err(e) if !e.is_permanent() && !st.retry_at.is_some_and(|t| t > now) => {
                let delay = st.backoff.next_delay(None);
                st.retry_at = Some(now + delay);
            }
            Ok(Outcome::Refreshed { .. } | Outcome::Adopted { .. }) => {
                st.backoff.reset();
                st.retry_at = None;
            }
            _ => {}
        }
        st.generation += 1;
        st.last_error = result.as_ref().err().map(ToString::to_string);
        st.last = Some(result.clone());
        result
    }

    fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
