//! What the refresher must know about one CLI's login, one file per CLI behind
//! [`LoginProvider`]: the token call (URL, content type, body), reading its answer, merging
//! a new login into the stored document, when the CLI refreshes by itself (so Keyferry
//! never races it), whether it has a lock to take, which refusals are permanent, and what
//! to tell the user then. The flight (`flight.rs`), journal, write-back and backoff are
//! shared; adding a CLI is a new file here and a line in [`ALL`].

use std::time::Duration;

use time::OffsetDateTime;

use zeroize::Zeroizing;

use super::cli_lock::CliLockKind;
use super::usage::{Usage, UsageAsk, UsageError};
use super::writeback::WritebackError;
use crate::credential::{Credential, Kind};
use crate::secret::Secret;

pub mod claude;
pub mod codex;
pub mod codex_store;
mod codex_usage;
pub mod gemini;

/// Every login Keyferry can refresh, in the order the docs list them.
pub static ALL: [&'static dyn LoginProvider; 3] = [&claude::CLAUDE, &codex::CODEX, &gemini::GEMINI];

/// One token call, as the provider's endpoint wants it. The body holds the refresh token:
/// it moves into the request and is never logged or shown.
pub struct TokenRequest {
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRequest")
            .field("content_type", &self.content_type)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// A successful token answer, in provider-neutral terms. Every field a provider may omit is
/// an `Option`: what is absent stays as stored.
#[derive(Debug, Default)]
pub struct Refreshed {
    pub access_token: Option<Secret>,
    /// `None`: the old refresh token stays in use.
    pub refresh_token: Option<Secret>,
    pub id_token: Option<Secret>,
    /// `None` when the expiry is inside the access token (Codex's JWT `exp`).
    pub expires_in: Option<Duration>,
    /// `None` when the server did not say: the stored scopes stay.
    pub scopes: Option<Vec<String>>,
    pub token_type: Option<String>,
}

/// What a 4xx from the token endpoint means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The refresh token is dead (this OAuth code, or a stand-in such as `unauthorized`):
    /// only a new login helps, so it is never sent again.
    Permanent(String),
    /// Nothing proves the login dead (a proxy, a challenge page, an unknown code).
    Refused(Option<String>),
}

/// One CLI's login, as the refresher uses it. Implementations are stateless `static`s.
pub trait LoginProvider: Send + Sync + 'static {
    /// The CLI, for messages ("Claude Code").
    fn cli(&self) -> &'static str;
    /// The `[providers.ID]` table whose `token_url` moves the endpoint.
    fn provider_id(&self) -> &'static str;
    /// The credential kind its login documents parse as.
    fn kind(&self) -> Kind;
    fn default_token_url(&self) -> &'static str;
    /// A variable the CLI itself reads to move its token endpoint: Keyferry then posts where
    /// the CLI does unless the config says otherwise.
    fn token_url_env(&self) -> Option<&'static str> {
        None
    }
    /// The CLI's login file name, by which a `file:` source is recognised as this login.
    fn login_file_name(&self) -> Option<&'static str> {
        None
    }
    /// What a user with a dead login runs ("run `claude /login`").
    fn relogin_hint(&self) -> &'static str;
    /// The request that trades `refresh_token` (from `document`) for a new login.
    fn token_request(&self, refresh_token: &Secret, document: &Secret) -> TokenRequest;
    /// A 200's body; `Err` names what is missing (no token text in it).
    ///
    /// # Errors
    /// Not a usable token answer.
    fn parse_answer(&self, body: &[u8]) -> Result<Refreshed, &'static str>;
    /// A 400–403's meaning.
    fn classify_refusal(&self, status: u16, body: &[u8]) -> Refusal;
    /// `document` with the new login in it; every field the provider does not own is kept.
    ///
    /// # Errors
    /// The document is not this CLI's login.
    fn merge(
        &self,
        document: &Secret,
        new: &Refreshed,
        now: OffsetDateTime,
        location: &str,
    ) -> Result<Secret, WritebackError>;
    /// From when the CLI refreshes this login by itself: Keyferry stops [`super::plan::MARGIN`]
    /// before it, so the two never spend one refresh token twice. `None`: a race costs
    /// nothing (the refresh token does not rotate), so Keyferry refreshes whenever due.
    fn cli_refreshes_from(&self, credential: &Credential) -> Option<OffsetDateTime>;
    /// The CLI's own refresh lock (`cli_lock.rs`), held from the re-read before the call to
    /// the write-back, in the directory the source names (`LoginSource::cli_lock_dir`);
    /// `None`: the CLI takes none.
    fn cli_lock(&self) -> Option<CliLockKind> {
        None
    }
    /// Where its subscription's usage figures are asked (`None`: it has none).
    fn default_usage_url(&self) -> Option<&'static str> {
        None
    }
    /// Whether this login can show figures at all; checked before any call.
    ///
    /// # Errors
    /// Why it never can (a setup-token's scopes, an API key).
    fn usage_ready(&self, ask: &UsageAsk<'_>) -> Result<(), UsageError> {
        let _ = ask;
        Err(UsageError::NotASubscription)
    }
    /// The usage request's headers, the access token among them.
    fn usage_headers(&self, ask: &UsageAsk<'_>) -> Vec<(&'static str, Zeroizing<String>)> {
        let _ = ask;
        Vec::new()
    }
    /// A 200's body as figures.
    ///
    /// # Errors
    /// Not the endpoint's answer.
    fn parse_usage(&self, body: &[u8]) -> Result<Usage, UsageError> {
        let _ = body;
        Err(UsageError::Malformed)
    }
}

/// One stored login being merged with a new one: its document parsed once, and every
/// failure named for where it lives and whose CLI wrote it. What the three `merge`s share.
pub(crate) struct Merging<'a> {
    pub location: &'a str,
    pub cli: &'static str,
}

impl Merging<'_> {
    pub fn bad(&self, reason: &'static str) -> WritebackError {
        WritebackError::BadDocument {
            location: self.location.to_owned(),
            cli: self.cli,
            reason,
        }
    }

    /// The document as a JSON object.
    pub fn parse(&self, document: &Secret) -> Result<serde_json::Value, WritebackError> {
        let doc: serde_json::Value =
            serde_json::from_str(document.expose()).map_err(|_| self.bad("not JSON"))?;
        if doc.is_object() {
            Ok(doc)
        } else {
            Err(self.bad("not a JSON object"))
        }
    }

    /// The merged document as its CLI writes it (`pretty`: indented, as Codex and Gemini
    /// CLI do).
    pub fn text(&self, doc: &serde_json::Value, pretty: bool) -> Result<Secret, WritebackError> {
        let text = if pretty {
            serde_json::to_string_pretty(doc)
        } else {
            serde_json::to_string(doc)
        };
        Ok(Secret::new(text.map_err(|_| self.bad("not serialisable"))?))
    }
}

/// The login whose endpoint has usage figures for a credential of `kind` (a setup-token is
/// Claude's: it says why it has none).
#[must_use]
pub fn for_usage(kind: Kind) -> Option<&'static dyn LoginProvider> {
    let kind = if kind == Kind::SetupToken {
        Kind::ClaudeOauth
    } else {
        kind
    };
    ALL.iter()
        .copied()
        .find(|p| p.kind() == kind && p.default_usage_url().is_some())
}

/// The provider whose CLI keeps its login in a file named like `path`'s.
#[must_use]
pub fn by_login_file(path: &std::path::Path) -> Option<&'static dyn LoginProvider> {
    let name = path.file_name()?.to_str()?;
    ALL.iter()
        .copied()
        .find(|p| p.login_file_name() == Some(name))
}

/// An OAuth `error` code only when it looks like one (`[a-z_]{1,64}`), so no echoed text (a
/// token in an error description) can reach an error message.
#[must_use]
pub fn plain_code(code: &str) -> Option<String> {
    (!code.is_empty()
        && code.len() <= 64
        && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
    .then(|| code.to_owned())
}

/// `{"error":"code"}` or `{"error":{"type":"code"}}` (RFC 6749 and Anthropic's shape).
#[must_use]
pub fn oauth_error_code(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let e = v.get("error")?;
    let code = e.as_str().or_else(|| e.get("type")?.as_str())?;
    plain_code(code)
}

/// Milliseconds since the epoch, as the CLIs store expiries.
pub(crate) fn epoch_ms(at: OffsetDateTime) -> Option<i64> {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_files_name_their_provider() {
        let p = |s: &str| by_login_file(std::path::Path::new(s)).map(|p| p.cli());
        assert_eq!(p("/h/.codex/auth.json"), Some("Codex"));
        assert_eq!(p("/h/.gemini/oauth_creds.json"), Some("Gemini CLI"));
        assert_eq!(p("/h/.claude/token"), None);
    }

    #[test]
    fn error_codes_in_both_shapes_and_nothing_else() {
        assert_eq!(
            oauth_error_code(br#"{"error":"invalid_grant"}"#).as_deref(),
            Some("invalid_grant")
        );
        assert_eq!(
            oauth_error_code(br#"{"error":{"type":"invalid_grant","message":"x"}}"#).as_deref(),
            Some("invalid_grant")
        );
        assert_eq!(
            oauth_error_code(br#"{"error":"sk-ant-ort01-ECHOED"}"#),
            None
        );
        assert_eq!(oauth_error_code(b"<html>challenge</html>"), None);
    }
}
