//! What a credential is, in the terms every layer shares: its kind, where its expiry comes
//! from, and its non-secret inspection. The parsing that makes them (and their methods)
//! lives in `credential`; these are the plain types, so `domain` depends on nothing above.

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// What a credential is, which decides how it is served and how it expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Claude Code's own OAuth login (`claudeAiOauth`): ~8 h access token plus refresh token.
    ClaudeOauth,
    /// A `claude setup-token` token: one year, `user:inference` only, no refresh token.
    SetupToken,
    /// An Anthropic API key (`sk-ant-api03-…`).
    ApiKey,
    /// Codex CLI `auth.json`.
    Codex,
    /// Gemini CLI `oauth_creds.json`.
    Gemini,
    /// A token of no recognised shape, served as-is.
    Opaque,
}

/// Where a credential's expiry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "basis")]
pub enum Expiry {
    /// Written inside the credential (`expiresAt`, JWT `exp`, `expiry_date`).
    Embedded,
    /// No expiry inside (setup-token): storage time plus the configured lifetime.
    Assumed {
        #[serde(with = "time::serde::rfc3339")]
        stored_at: OffsetDateTime,
    },
    Unknown,
}

/// What `show`, `status --json` and the tray display. Contains no secret.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Inspection {
    pub kind: Kind,
    pub masked: String,
    pub fingerprint: String,
    pub expires_at: Option<String>,
    /// Seconds until expiry; negative once expired.
    pub expires_in_secs: Option<i64>,
    /// "in 3 d 4 h" / "expired 2 h ago".
    pub expires_in: Option<String>,
    pub expiry: Expiry,
    pub plan: Option<String>,
    pub rate_limit_tier: Option<String>,
    pub scopes: Vec<String>,
    pub has_refresh_token: bool,
}

/// RFC 3339 in UTC, whole seconds: `2027-11-22T05:04:00Z`.
#[must_use]
pub fn rfc3339(at: OffsetDateTime) -> Option<String> {
    at.to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .ok()?
        .format(&Rfc3339)
        .ok()
}
