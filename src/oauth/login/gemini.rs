//! Gemini CLI's Google login: `~/.gemini/oauth_creds.json` (`$GEMINI_CLI_HOME/.gemini/…`
//! when set) = google-auth-library `Credentials` `{access_token, refresh_token, scope,
//! token_type, id_token?, expiry_date (ms)}`, written 0600 with no lock.
//!
//! Facts from google-gemini/gemini-cli `packages/core/src/code_assist/oauth2.ts` and
//! google-auth-library `OAuth2Client` (re-check per version):
//! - The CLI's installed-app client, published in oauth2.ts ("It's ok to save this in git
//!   because this is an installed application as described here:
//!   https://developers.google.com/identity/protocols/oauth2#installed … the client secret is
//!   obviously not treated as a secret"): `OAUTH_CLIENT_ID =
//!   '681255809395-oo8ft2oprdrnp9e3aqf6av3hmdib135j.apps.googleusercontent.com'`,
//!   `OAUTH_CLIENT_SECRET = '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'`.
//! - Refresh (`refreshTokenNoCache`): form POST to `https://oauth2.googleapis.com/token`,
//!   `grant_type=refresh_token&refresh_token=…&client_id=…&client_secret=…`; the answer is
//!   `{access_token, expires_in, scope, token_type, id_token?}`, stored with
//!   `expiry_date = now + expires_in*1000`. Google refresh tokens do not rotate: the stored
//!   one is kept (a returned one is used), and a refresh revokes no earlier access token.
//! - The client refreshes on its own `eagerRefreshThresholdMillis` (5 minutes) before
//!   `expiry_date`. A dead refresh token answers 400 `{"error":"invalid_grant"}`.
//!
//! Keyferry refreshes `refresh_ahead` before expiry and does not leave a window to the CLI
//! (`cli_refreshes_from` is `None`): a race with the CLI costs one extra call and leaves two
//! valid access tokens, since nothing rotates or is revoked, while leaving the last minutes
//! to an idle host CLI would let every sandbox's token lapse.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;

use super::{epoch_ms, oauth_error_code, LoginProvider, Refreshed, Refusal, TokenRequest};
use crate::credential::{Credential, Kind};
use crate::oauth::writeback::WritebackError;
use crate::secret::Secret;

pub const CLIENT_ID: &str =
    "681255809395-oo8ft2oprdrnp9e3aqf6av3hmdib135j.apps.googleusercontent.com";
/// Not a secret: published by the CLI for its installed-app flow (see the module comment).
pub const CLIENT_SECRET: &str = "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";
pub const TOKEN_URL: &str = "https://oauth2.googleapis.com/token";

pub struct Gemini;
pub static GEMINI: Gemini = Gemini;

#[derive(Deserialize)]
struct Answer {
    access_token: Option<String>,
    refresh_token: Option<String>,
    id_token: Option<String>,
    expires_in: Option<u64>,
    scope: Option<String>,
    token_type: Option<String>,
}

impl LoginProvider for Gemini {
    fn cli(&self) -> &'static str {
        "Gemini CLI"
    }

    fn provider_id(&self) -> &'static str {
        "google"
    }

    fn kind(&self) -> Kind {
        Kind::Gemini
    }

    fn default_token_url(&self) -> &'static str {
        TOKEN_URL
    }

    fn login_file_name(&self) -> Option<&'static str> {
        Some("oauth_creds.json")
    }

    fn relogin_hint(&self) -> &'static str {
        "run `gemini` and log in again"
    }

    fn token_request(&self, refresh_token: &Secret, _document: &Secret) -> TokenRequest {
        TokenRequest {
            content_type: "application/x-www-form-urlencoded",
            body: form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token.expose()),
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
            ]),
        }
    }

    fn parse_answer(&self, body: &[u8]) -> Result<Refreshed, &'static str> {
        let answer: Answer = serde_json::from_slice(body).map_err(|_| "not a JSON token answer")?;
        let access = answer
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or("no access_token")?;
        let expires_in = answer
            .expires_in
            .filter(|s| *s > 0)
            .ok_or("no expires_in")?;
        let token = |t: Option<String>| t.filter(|t| !t.is_empty()).map(Secret::new);
        Ok(Refreshed {
            access_token: Some(Secret::new(access)),
            refresh_token: token(answer.refresh_token),
            id_token: token(answer.id_token),
            expires_in: Some(Duration::from_secs(expires_in)),
            scopes: answer
                .scope
                .map(|s| s.split_whitespace().map(str::to_owned).collect()),
            token_type: answer.token_type,
        })
    }

    fn classify_refusal(&self, _status: u16, body: &[u8]) -> Refusal {
        match oauth_error_code(body) {
            Some(c) if c == "invalid_grant" => Refusal::Permanent(c),
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
        let access = new
            .access_token
            .as_ref()
            .ok_or_else(|| bad("no access token"))?;
        let expires_in = new.expires_in.ok_or_else(|| bad("no lifetime"))?;
        let expiry = epoch_ms(now + expires_in).ok_or_else(|| bad("expiry out of range"))?;
        let mut put = |k: &str, v: Value| {
            root.insert(k.to_owned(), v);
        };
        put("access_token", Value::String(access.expose().to_owned()));
        if let Some(rt) = &new.refresh_token {
            put("refresh_token", Value::String(rt.expose().to_owned()));
        }
        if let Some(id) = &new.id_token {
            put("id_token", Value::String(id.expose().to_owned()));
        }
        if let Some(scopes) = &new.scopes {
            put("scope", Value::String(scopes.join(" ")));
        }
        if let Some(t) = &new.token_type {
            put("token_type", Value::String(t.clone()));
        }
        put("expiry_date", Value::from(expiry));
        // The CLI writes it with `JSON.stringify(credentials, null, 2)`.
        m.text(&doc, true)
    }

    fn cli_refreshes_from(&self, _credential: &Credential) -> Option<OffsetDateTime> {
        None
    }
}

/// `application/x-www-form-urlencoded` (WHATWG): unreserved bytes as is, space as `+`,
/// every other byte `%XX`.
fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        encode(k, &mut out);
        out.push(b'=');
        encode(v, &mut out);
    }
    out
}

fn encode(s: &str, out: &mut Vec<u8>) {
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => out.push(b),
            b' ' => out.push(b'+'),
            _ => out.extend_from_slice(format!("%{b:02X}").as_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{"access_token":"ya29.OLD","refresh_token":"1//OLD","scope":"openid https://www.googleapis.com/auth/cloud-platform","token_type":"Bearer","id_token":"old.id","expiry_date":1,"future":{"k":1}}"#;

    #[test]
    fn the_request_is_a_form_with_the_clis_client() {
        let req = GEMINI.token_request(&Secret::new("1//a b&c".into()), &Secret::new(DOC.into()));
        assert_eq!(req.content_type, "application/x-www-form-urlencoded");
        assert_eq!(
            String::from_utf8(req.body).unwrap(),
            format!("grant_type=refresh_token&refresh_token=1%2F%2Fa+b%26c&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}")
        );
    }

    #[test]
    fn merge_sets_expiry_keeps_the_refresh_token_and_unknown_fields() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let new = GEMINI
            .parse_answer(br#"{"access_token":"ya29.NEW","expires_in":3599,"scope":"openid","token_type":"Bearer"}"#)
            .unwrap();
        let out = GEMINI
            .merge(&Secret::new(DOC.into()), &new, now, "f")
            .unwrap();
        let v: Value = serde_json::from_str(out.expose()).unwrap();
        assert_eq!(v["access_token"], "ya29.NEW");
        assert_eq!(v["refresh_token"], "1//OLD");
        assert_eq!(v["id_token"], "old.id");
        assert_eq!(v["expiry_date"], 1_800_003_599_000_i64);
        assert_eq!(v["scope"], "openid");
        assert_eq!(v["future"]["k"], 1);
        let c = Credential::parse(&out, "f").unwrap();
        assert_eq!(c.kind, Kind::Gemini);
        assert!(GEMINI.cli_refreshes_from(&c).is_none());
    }

    #[test]
    fn only_invalid_grant_is_permanent() {
        assert_eq!(
            GEMINI.classify_refusal(400, br#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#),
            Refusal::Permanent("invalid_grant".into())
        );
        assert_eq!(
            GEMINI.classify_refusal(400, br#"{"error":"invalid_request"}"#),
            Refusal::Refused(Some("invalid_request".into()))
        );
        assert_eq!(
            GEMINI.parse_answer(br#"{"access_token":"a"}"#).err(),
            Some("no expires_in")
        );
    }
}
