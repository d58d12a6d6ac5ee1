//! What Keyferry knows about each API provider, one file per provider behind one small
//! interface (Secretive's one kit per backend): which requests the gateway forwards, how
//! the real credential goes on a request, what a refusal looks like to that provider's CLI,
//! and how an answer reports its token usage. The gateway picks the provider from the
//! kind of the credential a grant draws on, after the placeholder is verified; adding a
//! provider is a new file here and a line in [`for_kind`], not edits to the proxy.
//!
//! This layer sits just above `credential`: it knows kinds and tokens, never the gateway,
//! the agent or the config.

use http::header::{HeaderMap, InvalidHeaderValue};
use http::Method;
use serde::{Deserialize, Serialize};

use crate::credential::Kind;
use crate::secret::Secret;

pub mod anthropic;
pub mod google;
pub mod openai;

/// Every provider, in the order `status` and the docs list them.
pub static ALL: [&'static dyn GatewayProvider; 3] =
    [&anthropic::ANTHROPIC, &openai::OPENAI, &google::GOOGLE];

/// The provider whose `[providers.ID]` table and grants say `id`.
#[must_use]
pub fn by_id(id: &str) -> Option<&'static dyn GatewayProvider> {
    ALL.iter().copied().find(|p| p.id() == id)
}

/// `anthropic, openai, google`, for messages.
#[must_use]
pub fn ids() -> String {
    ALL.iter().map(|p| p.id()).collect::<Vec<_>>().join(", ")
}

/// The credential one request draws on, lent by the agent for that request only.
pub struct Lent {
    pub kind: Kind,
    pub token: Secret,
    /// The account the token acts for, where the API wants it named (Codex's
    /// `ChatGPT-Account-ID`): not a secret, but the host's, never the sandbox's.
    pub account: Option<String>,
}

impl Lent {
    #[must_use]
    pub fn new(kind: Kind, token: Secret) -> Self {
        Self {
            kind,
            token,
            account: None,
        }
    }
}

/// The first line of every file a grant writes into a sandbox's home: what marks it as
/// Keyferry's to replace (see `sandbox_home`).
pub const SANDBOX_MARK: &str = "# Written by `keyferry grant`";

/// One value a sandbox is given for a grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SandboxValue {
    /// Printed as is (a URL, a flag, a path).
    Text(String),
    /// The grant's placeholder (kept out of this type so it never sits in a plain string).
    Placeholder,
}

/// Tokens one answer used (or a grant has used), in the provider's own counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
}

impl Usage {
    /// Everything that counts against a budget.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.output_tokens)
            .saturating_add(self.cache_creation_input_tokens)
            .saturating_add(self.cache_read_input_tokens)
    }

    pub fn add(&mut self, other: &Usage) {
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cache_creation_input_tokens = self
            .cache_creation_input_tokens
            .saturating_add(other.cache_creation_input_tokens);
        self.cache_read_input_tokens = self
            .cache_read_input_tokens
            .saturating_add(other.cache_read_input_tokens);
    }
}

/// Why the gateway refuses, in provider-neutral terms; each provider spells it its way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    Authentication,
    Permission,
    NotFound,
    RequestTooLarge,
    RateLimit,
    Api,
}

/// A request the credential must not serve, and why (no secret in it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotAdmitted(pub String);

/// One provider, as the gateway uses it. Implementations are stateless `static`s.
pub trait GatewayProvider: Send + Sync + 'static {
    /// Its name in logs and messages ("Anthropic").
    fn name(&self) -> &'static str;

    /// Its key in `[providers.ID]` and in a grant's reply ("anthropic").
    fn id(&self) -> &'static str;

    /// The CLI a sandbox runs against it, as a recipe starts it (`claude`).
    fn cli(&self) -> &'static str;

    /// Where its CLI's API calls go when `[providers.ID] upstream` is not set.
    fn default_upstream(&self) -> &'static str;

    /// What a sandbox's CLI is given to reach the gateway at `base_url` with a grant:
    /// environment variables, in the order printed.
    fn sandbox_env(&self, base_url: &str) -> Vec<(&'static str, SandboxValue)>;

    /// Files its CLI reads from a home folder the grant is written into (Codex's
    /// `config.toml`), as `(file name, contents)`; none for most. Never a secret in them.
    fn sandbox_files(&self, base_url: &str) -> Vec<(&'static str, String)> {
        let _ = base_url;
        Vec::new()
    }

    /// The variable that names that home folder to the CLI (`CODEX_HOME`).
    fn sandbox_home_var(&self) -> Option<&'static str> {
        None
    }

    /// The file whose presence makes a folder a real login's home (Codex's `auth.json`):
    /// grant files are never written there.
    fn sandbox_home_login(&self) -> Option<&'static str> {
        None
    }

    /// Host variables passed on to the sandbox when set (none secret: a project id).
    fn sandbox_passthrough(&self) -> &'static [&'static str] {
        &[]
    }

    /// The most a request body may generate, for a daily budget's reservation (the field
    /// differs per API). `None` when the body does not say.
    fn max_output_tokens(&self, body: &[u8]) -> Option<u64>;

    /// Whether METHOD PATH is one its CLI calls and the gateway forwards. `Err` names what
    /// is forwarded, for the refusal. Paths are compared exactly: no normalisation to trick.
    ///
    /// # Errors
    /// The request is not forwarded.
    fn route(&self, method: &Method, path: &str) -> Result<(), &'static str>;

    /// Refuses what a credential of `kind` must not serve (a subscription token is meant
    /// for its own CLI).
    ///
    /// # Errors
    /// [`NotAdmitted`], answered 403.
    fn admit(&self, kind: Kind, headers: &HeaderMap, grant: &str) -> Result<(), NotAdmitted>;

    /// Puts the real credential on `headers` (every incoming credential is already gone).
    ///
    /// # Errors
    /// The token holds bytes a header cannot carry.
    fn authorize(&self, headers: &mut HeaderMap, lent: &Lent) -> Result<(), InvalidHeaderValue>;

    /// The body of a refusal its CLI shows as an error.
    fn error_body(&self, kind: ErrorKind, message: &str) -> Vec<u8>;

    /// The SSE events that may carry usage (only their data is parsed).
    fn usage_events(&self) -> &'static [&'static str];

    /// Applies one SSE event's data to the usage so far.
    fn apply_usage_event(&self, data: &[u8], usage: &mut Usage);

    /// The usage of a whole (non-streamed) JSON answer.
    fn json_usage(&self, body: &[u8]) -> Option<Usage>;
}

/// The provider whose API a credential of `kind` is for; `None` for kinds no gateway
/// provider serves yet.
#[must_use]
pub fn for_kind(kind: Kind) -> Option<&'static dyn GatewayProvider> {
    match kind {
        Kind::ClaudeOauth | Kind::SetupToken | Kind::ApiKey | Kind::Opaque => {
            Some(&anthropic::ANTHROPIC)
        }
        Kind::Codex => Some(&openai::OPENAI),
        Kind::Gemini => Some(&google::GOOGLE),
    }
}

/// A bearer header value that is never printed by `Debug` (hyper's sensitive flag).
///
/// # Errors
/// The token holds bytes a header cannot carry.
pub fn bearer(token: &Secret) -> Result<http::HeaderValue, InvalidHeaderValue> {
    // Built by hand: `format!`'s machinery costs more than the copy (a request each).
    let token = token.expose();
    let mut text = String::with_capacity(7 + token.len());
    text.push_str("Bearer ");
    text.push_str(token);
    let mut v = http::HeaderValue::try_from(text)?;
    v.set_sensitive(true);
    Ok(v)
}

/// A JSON field of a request body, read without parsing the rest into values: what
/// `max_output_tokens` implementations share.
pub(crate) fn json_u64(body: &[u8], path: &[&str]) -> Option<u64> {
    let mut v: serde_json::Value = serde_json::from_slice(body).ok()?;
    for key in path {
        v = v.get_mut(*key)?.take();
    }
    v.as_u64()
}

/// A header map from `(name, value)` pairs, for tests of header handling.
#[cfg(test)]
pub(crate) fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::header::HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

/// Who answers before any grant is known (a missing or unknown placeholder): the gateway's
/// default listeners serve Anthropic's CLI.
#[must_use]
pub fn default_provider() -> &'static dyn GatewayProvider {
    &anthropic::ANTHROPIC
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_provider_or_none() {
        for kind in [
            Kind::ClaudeOauth,
            Kind::SetupToken,
            Kind::ApiKey,
            Kind::Opaque,
        ] {
            assert_eq!(for_kind(kind).map(|p| p.name()), Some("Anthropic"));
        }
        assert_eq!(for_kind(Kind::Codex).map(|p| p.id()), Some("openai"));
        assert_eq!(for_kind(Kind::Gemini).map(|p| p.id()), Some("google"));
        for p in ALL {
            assert_eq!(by_id(p.id()).map(|q| q.name()), Some(p.name()));
            assert!(crate::http::parse_upstream(p.default_upstream()).is_ok());
        }
        assert!(by_id("Anthropic").is_none());
        assert_eq!(ids(), "anthropic, openai, google");
    }

    #[test]
    fn usage_adds_and_totals_without_overflow() {
        let mut u = Usage {
            input_tokens: u64::MAX,
            ..Usage::default()
        };
        u.add(&Usage {
            input_tokens: 1,
            output_tokens: 2,
            ..Usage::default()
        });
        assert_eq!(u.input_tokens, u64::MAX);
        assert_eq!(u.total(), u64::MAX);
    }
}
