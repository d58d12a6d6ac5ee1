//! The agent's side of the gateway: grants kept in the state directory, the current token of
//! each credential read from the agent's slots at request time (so a refresh or reroll
//! applies to the very next request), and every request metered and audited.

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use time::OffsetDateTime;

use super::Agent;
use crate::credential::rfc3339;
use crate::domain::{AuditOutcome, Op};
use crate::domain::{ErrorBody, ErrorCode, GrantInfo, Peer};
use crate::gateway::{
    Denial, GatewayContext, GrantView, GrantsFile, Lent, Listeners, NewGrant, RefusedSummary,
    RequestRecord, TokenError, Upstream, Upstreams,
};
use crate::protocol::{GrantIssued, WireSecret};
use crate::provider::GatewayProvider;

/// How often metered usage is written to the grants file (one write per request would be
/// a disk write on the hot path).
const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// The gateway as the agent runs it.
pub struct AgentGateway {
    agent: Weak<Agent>,
    grants: Mutex<GrantsFile>,
    upstreams: Upstreams,
    /// Every configured listener and its state, once the gateway runs.
    listeners: std::sync::OnceLock<Arc<Listeners>>,
    /// Why the gateway does not listen at all, when it does not.
    down: Mutex<Option<String>>,
    /// Finished requests whose audit line `audit_loop` has yet to write: a line is JSON
    /// and a write(2), and `record` runs before the answer's last bytes are flushed.
    audits: Mutex<Vec<RequestRecord>>,
    audit_due: tokio::sync::Notify,
}

fn err(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, message)
}

impl AgentGateway {
    /// Opens the grants file; expired grants (an ssh session killed with -9) are dropped.
    ///
    /// # Errors
    /// An unreadable grants file or an unusable upstream.
    pub fn new(agent: &Arc<Agent>) -> Result<Self, String> {
        let cfg = &agent.broker.config.gateway;
        let upstreams = cfg
            .upstreams(&agent.broker.config.providers)
            .map_err(|e| e.to_string())?;
        let mut file = GrantsFile::open(&crate::paths::state_dir(), OffsetDateTime::now_utc())
            .map_err(|e| e.to_string())?;
        // Expired grants were dropped on reading: make that stick at once.
        file.flush().map_err(|e| e.to_string())?;
        Ok(Self {
            agent: Arc::downgrade(agent),
            grants: Mutex::new(file),
            upstreams,
            listeners: std::sync::OnceLock::new(),
            down: Mutex::new(Some("starting".into())),
            audits: Mutex::default(),
            audit_due: tokio::sync::Notify::new(),
        })
    }

    fn file(&self) -> std::sync::MutexGuard<'_, GrantsFile> {
        self.grants.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every listener's state (empty when the gateway does not run).
    pub fn listener_states(&self) -> Vec<crate::domain::ListenerInfo> {
        self.listeners.get().map(|l| l.list()).unwrap_or_default()
    }

    /// Opens the TCP listeners before a grant is made, so its reply names a bound URL.
    pub async fn open(&self) {
        if let Some(l) = self.listeners.get() {
            l.open_and_settle().await;
        }
    }

    /// Closes the TCP listeners when no live grant is left.
    fn close_if_unused(&self, file: &mut GrantsFile) {
        file.table.prune(OffsetDateTime::now_utc());
        if file.table.list().is_empty() {
            if let Some(l) = self.listeners.get() {
                l.set_open(false);
            }
        }
    }

    /// Writes the audit lines of finished requests as they come, in batches under load.
    async fn audit_loop(&self) {
        loop {
            self.audit_due.notified().await;
            self.write_audits();
        }
    }

    /// Every pending audit line, now (and once more at shutdown: none is lost).
    fn write_audits(&self) {
        let batch =
            std::mem::take(&mut *self.audits.lock().unwrap_or_else(PoisonError::into_inner));
        let Some(agent) = self.agent.upgrade() else {
            return;
        };
        for r in batch {
            audit_request(&agent, &r);
        }
    }

    /// Writes metered usage now and then, until the agent goes away.
    pub async fn flush_loop(self: Arc<Self>) {
        let mut last_flush = std::time::Instant::now();
        loop {
            tokio::time::sleep(self.expiry_tick()).await;
            let mut file = self.file();
            // An expired last grant closes the ports as a revoke would.
            self.close_if_unused(&mut file);
            if last_flush.elapsed() < FLUSH_EVERY {
                continue;
            }
            last_flush = std::time::Instant::now();
            if let Err(e) = file.flush() {
                tracing::warn!(error = %e, "cannot write grant usage");
            }
        }
    }

    /// Creates (or replaces) a grant; the placeholder exists only in the reply.
    ///
    /// # Errors
    /// The gateway is not listening, a bad name or lifetime, an unwritable grants file.
    pub fn grant(
        &self,
        spec: NewGrant,
        provider: &dyn GatewayProvider,
    ) -> Result<GrantIssued, ErrorBody> {
        let listeners = self.listeners.get();
        let base_url = listeners.and_then(|l| l.base_url(None)).ok_or_else(|| {
            let why = listeners.map_or_else(
                || {
                    self.down
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone()
                        .unwrap_or_default()
                },
                |l| l.why_down(),
            );
            err(
                ErrorCode::GatewayDown,
                format!(
                    "the gateway is not listening ({why}); check [gateway] listen in config.toml"
                ),
            )
        })?;
        let now = OffsetDateTime::now_utc();
        let mut file = self.file();
        let replaced = file.table.get(&spec.name).is_some();
        let (grant, placeholder) = file
            .table
            .create(spec, now)
            .map_err(|e| err(ErrorCode::Invalid, e.to_string()))?;
        file.save()
            .map_err(|e| err(ErrorCode::WriteFailed, e.to_string()))?;
        Ok(GrantIssued {
            grant: info(&grant),
            base_url,
            unix_socket: listeners.and_then(|l| l.unix_socket()),
            placeholder: WireSecret(placeholder),
            replaced,
            provider: provider.id().to_owned(),
        })
    }

    /// Every live grant with its usage.
    pub fn list(&self) -> Vec<GrantInfo> {
        let mut file = self.file();
        file.table.prune(OffsetDateTime::now_utc());
        file.table.list().iter().map(info).collect()
    }

    /// Revokes a grant; whether there was one.
    ///
    /// # Errors
    /// An unwritable grants file.
    pub fn revoke(&self, name: &str) -> Result<bool, ErrorBody> {
        let mut file = self.file();
        if file.table.revoke(name).is_err() {
            return Ok(false);
        }
        file.save()
            .map_err(|e| err(ErrorCode::WriteFailed, e.to_string()))?;
        self.close_if_unused(&mut file);
        Ok(true)
    }
}

fn info(g: &crate::gateway::Grant) -> GrantInfo {
    GrantInfo {
        name: g.name.clone(),
        credential: g.credential.clone(),
        created: rfc3339(g.created).unwrap_or_default(),
        expires: rfc3339(g.expires).unwrap_or_default(),
        requests: g.requests,
        input_tokens: g.tokens.input_tokens,
        output_tokens: g.tokens.output_tokens,
        cache_creation_input_tokens: g.tokens.cache_creation_input_tokens,
        cache_read_input_tokens: g.tokens.cache_read_input_tokens,
        last_use: g.last_use.and_then(rfc3339),
        max_concurrent: g.max_concurrent,
        daily_token_budget: g.daily_token_budget,
        history: g
            .history
            .hours()
            .iter()
            .map(|h| crate::domain::HourUse {
                hour: h.start().and_then(rfc3339).unwrap_or_default(),
                requests: h.requests,
                input_tokens: h.tokens.input_tokens,
                output_tokens: h.tokens.output_tokens,
                cache_creation_input_tokens: h.tokens.cache_creation_input_tokens,
                cache_read_input_tokens: h.tokens.cache_read_input_tokens,
            })
            .collect(),
    }
}

/// One finished request's audit line. The grant's usage was metered already (`record`).
fn audit_request(agent: &Agent, r: &RequestRecord) {
    let outcome = format!(
        "{} {} {} in={} out={} cache_write={} cache_read={}{}",
        r.status,
        r.method,
        r.path,
        r.usage.input_tokens,
        r.usage.output_tokens,
        r.usage.cache_creation_input_tokens,
        r.usage.cache_read_input_tokens,
        r.note
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default()
    );
    agent.record(
        Op::Gateway,
        r.grant.as_deref(),
        AuditOutcome::Done(outcome),
        None,
        &gateway_peer(),
    );
}

/// The gateway itself, as the audit log names its requests.
fn gateway_peer() -> Peer {
    Peer {
        uid: crate::paths::current_uid(),
        pid: i32::try_from(std::process::id()).ok(),
        exe: Some("keyferry gateway".into()),
        sandbox: None,
    }
}

impl AgentGateway {
    /// How often expiry is checked: the listener retry interval, so a test's short one
    /// closes ports promptly too.
    fn expiry_tick(&self) -> Duration {
        self.agent
            .upgrade()
            .map_or(FLUSH_EVERY, |a| a.broker.config.gateway.listen_retry())
            .min(FLUSH_EVERY)
    }
}

impl GatewayContext for AgentGateway {
    fn verify(&self, placeholder: &str) -> Result<GrantView, Denial> {
        let file = self.file();
        let g = file.table.verify(placeholder, OffsetDateTime::now_utc())?;
        Ok(GrantView {
            name: g.name.clone(),
            credential: g.credential.clone(),
            max_concurrent: g.max_concurrent,
            budget_left: g.budget_left(OffsetDateTime::now_utc()),
        })
    }

    fn token(&self, credential: &str) -> Result<Lent, TokenError> {
        let agent = self
            .agent
            .upgrade()
            .ok_or_else(|| TokenError::Unavailable {
                credential: credential.to_owned(),
                reason: "the agent is shutting down".into(),
            })?;
        let state = agent.read_state();
        if state.lock.is_some() {
            return Err(TokenError::Unavailable {
                credential: credential.to_owned(),
                reason: "the agent is locked; run `keyferry unlock`".into(),
            });
        }
        let slot = state
            .slots
            .get(credential)
            .ok_or_else(|| TokenError::UnknownCredential(credential.to_owned()))?;
        let token = slot.token.as_ref().ok_or_else(|| TokenError::Unavailable {
            credential: credential.to_owned(),
            reason: slot
                .status
                .error
                .as_ref()
                .map_or_else(|| "no token found".to_owned(), |e| e.message.clone()),
        })?;
        Ok(Lent {
            kind: token.kind,
            token: token.token.0.clone(),
            account: slot.credential.as_ref().and_then(|c| c.account.clone()),
        })
    }

    fn record(&self, r: RequestRecord) {
        if let Some(name) = &r.grant {
            let mut file = self.file();
            file.table.record(name, &r.usage, OffsetDateTime::now_utc());
            file.touch();
        }
        let mut pending = self.audits.lock().unwrap_or_else(PoisonError::into_inner);
        pending.push(r);
        // One wake a batch: the loop takes every line queued until it runs.
        if pending.len() == 1 {
            self.audit_due.notify_one();
        }
    }

    fn refused(&self, summary: RefusedSummary) {
        if let Some(agent) = self.agent.upgrade() {
            // No credential: it goes to the refused peers' own file (audit::is_junk).
            agent.record(
                Op::Gateway,
                None,
                AuditOutcome::Done(summary.to_string()),
                None,
                &gateway_peer(),
            );
        }
    }

    fn upstream(&self, provider: &dyn GatewayProvider) -> Option<&Upstream> {
        self.upstreams.get(provider)
    }
}

impl Agent {
    fn gateway(&self) -> Result<&Arc<AgentGateway>, ErrorBody> {
        self.gateway.get().ok_or_else(|| {
            err(
                ErrorCode::GatewayDown,
                "this agent runs no gateway (see the agent's log for why)",
            )
        })
    }

    /// Creates (or replaces) a grant, after the lock and the policy for its credential:
    /// a grant spends the credential as surely as reading it.
    ///
    /// # Errors
    /// Refused, an unknown credential, a gateway that is not listening.
    pub async fn grant(
        self: &Arc<Self>,
        spec: NewGrant,
        peer: &Peer,
        conn: Option<super::approval::ConnId>,
    ) -> Result<GrantIssued, ErrorBody> {
        let (name, credential) = (spec.name.clone(), spec.credential.clone());
        let result = async {
            if !self.names().contains(&credential) {
                return Err(self.unknown(&credential));
            }
            self.may_read(&credential, peer, conn).await?;
            let provider = self.provider_of(&credential).await?;
            let gw = self.gateway()?;
            gw.open().await;
            let issued = gw.grant(spec, provider);
            if issued.is_err() {
                let mut file = gw.file();
                gw.close_if_unused(&mut file);
            }
            issued
        }
        .await;
        match &result {
            Ok(issued) => self.record(
                Op::Grant,
                Some(&credential),
                AuditOutcome::Done(format!(
                    "{} {name}",
                    if issued.replaced {
                        "replaced"
                    } else {
                        "created"
                    }
                )),
                None,
                peer,
            ),
            Err(e) => self.record(
                Op::Grant,
                Some(&credential),
                AuditOutcome::Refused,
                Some(&e.code),
                peer,
            ),
        }
        result
    }

    /// The provider whose API the credential's current token is for. A credential with no
    /// token yet (a login written a moment ago, not seen by the watcher) is read once more;
    /// still none, and the grant is refused: its CLI, and so what the sandbox gets, is not
    /// known, and every request would fail.
    async fn provider_of(
        self: &Arc<Self>,
        credential: &str,
    ) -> Result<&'static dyn GatewayProvider, ErrorBody> {
        let kind = |agent: &Self| {
            let state = agent.read_state();
            let slot = state.slots.get(credential);
            match slot.and_then(|s| s.token.as_ref()) {
                Some(t) => Ok(t.kind),
                None => Err(slot.and_then(|s| s.status.error.clone())),
            }
        };
        if kind(self).is_err() {
            let (agent, owned) = (Arc::clone(self), credential.to_owned());
            let _ = tokio::task::spawn_blocking(move || {
                agent.refresh_blocking(std::slice::from_ref(&owned));
            })
            .await;
        }
        let kind = kind(self).map_err(|why| {
            let reason = why.map_or_else(|| "no token found".to_owned(), |e| e.message);
            err(
                ErrorCode::NotFound,
                format!("credential {credential:?} has no token right now ({reason}); a grant needs one, to know which CLI it serves"),
            )
        })?;
        Ok(crate::provider::for_kind(kind).unwrap_or_else(crate::provider::default_provider))
    }

    /// Writes the grants file now (usage metered since the last flush), if there is a
    /// gateway.
    pub fn flush_grants(&self) {
        if let Some(gw) = self.gateway.get() {
            if let Err(e) = gw.file().flush() {
                tracing::warn!(error = %e, "the grants file could not be written at shutdown");
            }
        }
    }

    /// Every live grant with its usage.
    #[must_use]
    pub fn grants(&self) -> Vec<GrantInfo> {
        self.gateway.get().map(|g| g.list()).unwrap_or_default()
    }

    /// Revokes a grant now; whether there was one.
    ///
    /// # Errors
    /// No gateway; an unwritable grants file.
    pub fn revoke_grant(&self, name: &str, peer: &Peer) -> Result<bool, ErrorBody> {
        let revoked = self.gateway()?.revoke(name)?;
        let outcome = if revoked { "revoked" } else { "unknown" };
        self.record(
            Op::Revoke,
            None,
            AuditOutcome::Done(format!("{outcome} {name}")),
            None,
            peer,
        );
        Ok(revoked)
    }

    /// Binds the gateway's listeners and serves them until `shutdown`. A gateway that
    /// cannot listen (a port taken) leaves the agent serving tokens; `grant` then says why.
    pub(super) async fn serve_gateway(
        self: &Arc<Self>,
        socket_dir: &std::path::Path,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let gw = match AgentGateway::new(self) {
            Ok(g) => Arc::new(g),
            Err(e) => {
                tracing::warn!(error = %e, "gateway disabled");
                return;
            }
        };
        let _ = self.gateway.set(Arc::clone(&gw));
        let cfg = &self.broker.config.gateway;
        let specs = match cfg.specs(socket_dir) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "the gateway cannot listen; tokens are still served");
                *gw.down.lock().unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
                return;
            }
        };
        let has_grants = !gw.file().table.list().is_empty();
        let listeners =
            Listeners::new(specs, cfg.allow_unspecified, cfg.listen_retry(), has_grants);
        let _ = gw.listeners.set(Arc::clone(&listeners));
        let limits = cfg.limits();
        let ctx: Arc<dyn GatewayContext> = gw.clone();
        tokio::select! {
            () = crate::gateway::run_managed(listeners, ctx, limits, shutdown) => {}
            () = gw.clone().flush_loop() => {}
            () = gw.audit_loop() => {}
        }
        gw.write_audits();
        let _ = gw.file().flush();
    }
}
