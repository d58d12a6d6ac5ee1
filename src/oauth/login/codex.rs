//! Codex's ChatGPT login: `$CODEX_HOME/auth.json` (default `~/.codex`) =
//! `{OPENAI_API_KEY, tokens:{id_token, access_token, refresh_token, account_id},
//! last_refresh (RFC 3339)}`, `id_token` and `access_token` raw JWT strings.
//!
//! Facts from openai/codex `codex-rs/login/src/auth/manager.rs` (re-check per version):
//! - Refresh: `POST https://auth.openai.com/oauth/token` (`REFRESH_TOKEN_URL`; the CLI reads
//!   `CODEX_REFRESH_TOKEN_URL_OVERRIDE` instead when set), `Content-Type: application/json`,
//!   `RefreshRequest {client_id: "app_EMoamEEZ73f0CkXaXp7hrann", grant_type: "refresh_token",
//!   refresh_token}` — no scope.
//! - Answer: `RefreshResponse {id_token?, access_token?, refresh_token?}`, each optional:
//!   `persist_tokens` replaces each returned token and sets `last_refresh = now`; refresh
//!   tokens rotate (a reused one answers `refresh_token_reused`).
//! - Permanent (`request_chatgpt_token_refresh` / `classify_refresh_token_failure`): HTTP 401
//!   with any body; any status whose code (`extract_refresh_token_error_code`: `error.code`,
//!   a string `error`, or a top-level `code`) is `refresh_token_expired`,
//!   `refresh_token_reused` or `refresh_token_invalidated`; 400 `invalid_grant`. The rest
//!   is transient.
//! - When: the CLI refreshes once the access token's JWT `exp` has passed, or when
//!   `last_refresh` is older than 8 days (`TOKEN_REFRESH_INTERVAL`), and after a 401 — each
//!   time re-reading auth.json first. So Keyferry refreshes `refresh_ahead` before `exp` and
//!   stops a margin before the CLI's first moment. 0.171 adds `refresh_reason`
//!   (`"proactive_expiry"`) to its request body; the endpoint needs no such field.
//! - Lock: 0.171 (not yet 0.159.3) commits a refresh, a login and a logout under `flock`s on
//!   `$CODEX_HOME/auth.lock` and `auth.json.lock` (`codex-rs/login/src/auth/storage_commit.rs`),
//!   re-reading auth.json under them and dropping its own answer when the file changed.
//!   Keyferry takes the same two locks the same way, from its re-read to its write-back: see
//!   `oauth/cli_lock/codex.rs`.
//! - Store: `cli_auth_credentials_store` = `file` (auth.json, the default), `keyring` (the
//!   `Codex Auth` item) or `auto` (the item, else auth.json): see `codex_store.rs`, which
//!   builds the `codex` chain and the refresher's source from it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{oauth_error_code, plain_code, LoginProvider, Refreshed, Refusal, TokenRequest};
use crate::credential::{Credential, Kind};
use crate::oauth::cli_lock::CliLockKind;
use crate::oauth::usage::{Usage, UsageAsk, UsageError};
use crate::oauth::writeback::WritebackError;
use crate::secret::Secret;
use zeroize::Zeroizing;

pub const CLIENT_ID: &str = "app_EMoamEEZ73f0CkXaXp7hrann";
pub const TOKEN_URL: &str = "https://auth.openai.com/oauth/token";
/// `TOKEN_REFRESH_INTERVAL`: the CLI refreshes a login last refreshed this long ago.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(8 * 24 * 3600);

const PERMANENT_CODES: [&str; 3] = [
    "refresh_token_expired",
    "refresh_token_reused",
    "refresh_token_invalidated",
];

pub struct Codex;
pub static CODEX: Codex = Codex;

#[derive(Serialize)]
struct Request<'a> {
    client_id: &'static str,
    grant_type: &'static str,
    refresh_token: &'a str,
}

#[derive(Deserialize)]
struct Answer {
    id_token: Option<String>,
    access_token: Option<String>,
    refresh_token: Option<String>,
}

impl LoginProvider for Codex {
    fn cli(&self) -> &'static str {
        "Codex"
    }

    fn default_usage_url(&self) -> Option<&'static str> {
        Some(super::codex_usage::DEFAULT_USAGE_URL)
    }

    fn usage_ready(&self, ask: &UsageAsk<'_>) -> Result<(), UsageError> {
        super::codex_usage::ready(ask)
    }

    fn usage_headers(&self, ask: &UsageAsk<'_>) -> Vec<(&'static str, Zeroizing<String>)> {
        super::codex_usage::headers(ask)
    }

    fn parse_usage(&self, body: &[u8]) -> Result<Usage, UsageError> {
        super::codex_usage::parse(body)
    }

    fn provider_id(&self) -> &'static str {
        "openai"
    }

    fn kind(&self) -> Kind {
        Kind::Codex
    }

    fn default_token_url(&self) -> &'static str {
        TOKEN_URL
    }

    fn token_url_env(&self) -> Option<&'static str> {
        Some("CODEX_REFRESH_TOKEN_URL_OVERRIDE")
    }

    fn login_file_name(&self) -> Option<&'static str> {
        Some("auth.json")
    }

    fn relogin_hint(&self) -> &'static str {
        "run `codex login`"
    }

    fn token_request(&self, refresh_token: &Secret, _document: &Secret) -> TokenRequest {
        let body = serde_json::to_vec(&Request {
            client_id: CLIENT_ID,
            grant_type: "refresh_token",
            refresh_token: refresh_token.expose(),
        })
        .expect("serialising plain strings cannot fail");
        TokenRequest {
            content_type: "application/json",
            body,
        }
    }

    fn parse_answer(&self, body: &[u8]) -> Result<Refreshed, &'static str> {
        let answer: Answer = serde_json::from_slice(body).map_err(|_| "not a JSON token answer")?;
        let token = |t: Option<String>| t.filter(|t| !t.is_empty()).map(Secret::new);
        let new = Refreshed {
            access_token: token(answer.access_token),
            refresh_token: token(answer.refresh_token),
            id_token: token(answer.id_token),
            ..Refreshed::default()
        };
        // Codex accepts an answer with no token at all and only bumps `last_refresh`; for
        // Keyferry that is no new login, and one more call settles whether it rotated.
        if new.access_token.is_none() && new.refresh_token.is_none() && new.id_token.is_none() {
            return Err("no token in it");
        }
        Ok(new)
    }

    fn classify_refusal(&self, status: u16, body: &[u8]) -> Refusal {
        let code = error_code(body);
        match code {
            Some(c) if PERMANENT_CODES.contains(&c.as_str()) => Refusal::Permanent(c),
            Some(c) if status == 400 && c == "invalid_grant" => Refusal::Permanent(c),
            code if status == 401 => {
                Refusal::Permanent(code.unwrap_or_else(|| "unauthorized".into()))
            }
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
        let m = super::Merging {
            location,
            cli: self.cli(),
        };
        let bad = |reason| m.bad(reason);
        let mut doc = m.parse(document)?;
        let root = doc
            .as_object_mut()
            .ok_or_else(|| bad("not a JSON object"))?;
        let tokens = root
            .get_mut("tokens")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| bad("no tokens object"))?;
        for (field, value) in [
            ("id_token", &new.id_token),
            ("access_token", &new.access_token),
            ("refresh_token", &new.refresh_token),
        ] {
            if let Some(v) = value {
                tokens.insert(field.into(), Value::String(v.expose().to_owned()));
            }
        }
        let stamp = now.format(&Rfc3339).map_err(|_| bad("time out of range"))?;
        root.insert("last_refresh".into(), Value::String(stamp));
        // Codex writes auth.json pretty-printed (`serde_json::to_string_pretty`).
        m.text(&doc, true)
    }

    fn cli_lock(&self) -> Option<CliLockKind> {
        Some(CliLockKind::Codex)
    }

    fn cli_refreshes_from(&self, credential: &Credential) -> Option<OffsetDateTime> {
        let stale = last_refresh(credential).map(|at| at + REFRESH_INTERVAL);
        match (credential.expires_at, stale) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// `last_refresh` of the stored document, if it has a readable one.
fn last_refresh(credential: &Credential) -> Option<OffsetDateTime> {
    let doc: Value = serde_json::from_str(credential.document.as_ref()?.expose()).ok()?;
    OffsetDateTime::parse(doc.get("last_refresh")?.as_str()?, &Rfc3339).ok()
}

/// `extract_refresh_token_error_code`'s shapes: `{"error":{"code":…}}`, `{"error":"…"}`,
/// `{"code":"…"}`; lowercased as Codex compares them.
fn error_code(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let code = v
        .get("error")
        .and_then(|e| e.get("code"))
        .and_then(Value::as_str)
        .or_else(|| v.get("error").and_then(Value::as_str))
        .or_else(|| v.get("code").and_then(Value::as_str));
    match code {
        Some(c) => plain_code(&c.to_ascii_lowercase()),
        None => oauth_error_code(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{"OPENAI_API_KEY":null,"tokens":{"id_token":"old.id.jwt","access_token":"old.access.jwt","refresh_token":"rt_OLD","account_id":"acc-1","future":1},"last_refresh":"2026-11-01T00:00:00Z","extra":{"keep":true}}"#;

    #[test]
    fn the_request_is_codexs_refresh_request() {
        let req = CODEX.token_request(&Secret::new("rt_OLD".into()), &Secret::new(DOC.into()));
        assert_eq!(req.content_type, "application/json");
        let v: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"client_id": CLIENT_ID, "grant_type": "refresh_token", "refresh_token": "rt_OLD"})
        );
    }

    #[test]
    fn merge_replaces_returned_tokens_and_stamps_last_refresh() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let new = CODEX
            .parse_answer(br#"{"access_token":"new.access.jwt","refresh_token":"rt_NEW"}"#)
            .unwrap();
        let out = CODEX
            .merge(&Secret::new(DOC.into()), &new, now, "auth.json")
            .unwrap();
        let v: Value = serde_json::from_str(out.expose()).unwrap();
        assert_eq!(v["tokens"]["access_token"], "new.access.jwt");
        assert_eq!(v["tokens"]["refresh_token"], "rt_NEW");
        assert_eq!(v["tokens"]["id_token"], "old.id.jwt", "not returned: kept");
        assert_eq!(v["tokens"]["account_id"], "acc-1");
        assert_eq!(v["tokens"]["future"], 1);
        assert_eq!(v["extra"]["keep"], true);
        assert_eq!(v["last_refresh"], "2027-01-15T08:00:00Z");
        assert!(v["OPENAI_API_KEY"].is_null());
    }

    #[test]
    fn permanent_refusals_are_codexs() {
        let c = |s, b: &[u8]| CODEX.classify_refusal(s, b);
        assert_eq!(
            c(401, br#"{"error":{"code":"refresh_token_reused"}}"#),
            Refusal::Permanent("refresh_token_reused".into())
        );
        assert_eq!(
            c(400, br#"{"code":"REFRESH_TOKEN_EXPIRED"}"#),
            Refusal::Permanent("refresh_token_expired".into())
        );
        assert_eq!(
            c(403, br#"{"error":"refresh_token_invalidated"}"#),
            Refusal::Permanent("refresh_token_invalidated".into())
        );
        assert_eq!(c(401, b"<html>"), Refusal::Permanent("unauthorized".into()));
        assert_eq!(
            c(400, br#"{"error":"invalid_grant"}"#),
            Refusal::Permanent("invalid_grant".into())
        );
        assert_eq!(c(403, b"<html>"), Refusal::Refused(None));
        assert_eq!(
            c(400, br#"{"error":"rt_ECHOED.x"}"#),
            Refusal::Refused(None)
        );
        assert_eq!(CODEX.parse_answer(b"{}").err(), Some("no token in it"));
    }

    #[test]
    fn the_cli_takes_over_at_exp_or_after_eight_days() {
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine as _;
        let jwt = |exp: i64| format!("e30.{}.sig", b.encode(format!(r#"{{"exp":{exp}}}"#)));
        let doc = |exp, last: &str| {
            Secret::new(format!(
                r#"{{"tokens":{{"access_token":"{}","refresh_token":"r"}},"last_refresh":"{last}"}}"#,
                jwt(exp)
            ))
        };
        let c = Credential::parse(&doc(1_800_000_000, "2027-01-14T00:00:00Z"), "a").unwrap();
        assert_eq!(
            CODEX.cli_refreshes_from(&c).unwrap().unix_timestamp(),
            1_800_000_000
        );
        let c = Credential::parse(&doc(1_800_000_000, "2027-01-01T00:00:00Z"), "a").unwrap();
        assert_eq!(
            CODEX.cli_refreshes_from(&c).unwrap(),
            time::macros::datetime!(2027-01-09 00:00 UTC)
        );
    }
}
