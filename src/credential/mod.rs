//! Credentials: parsing every token format the seeds name into one typed, inspectable value.

mod claude;
pub use claude::{API_KEY_PREFIX, REFRESH_PREFIX, SETUP_PREFIX};
mod codex;
mod gemini;
mod inspect;

use serde_json::Value;
use time::OffsetDateTime;

use crate::secret::Secret;

pub use inspect::{fingerprint, human_duration, mask, rfc3339, Expiry, Inspection, HIDDEN};

pub use crate::domain::Kind;

impl Kind {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClaudeOauth => "claude-oauth",
            Self::SetupToken => "setup-token",
            Self::ApiKey => "api-key",
            Self::Codex => "codex",
            Self::Gemini => "gemini",
            Self::Opaque => "token",
        }
    }

    /// The environment variable the consuming CLI reads this kind of token from.
    #[must_use]
    pub fn env_var(self) -> &'static str {
        match self {
            Self::ClaudeOauth | Self::SetupToken => "CLAUDE_CODE_OAUTH_TOKEN",
            Self::ApiKey => "ANTHROPIC_API_KEY",
            Self::Codex => "OPENAI_API_KEY",
            Self::Gemini => "GOOGLE_OAUTH_ACCESS_TOKEN",
            Self::Opaque => "TOKEN",
        }
    }

    /// Why a token of this kind is never refreshed, and what replaces it; `None` for kinds
    /// that may carry a refresh token. `refresh` answers with it instead of looking for a
    /// login file that a setup-token user never had.
    #[must_use]
    pub fn not_refreshable(self) -> Option<&'static str> {
        match self {
            Self::SetupToken => Some(
                "setup-tokens are not refreshable (they last a year and carry no refresh \
                 token); to replace this one, run `keyferry reroll`",
            ),
            Self::ApiKey => Some(
                "API keys are not refreshable (they do not expire); to replace this one, \
                 create a new key in the Anthropic Console and run `keyferry setup`",
            ),
            Self::ClaudeOauth | Self::Codex | Self::Gemini | Self::Opaque => None,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a credential could not be parsed. Never carries any part of the secret:
/// JSON errors keep only their position and category.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("{origin}: malformed JSON ({category} at line {line}, column {column}); fix or recreate the file")]
    Json {
        origin: String,
        category: &'static str,
        line: usize,
        column: usize,
    },
    #[error("{origin}: {field} is {problem}; expected {expected}")]
    Field {
        origin: String,
        field: &'static str,
        problem: &'static str,
        expected: &'static str,
    },
    #[error("{origin}: JSON of an unknown shape (not Claude Code, Codex or Gemini credentials)")]
    UnknownJson { origin: String },
    #[error("{origin}: is empty")]
    Empty { origin: String },
    #[error("{origin}: the token contains whitespace; store exactly one token")]
    Whitespace { origin: String },
    #[error("{origin}: the token contains a control character (NUL, escape, …); store exactly the token")]
    Control { origin: String },
    #[error("{origin}: this is a refresh token (sk-ant-ort01-…), which must never leave the host's Claude Code; store an access or setup token instead (run `claude setup-token`)")]
    RefreshToken { origin: String },
    /// A truncated or masked copy (`sk-ant-oat01-abcd…wxyz`), which would fail only later,
    /// in a sandbox, as a confusing 401.
    #[error("{origin}: too short or not a whole token ({len} characters after {prefix}); expected {prefix} followed by about 95 letters, digits, - and _, exactly as `claude setup-token` prints it (a masked or cut copy will not work)")]
    Truncated {
        origin: String,
        prefix: &'static str,
        len: usize,
    },
}

/// Fewer characters than this after a Claude prefix cannot be a real token (real ones have
/// about 95); test tokens here have 23 and more.
const MIN_CLAUDE_BODY: usize = 20;

/// Refuses a Claude setup-token or API key too short, or with characters no real one has
/// (an ellipsis or asterisks from a masked copy), before it is stored.
///
/// # Errors
/// [`CredentialError::Truncated`].
pub fn check_whole(token: &str, origin: &str) -> Result<(), CredentialError> {
    let Some((prefix, body)) = [claude::SETUP_PREFIX, claude::API_KEY_PREFIX]
        .into_iter()
        .find_map(|p| token.strip_prefix(p).map(|b| (p, b)))
    else {
        return Ok(());
    };
    let well_formed = body
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if body.chars().count() < MIN_CLAUDE_BODY || !well_formed {
        return Err(CredentialError::Truncated {
            origin: origin.to_owned(),
            prefix,
            len: body.chars().count(),
        });
    }
    Ok(())
}

/// A parsed credential. The secret parts are [`Secret`]s; everything else is safe to show.
#[derive(Debug, Clone)]
pub struct Credential {
    pub kind: Kind,
    /// What `get` serves: the access token or API key.
    pub token: Secret,
    pub refresh_token: Option<Secret>,
    pub expires_at: Option<OffsetDateTime>,
    pub expiry: Expiry,
    pub plan: Option<String>,
    pub rate_limit_tier: Option<String>,
    pub scopes: Vec<String>,
    /// The account the token acts for, where its API wants it named (Codex's
    /// `tokens.account_id`, sent as `ChatGPT-Account-ID`). Not a secret.
    pub account: Option<String>,
    /// The original JSON document, unknown fields kept, for snapshots.
    pub document: Option<Secret>,
}

/// What a credential document yields, before it becomes a [`Credential`].
pub(crate) struct Parts<'a> {
    pub kind: Kind,
    pub token: &'a str,
    pub refresh: Option<&'a str>,
    pub expires_at: Option<OffsetDateTime>,
    pub plan: Option<String>,
    pub rate_limit_tier: Option<String>,
    pub scopes: Vec<String>,
    pub account: Option<String>,
}

impl From<Parts<'_>> for Credential {
    fn from(p: Parts<'_>) -> Self {
        Self {
            kind: p.kind,
            token: Secret::new(p.token.to_owned()),
            refresh_token: p
                .refresh
                .filter(|r| !r.is_empty())
                .map(|r| Secret::new(r.to_owned())),
            expiry: if p.expires_at.is_some() {
                Expiry::Embedded
            } else {
                Expiry::Unknown
            },
            expires_at: p.expires_at,
            plan: p.plan,
            rate_limit_tier: p.rate_limit_tier,
            scopes: p.scopes,
            account: p.account,
            document: None,
        }
    }
}

impl Credential {
    fn token_only(kind: Kind, token: Secret) -> Self {
        Self {
            kind,
            token,
            refresh_token: None,
            expires_at: None,
            expiry: Expiry::Unknown,
            plan: None,
            rate_limit_tier: None,
            scopes: Vec::new(),
            account: None,
            document: None,
        }
    }

    /// Parses a token or credential document. `origin` names where it came from
    /// (a file, a keychain item, a variable) so errors can say which one to fix.
    ///
    /// # Errors
    /// A [`CredentialError`] naming `origin`; it never contains the secret.
    pub fn parse(text: &Secret, origin: &str) -> Result<Self, CredentialError> {
        let trimmed = text.expose().trim();
        if trimmed.is_empty() {
            return Err(CredentialError::Empty {
                origin: origin.to_owned(),
            });
        }
        if trimmed.starts_with('{') {
            let doc: Value = serde_json::from_str(trimmed).map_err(|e| json_error(origin, &e))?;
            let document = Secret::new(trimmed.to_owned());
            let mut cred = if doc.get("claudeAiOauth").is_some() {
                claude::parse(&doc, origin)?
            } else if doc.get("tokens").is_some() || doc.get("OPENAI_API_KEY").is_some() {
                codex::parse(&doc, origin)?
            } else if doc.get("access_token").is_some() {
                gemini::parse(&doc, origin)?
            } else {
                return Err(CredentialError::UnknownJson {
                    origin: origin.to_owned(),
                });
            };
            cred.document = Some(document);
            return Ok(cred);
        }
        Self::parse_token(trimmed, origin)
    }

    fn parse_token(token: &str, origin: &str) -> Result<Self, CredentialError> {
        if token.chars().any(char::is_whitespace) {
            return Err(CredentialError::Whitespace {
                origin: origin.to_owned(),
            });
        }
        // A NUL cannot be passed in an environment variable, and escapes would reach
        // terminals and `.env` files: no real token has one.
        if token.chars().any(char::is_control) {
            return Err(CredentialError::Control {
                origin: origin.to_owned(),
            });
        }
        let kind = if token.starts_with(claude::SETUP_PREFIX) {
            Kind::SetupToken
        } else if token.starts_with(claude::API_KEY_PREFIX) {
            Kind::ApiKey
        } else if token.starts_with(claude::REFRESH_PREFIX) {
            return Err(CredentialError::RefreshToken {
                origin: origin.to_owned(),
            });
        } else {
            Kind::Opaque
        };
        let mut cred = Self::token_only(kind, Secret::new(token.to_owned()));
        if kind == Kind::SetupToken {
            cred.scopes = vec!["user:inference".to_owned()];
        }
        Ok(cred)
    }

    /// For tokens with no expiry inside (setup-tokens): expiry = `stored_at` + `lifetime`.
    /// A lifetime reaching past the last representable date (year 9999) leaves the expiry
    /// unknown rather than panicking.
    pub fn assume_expiry(&mut self, stored_at: OffsetDateTime, lifetime: time::Duration) {
        if self.expires_at.is_none() {
            if let Some(at) = stored_at.checked_add(lifetime) {
                self.expires_at = Some(at);
                self.expiry = Expiry::Assumed { stored_at };
            }
        }
    }

    /// When a Claude Code login's refresh token itself expires (`refreshTokenExpiresAt`,
    /// epoch ms, written by newer builds; about 30 days): after that only `claude /login`
    /// helps.
    #[must_use]
    pub fn refresh_expires_at(&self) -> Option<OffsetDateTime> {
        if self.kind != Kind::ClaudeOauth || self.refresh_token.is_none() {
            return None;
        }
        let doc: serde_json::Value = serde_json::from_str(self.document.as_ref()?.expose()).ok()?;
        let ms = doc
            .get("claudeAiOauth")?
            .get("refreshTokenExpiresAt")?
            .as_i64()?;
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
    }

    /// The non-secret view shown by `show`, `status` and the tray.
    #[must_use]
    pub fn inspect(&self, now: OffsetDateTime) -> Inspection {
        Inspection::of(self, now)
    }
}

fn json_error(origin: &str, e: &serde_json::Error) -> CredentialError {
    use serde_json::error::Category;
    CredentialError::Json {
        origin: origin.to_owned(),
        category: match e.classify() {
            Category::Io => "read error",
            Category::Syntax => "syntax error",
            Category::Data => "wrong data type",
            Category::Eof => "unexpected end of file",
        },
        line: e.line(),
        column: e.column(),
    }
}

/// Field access helpers shared by the per-format parsers; errors name the field, never its value.
pub(crate) fn str_field<'a>(
    v: &'a Value,
    key: &str,
    field: &'static str,
    origin: &str,
) -> Result<Option<&'a str>, CredentialError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(CredentialError::Field {
            origin: origin.to_owned(),
            field,
            problem: "not a string",
            expected: "a string",
        }),
    }
}

pub(crate) fn required_str<'a>(
    v: &'a Value,
    key: &str,
    field: &'static str,
    origin: &str,
) -> Result<&'a str, CredentialError> {
    match str_field(v, key, field, origin)? {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(CredentialError::Field {
            origin: origin.to_owned(),
            field,
            problem: "missing or empty",
            expected: "a token string",
        }),
    }
}

/// Epoch milliseconds → time; accepts integers and floats (some writers emit `1.7e12`).
pub(crate) fn epoch_ms_field(
    v: &Value,
    key: &str,
    field: &'static str,
    origin: &str,
) -> Result<Option<OffsetDateTime>, CredentialError> {
    let bad = |problem| CredentialError::Field {
        origin: origin.to_owned(),
        field,
        problem,
        expected: "epoch milliseconds",
    };
    let ms = match v.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .ok_or_else(|| bad("out of range"))?,
        Some(_) => return Err(bad("not a number")),
    };
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map(Some)
        .map_err(|_| bad("out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Credential, CredentialError> {
        Credential::parse(&Secret::new(s.to_owned()), "test")
    }

    #[test]
    fn raw_tokens_are_classified() {
        assert_eq!(parse("sk-ant-oat01-abc\n").unwrap().kind, Kind::SetupToken);
        assert_eq!(parse("sk-ant-api03-abc").unwrap().kind, Kind::ApiKey);
        assert_eq!(parse("whatever-123").unwrap().kind, Kind::Opaque);
        assert!(matches!(
            parse("sk-ant-ort01-abc"),
            Err(CredentialError::RefreshToken { .. })
        ));
        assert!(matches!(parse("  \n"), Err(CredentialError::Empty { .. })));
        assert!(matches!(
            parse("sk-ant-oat01-a b"),
            Err(CredentialError::Whitespace { .. })
        ));
    }

    #[test]
    fn malformed_json_names_origin_and_position_without_content() {
        let err = parse("{\"claudeAiOauth\": {\"accessToken\": \"sk-ant-oat01-SECRETVALUE\",")
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("test: malformed JSON"), "{msg}");
        assert!(msg.contains("line 1"), "{msg}");
        assert!(!msg.contains("SECRETVALUE"), "{msg}");
        assert!(!format!("{err:?}").contains("SECRETVALUE"));
    }

    #[test]
    fn wrong_types_name_the_field_not_the_value() {
        let err =
            parse(r#"{"claudeAiOauth":{"accessToken":"sk-ant-oat01-X","expiresAt":"SECRETISH"}}"#)
                .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("claudeAiOauth.expiresAt"), "{msg}");
        assert!(!msg.contains("SECRETISH"), "{msg}");
    }

    #[test]
    fn unknown_json_is_rejected() {
        assert!(matches!(
            parse(r#"{"hello":1}"#),
            Err(CredentialError::UnknownJson { .. })
        ));
    }

    #[test]
    fn assumed_expiry_only_when_missing() {
        let mut c = parse("sk-ant-oat01-abc").unwrap();
        let stored = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        c.assume_expiry(stored, time::Duration::days(365));
        assert_eq!(c.expires_at, Some(stored + time::Duration::days(365)));
        assert_eq!(c.expiry, Expiry::Assumed { stored_at: stored });
    }

    // Fuzz regression (credential target): `stored_at + lifetime` past year 9999 panicked.
    #[test]
    fn assumed_expiry_past_the_last_date_stays_unknown() {
        let mut c = parse("sk-ant-oat01-abc").unwrap();
        let stored = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        c.assume_expiry(stored, time::Duration::days(i64::from(u32::MAX)));
        assert_eq!(c.expires_at, None);
        assert_eq!(c.expiry, Expiry::Unknown);
        assert_eq!(c.inspect(stored).expires_in, None);
    }

    // Found by tests/socket_fuzz.rs: `store` accepted "sk-ant-oat01-…\0…" (NUL is not
    // whitespace), which no environment variable can carry.
    #[test]
    fn a_logins_refresh_token_expiry_is_read_from_its_document() {
        let json = r#"{"claudeAiOauth":{"accessToken":"sk-ant-oat01-A","refreshToken":"sk-ant-ort01-R","expiresAt":1790000000000,"refreshTokenExpiresAt":1792000000000}}"#;
        let c = Credential::parse(&Secret::new(json.into()), "f").unwrap();
        assert_eq!(
            c.refresh_expires_at().unwrap().unix_timestamp(),
            1_792_000_000
        );
        let setup = Credential::parse(&Secret::new("sk-ant-oat01-X".into()), "f").unwrap();
        assert_eq!(setup.refresh_expires_at(), None);
    }

    #[test]
    fn control_characters_are_refused() {
        for t in [
            "sk-ant-oat01-abc\0def",
            "sk-ant-oat01-abc\x1b[31m",
            "tok\x7f",
        ] {
            let err = parse(t).unwrap_err();
            assert!(
                matches!(err, CredentialError::Control { .. }),
                "{t:?}: {err}"
            );
            assert!(!err.to_string().contains("abc"), "{err}");
        }
    }
}
