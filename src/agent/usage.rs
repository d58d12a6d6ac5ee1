//! Subscription usage through the agent: one credential (`usage`) or every Claude credential
//! inside `status` (`usage: true`); the refresher's cache keeps endpoint calls to one per
//! login every 5 minutes, and only when something asks.

use std::sync::Arc;
use std::time::Duration;

use super::Agent;
use crate::domain::{AuditOutcome, Op};
use crate::domain::{CredentialUsage, ErrorBody, ErrorCode, Peer, UsageState};
use crate::oauth::login::{self, LoginProvider};
use crate::oauth::usage::{Usage, UsageAsk, UsageError};
use crate::policy::Verdict;
use crate::protocol::Status;
use crate::secret::Secret;

/// How long `status` waits for a usage endpoint that has not answered yet. The call goes on
/// and fills the cache, so the next `status` has the figure; a dead endpoint never holds up
/// the reply.
const STATUS_WAIT: Duration = Duration::from_secs(3);

impl Agent {
    /// Subscription usage of `name`'s login, polled at most every 5 minutes and only when
    /// asked; a token without `user:profile` (a setup-token) says why there is no figure.
    ///
    /// # Errors
    /// No such credential or token; no scope; the endpoint failed.
    pub async fn usage(&self, name: &str, peer: &Peer) -> Result<Usage, ErrorBody> {
        self.may_read(name, peer, None).await?;
        let login = {
            let state = self.read_state();
            let slot = state.slots.get(name).ok_or_else(|| self.unknown(name))?;
            let c = slot.credential.as_ref().ok_or_else(|| {
                ErrorBody::new(ErrorCode::NotFound, format!("no token found for {name:?}"))
            })?;
            Login::of(c).ok_or_else(|| {
                ErrorBody::new(
                    ErrorCode::Unsupported,
                    format!(
                        "{name:?} is a {} credential, which has no usage figures",
                        c.kind.as_str()
                    ),
                )
            })?
        };
        let usage = self.fetch_usage(name, login).await?;
        let _ = self.audit_only(
            Op::Usage,
            Some(name),
            AuditOutcome::done("served"),
            None,
            peer,
        );
        Ok(usage)
    }

    /// [`Agent::status`] plus the usage of every credential holding a Claude token (an OAuth
    /// login, or a setup-token that says why it has none). Waits at most [`STATUS_WAIT`].
    /// `peer` (a socket client; `None` in-process) must be allowed to read a credential
    /// without asking: figures are a use of its token, so they never prompt and a denied
    /// peer gets the policy's refusal instead. Each figure served is audited. `only`: just
    /// that credential's figures.
    pub async fn status_with_usage(&self, peer: Option<&Peer>, only: Option<&str>) -> Status {
        let mut status = self.status();
        let locked = status.locked;
        let logins: Vec<(String, Login)> = {
            let state = self.read_state();
            state
                .slots
                .iter()
                .filter(|(name, _)| only.map_or(true, |o| o == name.as_str()))
                .filter_map(|(name, slot)| {
                    Some((name.clone(), Login::of(slot.credential.as_ref()?)?))
                })
                .collect()
        };
        let deadline = tokio::time::Instant::now() + STATUS_WAIT;
        let mut pending = Vec::new();
        for (name, login) in logins {
            let ready = if locked {
                let why = "serving is locked; unlock to see usage figures";
                Err(ErrorBody::new(ErrorCode::AgentLocked, why))
            } else {
                self.may_use_quietly(&name, peer)
                    .and_then(|()| login.ready().map_err(|e| e.body()))
                    .and_then(|()| self.usage_refresher(&name))
            };
            if let (Ok(_), Some(peer)) = (&ready, peer) {
                // Audited, but not "the last access": the tray asks every 5 minutes, and
                // that line is for who got a token.
                let _ = self.audit_only(
                    Op::Usage,
                    Some(&name),
                    AuditOutcome::done("served"),
                    None,
                    peer,
                );
            }
            // Spawned so an answer that comes after the deadline still fills the cache.
            let task = ready.map(|refresher| {
                let who = name.clone();
                tokio::spawn(async move {
                    refresher
                        .usage(&who, login.provider, &login.ask())
                        .await
                        .map_err(|e| e.body())
                })
            });
            pending.push((name, task));
        }
        for (name, task) in pending {
            let state = match task {
                Err(body) => UsageState::Unavailable(body),
                Ok(task) => match tokio::time::timeout_at(deadline, task).await {
                    Ok(Ok(Ok(u))) => UsageState::Known(u),
                    Ok(Ok(Err(body))) => UsageState::Unavailable(body),
                    Ok(Err(join)) => UsageState::Unavailable(ErrorBody::new(
                        ErrorCode::Internal,
                        format!("usage lookup failed: {join}"),
                    )),
                    Err(_) => UsageState::Unavailable(ErrorBody::new(
                        ErrorCode::UsageUnavailable,
                        "the usage endpoint has not answered yet; ask again in a moment",
                    )),
                },
            };
            status.usage.push(CredentialUsage { name, state });
        }
        status
    }

    async fn fetch_usage(&self, name: &str, login: Login) -> Result<Usage, ErrorBody> {
        login.ready().map_err(|e| e.body())?;
        self.usage_refresher(name)?
            .usage(name, login.provider, &login.ask())
            .await
            .map_err(|e| e.body())
    }

    /// The policy for `name` and `peer`, without an approval prompt: `ask` is answered by
    /// `keyferry usage NAME` (which asks), never by a `status` that happens to list it.
    fn may_use_quietly(&self, name: &str, peer: Option<&Peer>) -> Result<(), ErrorBody> {
        let Some(peer) = peer else { return Ok(()) };
        match self.policy.check(name, peer) {
            Verdict::Allow => Ok(()),
            Verdict::Deny { code, message } => Err(ErrorBody::new(code, message)),
            Verdict::Ask => Err(ErrorBody::new(
                ErrorCode::NotAllowed,
                format!(
                    "{name:?} needs approval; `keyferry usage {name}` asks for it and shows the figures"
                ),
            )),
        }
    }

    /// The refresher holds the HTTP client and the cache; without it (no chain reads Claude
    /// Code's login, or `refresh = "off"` everywhere) there are no figures.
    fn usage_refresher(&self, name: &str) -> Result<Arc<crate::oauth::Refresher>, ErrorBody> {
        self.logins.refresher().cloned().ok_or_else(|| {
            ErrorBody::new(
                ErrorCode::Unsupported,
                format!("{name:?} is not a login the agent manages"),
            )
        })
    }
}

/// What a usage lookup of one credential needs, copied out of its slot.
struct Login {
    provider: &'static dyn LoginProvider,
    token: Secret,
    scopes: Vec<String>,
    account: Option<String>,
}

impl Login {
    /// `None` for kinds with no usage figures (Gemini, API keys, opaque tokens).
    fn of(c: &crate::credential::Credential) -> Option<Self> {
        Some(Self {
            provider: login::for_usage(c.kind)?,
            token: c.token.clone(),
            scopes: c.scopes.clone(),
            account: c.account.clone(),
        })
    }

    fn ask(&self) -> UsageAsk<'_> {
        UsageAsk {
            access: &self.token,
            scopes: &self.scopes,
            account: self.account.as_deref(),
        }
    }

    fn ready(&self) -> Result<(), UsageError> {
        self.provider.usage_ready(&self.ask())
    }
}
