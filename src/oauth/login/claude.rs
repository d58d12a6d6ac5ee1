//! Claude Code's login (`~/.claude/.credentials.json` or the macOS `Claude Code-credentials`
//! item: `{"claudeAiOauth":{accessToken, refreshToken, expiresAt (ms), scopes, …}}`).
//!
//! Endpoint facts (re-check per Claude Code version):
//! - `POST /v1/oauth/token`, JSON `{"grant_type":"refresh_token","refresh_token":…,
//!   "client_id":"9d1c250a-e61b-44d9-88ed-5944d1962f5e","scope":"…"}`; the answer has
//!   `access_token`, `refresh_token` (may be omitted: the old one stays valid), `expires_in`
//!   (seconds), `scope` (space separated). Sources: Dev-Jahn/ccbroker
//!   docs/design/v0.4-token-lifecycle.md (CC10: "refresh response may omit refresh_token and the
//!   old one is kept"; F1: a refresh revokes the previous access token), and the installed
//!   Claude Code 2.1.197 itself (`Bte()` in its bundle: same body, `scope` = the stored scopes
//!   joined by spaces, `client_id` = the stored `clientId` when present, `refresh_token:c=e`
//!   default, `expiresAt = now + expires_in*1000`).
//! - Host: `https://platform.claude.com/v1/oauth/token`, where the installed Claude Code
//!   2.1.197 posts (the string is in its binary, twice, and no other token URL is): Keyferry's
//!   default is what the CLI it refreshes for uses. `[oauth] token_url` changes it (the
//!   console host sits behind a browser challenge for non-browser clients, DESIGN.md).
//! - Failure classes: Claude Code treats a 400/401 whose `error` (a string, or `error.type`) is
//!   `invalid_grant` as a dead refresh token, and 400 `invalid_client`, `invalid_scope`,
//!   `unauthorized_client` as expected permanent failures (`Cxe()`/`m2r()` in the bundle).
//!   Refresh races that end in `invalid_grant`: anthropics/claude-code #24317, #25609, #43392.
//! - The CLI refreshes only when `now + 5 min >= expiresAt` (`Ute()` in the 2.1.197 bundle;
//!   ccbroker CC1), under its `mkdir` refresh lock (`cli_lock.rs`).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use zeroize::Zeroizing;

use super::{epoch_ms, oauth_error_code, LoginProvider, Refreshed, Refusal, TokenRequest};
use crate::credential::{Credential, Kind};
use crate::oauth::cli_lock::CliLockKind;
use crate::oauth::usage::{check_scope, Usage, UsageAsk, UsageError, Window};
use crate::oauth::writeback::WritebackError;
use crate::secret::Secret;

/// `GET /api/oauth/usage` with `Authorization: Bearer` and the OAuth beta; it needs the
/// `user:profile` scope, which setup-tokens (`user:inference` only) lack. Sources:
/// DESIGN.md "More domain facts"; Claude Code 2.1.197 (`Ade()` in its bundle: skipped unless
/// the login has `user:profile`, `{utilization, resets_at}` per window).
pub const DEFAULT_USAGE_URL: &str = "https://api.anthropic.com/api/oauth/usage";
pub const PROFILE_SCOPE: &str = "user:profile";
const USAGE_BETA: &str = "oauth-2025-04-20";

pub const CLAUDE_CLIENT_ID: &str = "9d1c250a-e61b-44d9-88ed-5944d1962f5e";
pub const TOKEN_URL: &str = "https://platform.claude.com/v1/oauth/token";
/// Claude Code's own window before `expiresAt` (`Ute()`).
pub const CLI_WINDOW: Duration = Duration::from_secs(5 * 60);

/// `error` codes after which retrying the same refresh token cannot succeed.
const PERMANENT_CODES: [&str; 4] = [
    "invalid_grant",
    "invalid_client",
    "invalid_scope",
    "unauthorized_client",
];

pub struct Claude;
pub static CLAUDE: Claude = Claude;

/// What to ask for besides the refresh token (from the stored login).
#[derive(Debug, Clone, Default)]
pub struct Grant {
    /// The stored `clientId`, or [`CLAUDE_CLIENT_ID`] when `None`.
    pub client_id: Option<String>,
    /// The stored scopes; omitted from the request when empty.
    pub scopes: Vec<String>,
}

#[derive(Serialize)]
struct Request<'a> {
    grant_type: &'static str,
    refresh_token: &'a str,
    client_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
}

#[derive(Deserialize)]
struct Answer {
    access_token: Option<String>,
    refresh_token: Option<String>,
    expires_in: Option<u64>,
    scope: Option<String>,
}

impl LoginProvider for Claude {
    fn cli(&self) -> &'static str {
        "Claude Code"
    }

    fn default_usage_url(&self) -> Option<&'static str> {
        Some(DEFAULT_USAGE_URL)
    }

    fn usage_ready(&self, ask: &UsageAsk<'_>) -> Result<(), UsageError> {
        check_scope(ask.scopes)
    }

    fn usage_headers(&self, ask: &UsageAsk<'_>) -> Vec<(&'static str, Zeroizing<String>)> {
        vec![
            (
                "authorization",
                Zeroizing::new(format!("Bearer {}", ask.access.expose())),
            ),
            ("anthropic-beta", Zeroizing::new(USAGE_BETA.to_owned())),
            ("accept", Zeroizing::new("application/json".to_owned())),
        ]
    }

    fn parse_usage(&self, body: &[u8]) -> Result<Usage, UsageError> {
        parse_usage(body)
    }

    fn provider_id(&self) -> &'static str {
        "anthropic"
    }

    fn kind(&self) -> Kind {
        Kind::ClaudeOauth
    }

    fn default_token_url(&self) -> &'static str {
        TOKEN_URL
    }

    fn relogin_hint(&self) -> &'static str {
        "run `claude /login`"
    }

    fn token_request(&self, refresh_token: &Secret, document: &Secret) -> TokenRequest {
        let grant = grant_of(document);
        let body = serde_json::to_vec(&Request {
            grant_type: "refresh_token",
            refresh_token: refresh_token.expose(),
            client_id: grant.client_id.as_deref().unwrap_or(CLAUDE_CLIENT_ID),
            scope: (!grant.scopes.is_empty()).then(|| grant.scopes.join(" ")),
        })
        .expect("serialising plain strings cannot fail");
        TokenRequest {
            content_type: "application/json",
            body,
        }
    }

    fn parse_answer(&self, body: &[u8]) -> Result<Refreshed, &'static str> {
        let answer: Answer = serde_json::from_slice(body).map_err(|_| "not a JSON token answer")?;
        let access = answer
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or("no access_token")?;
        let expires_in = answer.expires_in.ok_or("no expires_in")?;
        if expires_in == 0 {
            return Err("expires_in is 0");
        }
        Ok(Refreshed {
            access_token: Some(Secret::new(access)),
            refresh_token: answer
                .refresh_token
                .filter(|t| !t.is_empty())
                .map(Secret::new),
            expires_in: Some(Duration::from_secs(expires_in)),
            scopes: answer
                .scope
                .map(|s| s.split_whitespace().map(str::to_owned).collect()),
            ..Refreshed::default()
        })
    }

    fn classify_refusal(&self, _status: u16, body: &[u8]) -> Refusal {
        match oauth_error_code(body) {
            Some(c) if PERMANENT_CODES.contains(&c.as_str()) => Refusal::Permanent(c),
            code => Refusal::Refused(code),
        }
    }

    fn merge(
        &self,
        document: &Secret,
        new: &Refreshed,
        now: OffsetDateTime,
        location: &str,
    ) -> Result<Secret, WritebackError> {
        merge(document, new, now, location)
    }

    fn cli_refreshes_from(&self, credential: &Credential) -> Option<OffsetDateTime> {
        credential.expires_at.map(|at| at - CLI_WINDOW)
    }

    fn cli_lock(&self) -> Option<CliLockKind> {
        Some(CliLockKind::ClaudeCode)
    }
}

/// The `clientId` and scopes a refresh of this document asks for (as Claude Code does).
#[must_use]
pub fn grant_of(document: &Secret) -> Grant {
    let doc: Value = serde_json::from_str(document.expose()).unwrap_or_default();
    let oauth = &doc["claudeAiOauth"];
    Grant {
        client_id: oauth["clientId"].as_str().map(str::to_owned),
        scopes: oauth["scopes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// The document with the refreshed login in `claudeAiOauth`; every other field is kept, in order.
///
/// # Errors
/// The document is not JSON, has no `claudeAiOauth` object, or the answer has no access
/// token or lifetime.
pub fn merge(
    document: &Secret,
    new: &Refreshed,
    now: OffsetDateTime,
    location: &str,
) -> Result<Secret, WritebackError> {
    let m = super::Merging {
        location,
        cli: CLAUDE.cli(),
    };
    let bad = |reason| m.bad(reason);
    let mut doc = m.parse(document)?;
    let oauth = doc
        .get_mut("claudeAiOauth")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| bad("no claudeAiOauth object"))?;
    let access = new
        .access_token
        .as_ref()
        .ok_or_else(|| bad("no access token"))?;
    let expires_in = new.expires_in.ok_or_else(|| bad("no lifetime"))?;
    let expires_ms = epoch_ms(now + expires_in).ok_or_else(|| bad("expiry out of range"))?;
    oauth.insert(
        "accessToken".into(),
        Value::String(access.expose().to_owned()),
    );
    if let Some(rt) = &new.refresh_token {
        oauth.insert("refreshToken".into(), Value::String(rt.expose().to_owned()));
    }
    oauth.insert("expiresAt".into(), Value::from(expires_ms));
    if let Some(scopes) = &new.scopes {
        oauth.insert("scopes".into(), Value::from(scopes.clone()));
    }
    m.text(&doc, false)
}

/// `{five_hour, seven_day}`, each `{utilization (percent), resets_at (RFC 3339)}`.
fn parse_usage(body: &[u8]) -> Result<Usage, UsageError> {
    #[derive(Deserialize)]
    struct Raw {
        five_hour: Option<RawWindow>,
        seven_day: Option<RawWindow>,
    }
    #[derive(Deserialize)]
    struct RawWindow {
        utilization: Option<f64>,
        resets_at: Option<String>,
    }
    let raw: Raw = serde_json::from_slice(body).map_err(|_| UsageError::Malformed)?;
    let window = |w: Option<RawWindow>| -> Result<Option<Window>, UsageError> {
        let Some(w) = w else { return Ok(None) };
        let Some(utilization) = w.utilization else {
            return Ok(None);
        };
        let resets_at = w
            .resets_at
            .map(|r| {
                OffsetDateTime::parse(&r, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| UsageError::Malformed)
            })
            .transpose()?;
        Ok(Some(Window {
            utilization,
            resets_at,
        }))
    };
    Ok(Usage {
        five_hour: window(raw.five_hour)?,
        seven_day: window(raw.seven_day)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_windows_and_tolerates_nulls() {
        let u = parse_usage(br#"{"five_hour":{"utilization":12.5,"resets_at":"2026-12-01T10:00:00+00:00"},"seven_day":{"utilization":40,"resets_at":null},"seven_day_opus":null}"#).unwrap();
        let five = u.five_hour.unwrap();
        assert!((five.utilization - 12.5).abs() < f64::EPSILON);
        assert_eq!(five.resets_at.unwrap().unix_timestamp(), 1_796_119_200);
        assert_eq!(u.seven_day.unwrap().resets_at, None);
        let u = parse_usage(br#"{"five_hour":null}"#).unwrap();
        assert_eq!(u.five_hour, None);
        assert_eq!(u.seven_day, None);
        assert!(matches!(parse_usage(b"[1]"), Err(UsageError::Malformed)));
        assert!(matches!(
            parse_usage(br#"{"five_hour":{"utilization":1,"resets_at":"soon"}}"#),
            Err(UsageError::Malformed)
        ));
    }

    const DOC: &str = r#"{"claudeAiOauth":{"accessToken":"sk-ant-oat01-OLD","refreshToken":"sk-ant-ort01-OLD","expiresAt":1,"scopes":["user:inference","user:profile"],"subscriptionType":"max","clientId":"cid","futureField":{"x":1}},"mcpOAuth":{"srv":"keep"}}"#;

    fn refreshed(rt: Option<&str>) -> Refreshed {
        Refreshed {
            access_token: Some(Secret::new("sk-ant-oat01-NEW".into())),
            refresh_token: rt.map(|r| Secret::new(r.into())),
            expires_in: Some(Duration::from_secs(3600)),
            ..Refreshed::default()
        }
    }

    #[test]
    fn merge_keeps_unknown_fields_and_old_refresh_token_when_omitted() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let out = merge(&Secret::new(DOC.into()), &refreshed(None), now, "f").unwrap();
        let v: Value = serde_json::from_str(out.expose()).unwrap();
        let o = &v["claudeAiOauth"];
        assert_eq!(o["accessToken"], "sk-ant-oat01-NEW");
        assert_eq!(o["refreshToken"], "sk-ant-ort01-OLD");
        assert_eq!(o["expiresAt"], 1_800_003_600_000_i64);
        assert_eq!(o["futureField"]["x"], 1);
        assert_eq!(o["scopes"][1], "user:profile");
        assert_eq!(v["mcpOAuth"]["srv"], "keep");
        let out = merge(&Secret::new(DOC.into()), &refreshed(Some("R2")), now, "f").unwrap();
        assert!(out.expose().contains(r#""refreshToken":"R2""#));
        let g = grant_of(&Secret::new(DOC.into()));
        assert_eq!(g.client_id.as_deref(), Some("cid"));
        assert_eq!(g.scopes, ["user:inference", "user:profile"]);
    }

    #[test]
    fn the_request_carries_the_stored_client_and_scopes() {
        let req = CLAUDE.token_request(
            &Secret::new("sk-ant-ort01-R".into()),
            &Secret::new(DOC.into()),
        );
        assert_eq!(req.content_type, "application/json");
        let v: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(v["client_id"], "cid");
        assert_eq!(v["scope"], "user:inference user:profile");
        assert!(!format!("{req:?}").contains("ort01"));
    }

    #[test]
    fn answer_without_refresh_token_keeps_the_old_one() {
        let r = CLAUDE
            .parse_answer(br#"{"access_token":"sk-ant-oat01-N","expires_in":28800}"#)
            .unwrap();
        assert!(r.refresh_token.is_none());
        assert!(r.scopes.is_none());
        assert_eq!(r.expires_in, Some(Duration::from_secs(28800)));
        let r = CLAUDE
            .parse_answer(
                br#"{"access_token":"a","refresh_token":"r","expires_in":5,"scope":"user:inference user:profile"}"#,
            )
            .unwrap();
        assert_eq!(r.refresh_token.unwrap().expose(), "r");
        assert_eq!(r.scopes.unwrap(), ["user:inference", "user:profile"]);
    }

    #[test]
    fn unusable_answers_are_named() {
        let p = |b: &[u8]| CLAUDE.parse_answer(b).err();
        assert_eq!(p(b"<html>"), Some("not a JSON token answer"));
        assert_eq!(p(br#"{"expires_in":5}"#), Some("no access_token"));
        assert_eq!(p(br#"{"access_token":"a"}"#), Some("no expires_in"));
    }

    #[test]
    fn only_known_codes_are_permanent() {
        let c = |b: &[u8]| CLAUDE.classify_refusal(400, b);
        assert_eq!(
            c(br#"{"error":{"type":"invalid_grant"}}"#),
            Refusal::Permanent("invalid_grant".into())
        );
        assert_eq!(
            c(br#"{"error":"slow_down"}"#),
            Refusal::Refused(Some("slow_down".into()))
        );
        assert_eq!(c(b"<html>"), Refusal::Refused(None));
    }
}
