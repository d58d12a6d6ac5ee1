//! The agent as the one refresher of the host CLIs' own logins: every credential whose chain
//! reads `claude-login`, a CLI's login file (Codex's `auth.json`, Gemini CLI's
//! `oauth_creds.json`) or Codex's keyring item, and does not say `refresh = "off"`, is handed to the
//! [`crate::oauth::Refresher`]; what it writes back is re-resolved at once, so every sink,
//! the gateway and `watch` subscribers follow in the same instant.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::{lock, Agent};
use crate::config::{Config, RefreshMode};
use crate::credential::rfc3339;
use crate::credential::Credential;
use crate::domain::{AuditOutcome, Op};
use crate::domain::{ErrorBody, ErrorCode, Peer};
use crate::oauth::journal::fingerprint;
use crate::oauth::login::codex_store::{self, CodexLogin};
use crate::oauth::login::{self, LoginProvider};
use crate::oauth::writeback::{CredentialsFile, KeychainLogin, LoginSource};
use crate::oauth::{Event as RefreshEvent, OauthConfig, Outcome, Refresher, Would};
use crate::protocol::{Event, RefreshReport};
use crate::source::chain::{claude_login, LoginLocation, Resolved};
use crate::source::Source;
use crate::store::ItemId;

/// Which login a credential's chain reads, and where.
enum Managed {
    /// `claude-login`: a file or a keychain item, as the platform keeps it.
    ClaudeLogin,
    /// A CLI's own login file (`file:~/.codex/auth.json`, `file:~/.gemini/oauth_creds.json`).
    File(&'static dyn LoginProvider, PathBuf),
    /// Codex's keyring item (`keychain:Codex Auth#cli|…`), with the auth.json the same chain
    /// reads after it (`cli_auth_credentials_store = "auto"`).
    CodexKeyring(ItemId, Option<PathBuf>),
}

/// The login `chain` reads, if Keyferry can refresh it.
fn managed(chain: &[Source]) -> Option<Managed> {
    if chain.iter().any(|s| matches!(s, Source::ClaudeLogin)) {
        return Some(Managed::ClaudeLogin);
    }
    let codex_item = chain.iter().find_map(|s| match s {
        Source::Keychain {
            service,
            account: Some(account),
        } if service == codex_store::KEYRING_SERVICE => Some(ItemId::new(service, account)),
        _ => None,
    });
    if let Some(item) = codex_item {
        let file = chain.iter().find_map(|s| match s {
            Source::File { path } => {
                let path = crate::paths::expand(path);
                (login::by_login_file(&path)?.kind() == login::codex::CODEX.kind()).then_some(path)
            }
            _ => None,
        });
        return Some(Managed::CodexKeyring(item, file));
    }
    chain.iter().find_map(|s| match s {
        Source::File { path } => {
            let path = crate::paths::expand(path);
            login::by_login_file(&path).map(|p| Managed::File(p, path))
        }
        _ => None,
    })
}

/// The refresher for `config`'s CLI logins; `None` when there is none to refresh.
///
/// # Errors
/// The keychain for the journal cannot be opened, or the endpoints are unusable.
pub(super) fn build(config: &Config) -> Result<Option<Refresher>, String> {
    let env = |k: &str| std::env::var(k).ok();
    let logins: Vec<(String, Managed, Option<u64>)> = config
        .names()
        .into_iter()
        .filter_map(|name| {
            let spec = config.spec(&name).ok()?;
            let user = config.credentials.get(&name);
            if user.is_some_and(|c| c.refresh == RefreshMode::Off) {
                return None;
            }
            let managed = managed(&spec.chain)?;
            Some((name, managed, user.and_then(|c| c.refresh_ahead_mins)))
        })
        .collect();
    if logins.is_empty() {
        return Ok(None);
    }
    let store: Arc<dyn crate::store::Store> = Arc::from(
        crate::store::open_with(&config.keychain.store_options()).map_err(|e| e.to_string())?,
    );
    let refresher =
        Refresher::new(oauth_config(config), Arc::clone(&store)).map_err(|e| e.to_string())?;
    let location = claude_login(&env, cfg!(target_os = "macos"));
    for (name, managed, ahead) in logins {
        let ahead = ahead.map(|m| Duration::from_secs(m * 60));
        let (provider, source): (&'static dyn LoginProvider, Arc<dyn LoginSource>) = match managed {
            Managed::File(provider, path) => (provider, Arc::new(CredentialsFile { path })),
            Managed::CodexKeyring(item, file) => {
                let lock_dir = file
                    .as_deref()
                    .and_then(std::path::Path::parent)
                    .map(std::path::Path::to_path_buf)
                    .or_else(|| codex_store::home_of(&item.account, &env));
                if lock_dir.is_none() {
                    // Said once, when the refresher is set up: no CODEX_HOME, no lock file.
                    tracing::warn!(
                        credential = %name,
                        "Codex's auth lock is not taken for this keyring login: no Codex home could be resolved for it (no auth.json path in its source, and its keyring account is not the one of $CODEX_HOME, else ~/.codex), so a codex committing a refresh at the same time is not held off; start the agent with CODEX_HOME set to that login's Codex home"
                    );
                }
                (
                    &login::codex::CODEX,
                    Arc::new(CodexLogin {
                        store: Arc::clone(&store),
                        lock_dir,
                        item,
                        file,
                    }),
                )
            }
            Managed::ClaudeLogin => (
                &login::claude::CLAUDE,
                match &location {
                    LoginLocation::File(path) => Arc::new(CredentialsFile { path: path.clone() }),
                    LoginLocation::Keychain(id) => Arc::new(KeychainLogin {
                        store: Arc::clone(&store),
                        id: id.clone(),
                        lock_dir: Some(
                            env("CLAUDE_CONFIG_DIR")
                                .map_or_else(|| crate::paths::home().join(".claude"), Into::into),
                        ),
                    }),
                },
            ),
        };
        refresher.add_login(&name, provider, source, ahead);
    }
    Ok(Some(refresher))
}

/// `[oauth]` plus each `[providers.ID] token_url`; a provider whose CLI reads a variable
/// for its endpoint (`CODEX_REFRESH_TOKEN_URL_OVERRIDE`) gets that when the config is silent,
/// so Keyferry refreshes where the CLI would.
fn oauth_config(config: &Config) -> OauthConfig {
    let mut oc = OauthConfig::default();
    if let Some(u) = &config.oauth.token_url {
        oc.token_url.clone_from(u);
    }
    if let Some(u) = &config.oauth.usage_url {
        oc.usage_url.clone_from(u);
    }
    oc.extra_ca_file.clone_from(&config.oauth.extra_ca_file);
    for p in login::ALL {
        let url = config
            .providers
            .get(p.provider_id())
            .and_then(|c| c.token_url.clone())
            .or_else(|| p.token_url_env().and_then(|v| std::env::var(v).ok()));
        if let Some(url) = url {
            oc.token_urls.insert(p.provider_id().to_owned(), url);
        }
        if let Some(url) = config
            .providers
            .get(p.provider_id())
            .and_then(|c| c.usage_url.clone())
        {
            oc.usage_urls.insert(p.provider_id().to_owned(), url);
        }
    }
    oc
}

/// What `refresh --dry-run` says; `cli` and `hint` are the login's provider's.
fn would_text(would: Would, cli: &str, hint: &str) -> String {
    match would {
        Would::Refresh => "would refresh now".to_owned(),
        Would::FinishPendingWriteback => "would finish an interrupted write-back".to_owned(),
        Would::Wait { until } => format!(
            "not due; would refresh at {}",
            rfc3339(until).unwrap_or_default()
        ),
        Would::LeaveToCli => format!("inside {cli}'s own refresh window; left to the CLI"),
        Would::NothingToRefresh => "nothing to refresh (no refresh token)".to_owned(),
        Would::NeedsLogin => format!("the login is dead; {hint}"),
    }
}

/// What `refresh` says it did.
fn outcome_text(outcome: Outcome, cli: &str, hint: &str) -> String {
    match outcome {
        Outcome::Refreshed { expires_at } => format!(
            "refreshed; expires {}",
            rfc3339(expires_at).unwrap_or_default()
        ),
        Outcome::Adopted { .. } => "the store already held a newer login; adopted it".to_owned(),
        Outcome::NotDue { .. } => "not due".to_owned(),
        Outcome::LeftToCli => format!("left to {cli} (inside its own refresh window)"),
        Outcome::NeedsLogin => format!("the login is dead; {hint}"),
        Outcome::BackingOff { until } => format!(
            "a recent failure; retrying at {}",
            rfc3339(until).unwrap_or_default()
        ),
    }
}

fn the_refresher_peer() -> Peer {
    Peer {
        uid: crate::paths::current_uid(),
        pid: i32::try_from(std::process::id()).ok(),
        exe: Some("keyferry refresher".into()),
        sandbox: None,
    }
}

impl Agent {
    /// Runs the refresher's schedule and follows its events until the task is dropped.
    pub(super) async fn run_refresher(self: Arc<Self>) {
        let Some(refresher) = self.logins.refresher().cloned() else {
            return std::future::pending().await;
        };
        let mut events = refresher.subscribe();
        let schedule = tokio::spawn(Arc::clone(&refresher).run_schedule());
        let _abort = AbortOnDrop(schedule);
        loop {
            let ev = match events.recv().await {
                Ok(ev) => ev,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            self.on_refresh_event(ev).await;
        }
    }

    async fn on_refresh_event(self: &Arc<Self>, ev: RefreshEvent) {
        let peer = the_refresher_peer();
        match ev {
            RefreshEvent::Refreshed { name, expires_at } => {
                let started = Instant::now();
                // Re-read what was written back: slots, sinks and the gateway follow.
                self.refresh(vec![name.clone()]).await;
                let followed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                tracing::info!(credential = %name, followed_us, "refreshed; every sink rewritten");
                self.record(
                    Op::Refresh,
                    Some(&name),
                    AuditOutcome::done("refreshed"),
                    None,
                    &peer,
                );
                self.emit(Event::Refreshed {
                    name,
                    expires_at: rfc3339(expires_at).unwrap_or_default(),
                    followed_us,
                });
            }
            RefreshEvent::Adopted { name } => {
                self.refresh(vec![name.clone()]).await;
                self.record(
                    Op::Refresh,
                    Some(&name),
                    AuditOutcome::done("adopted"),
                    None,
                    &peer,
                );
            }
            RefreshEvent::NeedsLogin { name, message } => {
                self.record(
                    Op::Refresh,
                    Some(&name),
                    AuditOutcome::done("needs_login"),
                    Some(&ErrorCode::NeedsLogin),
                    &peer,
                );
                super::expiry::notify_now(
                    self,
                    format!("{name}: log in again"),
                    format!(
                        "{message} on this machine; Keyferry picks the new login up by itself."
                    ),
                );
                self.emit(Event::NeedsLogin { name, message });
            }
            RefreshEvent::Failed {
                name,
                code,
                message,
                ..
            } => {
                tracing::warn!(credential = %name, code = code.as_str(), %message, "refresh failed; will retry");
                self.record(
                    Op::Refresh,
                    Some(&name),
                    AuditOutcome::Failed,
                    Some(&code),
                    &peer,
                );
                // The source still holds the access token the refresh revoked: serve the
                // journaled login meanwhile (every sink follows), and subscribers (the tray)
                // see why until the write-back lands.
                if code == ErrorCode::WritebackFailed {
                    self.adopt_pending_login(&name).await;
                }
                if let Some(status) = self.snapshot().remove(&name) {
                    self.emit(Event::Changed { status });
                }
            }
        }
    }

    /// `keyferry refresh`: refreshes `name` now through the same single flight (or says
    /// what would happen).
    ///
    /// # Errors
    /// Not a refreshable login; the refresh failed.
    pub async fn refresh_login(
        &self,
        name: &str,
        dry_run: bool,
        peer: &Peer,
    ) -> Result<RefreshReport, ErrorBody> {
        // What is served decides: a setup-token in the keychain is not made refreshable by
        // a login file further down the chain.
        let served = {
            let state = self.read_state();
            state
                .slots
                .get(name)
                .and_then(|s| s.credential.as_ref())
                .map(|c| c.kind)
        };
        if let Some(why) = served.and_then(crate::credential::Kind::not_refreshable) {
            return Ok(RefreshReport {
                name: name.to_owned(),
                outcome: why.to_owned(),
                needs_login: false,
            });
        }
        let refresher = self.logins.refresher().ok_or_else(|| {
            ErrorBody::new(
                ErrorCode::Unsupported,
                format!("{name:?} is not refreshed by Keyferry: only credentials whose chain reads claude-login, a Codex auth.json or keyring item (`Codex Auth`) or a Gemini oauth_creds.json are, and not with refresh = \"off\""),
            )
        })?;
        let (cli, hint) = refresher
            .provider(name)
            .map_or(("the CLI", "log in again"), |p| (p.cli(), p.relogin_hint()));
        let err = |e: crate::oauth::Error| {
            let code = if e.is_permanent() {
                ErrorCode::NeedsLogin
            } else {
                e.code()
            };
            ErrorBody::new(code, e.to_string())
        };
        let outcome = if dry_run {
            would_text(refresher.dry_run(name, true).await.map_err(err)?, cli, hint)
        } else {
            let result = refresher.refresh_now(name).await;
            self.record(
                Op::Refresh,
                Some(name),
                if result.is_ok() {
                    AuditOutcome::done("requested")
                } else {
                    AuditOutcome::Failed
                },
                None,
                peer,
            );
            outcome_text(result.map_err(err)?, cli, hint)
        };
        Ok(RefreshReport {
            name: name.to_owned(),
            outcome,
            needs_login: refresher.status(name).is_some_and(|s| s.needs_login),
        })
    }
}

/// A refreshed login not yet written back, and the refresh token it replaced in the source.
pub(super) struct PendingLogin {
    replaces: String,
    credential: Credential,
}

/// The refresh side of the agent: the one refresher, and what it refreshed but could not
/// write back yet.
#[derive(Default)]
pub(super) struct Logins {
    /// The one refresher of the CLIs' logins, when a chain reads one.
    refresher: OnceLock<Arc<Refresher>>,
    /// Refreshed logins whose write-back is pending, served instead of the (revoked) login
    /// their source still holds.
    pending: Mutex<BTreeMap<String, PendingLogin>>,
}

impl Logins {
    /// Set once, by [`super::start`], before anything is served; a second call is ignored.
    pub(super) fn set_refresher(&self, refresher: Refresher) {
        let _ = self.refresher.set(Arc::new(refresher));
    }

    pub(super) fn refresher(&self) -> Option<&Arc<Refresher>> {
        self.refresher.get()
    }

    /// While a write-back is pending and the source still holds the login it replaces, the
    /// pending login is what is served; once the source holds anything else (the write-back
    /// landed, or a new `/login`), the source wins again.
    pub(super) fn use_pending(&self, name: &str, resolved: &mut Resolved) {
        // Only a login the refresher reads (never an env var or keychain token that merely
        // shares the name) is replaced; the refresh-token check below makes it exact.
        if !matches!(resolved.source, Source::ClaudeLogin | Source::File { .. }) {
            return;
        }
        let mut pending = lock(&self.pending);
        let Some(p) = pending.get(name) else { return };
        let source_rt = resolved.credential.refresh_token.as_ref().map(fingerprint);
        if source_rt.as_deref() == Some(p.replaces.as_str()) {
            resolved.credential = p.credential.clone();
            resolved.origin = format!("{} (refreshed; write-back pending)", resolved.origin);
        } else {
            pending.remove(name);
        }
    }
}

impl Agent {
    async fn adopt_pending_login(self: &Arc<Self>, name: &str) {
        let Some(refresher) = self.logins.refresher() else {
            return;
        };
        let Some(pending) = refresher.pending_login(name).await else {
            return;
        };
        match Credential::parse(&pending.document, "the pending refresh") {
            Ok(credential) => {
                lock(&self.logins.pending).insert(
                    name.to_owned(),
                    PendingLogin {
                        replaces: pending.replaces,
                        credential,
                    },
                );
                self.refresh(vec![name.to_owned()]).await;
            }
            Err(e) => tracing::warn!(credential = %name, error = %e, "pending login unreadable"),
        }
    }
}

/// Stops the schedule task with the agent.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
