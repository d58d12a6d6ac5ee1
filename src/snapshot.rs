//! Snapshots: a credential rendered in its CLI's own file format for a file-scoped mount —
//! Claude `.credentials.json`, Codex `auth.json`, Gemini `oauth_creds.json` — without the
//! refresh token unless asked, so no sandbox can race the host's refresh.

use serde_json::{json, Map, Value};

use crate::credential::{Credential, Inspection, Kind};
use crate::secret::Secret;

/// 2100-01-01 in ms: a placeholder login's `expiresAt`. The grant, not the file, decides
/// how long it lives; Claude Code must never think it due for a refresh it cannot make.
const FAR_EXPIRES_AT_MS: i64 = 4_102_444_800_000;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{name} is a {kind} credential; a Claude credentials file of placeholders is for a Claude login (an OAuth login or a setup-token)")]
    NotClaude { name: String, kind: Kind },
    #[error("{name}: a {kind} cannot be written as a credentials file; pass it as {var} (keyferry exec) instead")]
    Unsupported {
        name: String,
        kind: Kind,
        var: &'static str,
    },
}

/// Whether `text` (an existing file's contents) is a credentials document of the CLI that
/// `kind` renders for, so a snapshot may replace it. Blank files count as empty. Anything
/// else (a `~/.bashrc` named by mistake, a key file) must be left byte-for-byte alone.
#[must_use]
pub fn may_replace(kind: Kind, text: &str) -> bool {
    if text.trim().is_empty() {
        return true;
    }
    let Ok(Value::Object(doc)) = serde_json::from_str::<Value>(text) else {
        return false;
    };
    match kind {
        Kind::ClaudeOauth | Kind::SetupToken => {
            doc.get("claudeAiOauth").is_some_and(Value::is_object)
        }
        Kind::Codex => {
            doc.get("tokens").is_some_and(Value::is_object) || doc.contains_key("OPENAI_API_KEY")
        }
        Kind::Gemini => doc.contains_key("access_token") || doc.contains_key("refresh_token"),
        Kind::ApiKey | Kind::Opaque => false,
    }
}

/// Whether a credentials document holds a refresh token (a live login of Claude Code,
/// Codex or Gemini rather than a snapshot of one).
#[must_use]
pub fn holds_refresh_token(text: &str) -> bool {
    let Ok(doc) = serde_json::from_str::<Value>(text) else {
        return false;
    };
    let present = |v: Option<&Value>| v.and_then(Value::as_str).is_some_and(|s| !s.is_empty());
    present(doc.pointer("/claudeAiOauth/refreshToken"))
        || present(doc.pointer("/tokens/refresh_token"))
        || present(doc.get("refresh_token"))
}

/// A Claude Code `.credentials.json` that logs a sandbox's Claude Code in with a grant's
/// `placeholder` in place of the token: the login's real plan, rate-limit tier and scopes,
/// so it keeps its models (with only `CLAUDE_CODE_OAUTH_TOKEN` it loses its plan:
/// anthropics/claude-code #93070); a far-future `expiresAt`; no refresh token, so it never
/// refreshes (and never races the host's). `name` and `login` describe the credential.
///
/// # Errors
/// The credential is not a Claude login.
pub fn placeholder_login(
    name: &str,
    login: &Inspection,
    placeholder: &Secret,
) -> Result<Secret, SnapshotError> {
    if !matches!(login.kind, Kind::ClaudeOauth | Kind::SetupToken) {
        return Err(SnapshotError::NotClaude {
            name: name.to_owned(),
            kind: login.kind,
        });
    }
    let mut o = Map::new();
    o.insert(
        "accessToken".into(),
        Value::String(placeholder.expose().to_owned()),
    );
    o.insert("expiresAt".into(), json!(FAR_EXPIRES_AT_MS));
    o.insert("scopes".into(), json!(login.scopes));
    o.insert("subscriptionType".into(), json!(login.plan));
    o.insert("rateLimitTier".into(), json!(login.rate_limit_tier));
    let mut text = serde_json::to_string_pretty(&json!({ "claudeAiOauth": o })).unwrap_or_default();
    text.push('\n');
    Ok(Secret::new(text))
}

/// The file contents for `credential`. Unknown fields of the original document are kept.
///
/// # Errors
/// The kind has no file format (API keys, opaque tokens).
pub fn render(
    name: &str,
    c: &Credential,
    include_refresh_token: bool,
) -> Result<Secret, SnapshotError> {
    let original: Option<Value> = c
        .document
        .as_ref()
        .and_then(|d| serde_json::from_str(d.expose()).ok());
    let doc = match c.kind {
        Kind::ClaudeOauth => {
            let mut doc = original.unwrap_or_else(|| json!({ "claudeAiOauth": {} }));
            if let Some(o) = doc.get_mut("claudeAiOauth").and_then(Value::as_object_mut) {
                o.insert(
                    "accessToken".into(),
                    Value::String(c.token.expose().to_owned()),
                );
                if !include_refresh_token {
                    o.remove("refreshToken");
                    o.remove("refreshTokenExpiresAt");
                }
            }
            doc
        }
        Kind::SetupToken => {
            // Claude Code reads this shape on Linux; a setup-token has no refresh token at all.
            let mut o = Map::new();
            o.insert(
                "accessToken".into(),
                Value::String(c.token.expose().to_owned()),
            );
            if let Some(at) = c.expires_at {
                let ms = at.unix_timestamp_nanos() / 1_000_000;
                o.insert(
                    "expiresAt".into(),
                    json!(i64::try_from(ms).unwrap_or(i64::MAX)),
                );
            }
            o.insert("scopes".into(), json!(c.scopes));
            o.insert(
                "subscriptionType".into(),
                c.plan.clone().map_or(Value::Null, Value::String),
            );
            json!({ "claudeAiOauth": o })
        }
        Kind::Codex => {
            let mut doc = original.unwrap_or_else(|| json!({}));
            if !include_refresh_token {
                if let Some(t) = doc.get_mut("tokens").and_then(Value::as_object_mut) {
                    t.remove("refresh_token");
                }
            }
            doc
        }
        Kind::Gemini => {
            let mut doc = original.unwrap_or_else(|| json!({}));
            if !include_refresh_token {
                if let Some(o) = doc.as_object_mut() {
                    o.remove("refresh_token");
                }
            }
            doc
        }
        Kind::ApiKey | Kind::Opaque => {
            return Err(SnapshotError::Unsupported {
                name: name.to_owned(),
                kind: c.kind,
                var: c.kind.env_var(),
            })
        }
    };
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    Ok(Secret::new(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(s: &str) -> Credential {
        Credential::parse(&Secret::new(s.into()), "t").unwrap()
    }

    #[test]
    fn only_documents_of_the_same_cli_may_be_replaced() {
        let claude = r#"{"claudeAiOauth":{"accessToken":"x"}}"#;
        let codex = r#"{"OPENAI_API_KEY":null,"tokens":{"access_token":"a"}}"#;
        let gemini = r#"{"access_token":"ya29.x","expiry_date":1}"#;
        assert!(may_replace(Kind::ClaudeOauth, claude));
        assert!(may_replace(Kind::SetupToken, claude));
        assert!(may_replace(Kind::ClaudeOauth, "  \n"));
        assert!(may_replace(Kind::Codex, codex));
        assert!(may_replace(Kind::Gemini, gemini));
        for (kind, other) in [
            (Kind::ClaudeOauth, codex),
            (Kind::Codex, claude),
            (Kind::Gemini, claude),
            (Kind::ClaudeOauth, "export PATH=$HOME/bin:$PATH\n"),
            (Kind::ClaudeOauth, "-----BEGIN OPENSSH PRIVATE KEY-----"),
            (Kind::ClaudeOauth, "[1,2]"),
        ] {
            assert!(!may_replace(kind, other), "{kind:?} over {other}");
        }
    }

    #[test]
    fn a_placeholder_login_keeps_the_plan_and_holds_no_token() {
        let c = cred(
            r#"{"claudeAiOauth":{"accessToken":"sk-ant-oat01-REALaccess","refreshToken":"sk-ant-ort01-REALrefresh","expiresAt":1790000000000,"scopes":["user:inference","user:profile"],"subscriptionType":"max","rateLimitTier":"default_claude_max_20x"}}"#,
        );
        let now = time::OffsetDateTime::now_utc();
        let out =
            placeholder_login("claude", &c.inspect(now), &Secret::new("kfg_00".into())).unwrap();
        assert!(!out.expose().contains("REAL"), "{}", out.expose());
        let v: Value = serde_json::from_str(out.expose()).unwrap();
        let o = &v["claudeAiOauth"];
        assert_eq!(o["accessToken"], "kfg_00");
        assert_eq!(o["subscriptionType"], "max");
        assert_eq!(o["rateLimitTier"], "default_claude_max_20x");
        assert_eq!(o["scopes"], json!(["user:inference", "user:profile"]));
        assert_eq!(o["expiresAt"], FAR_EXPIRES_AT_MS);
        assert!(o.get("refreshToken").is_none());
        assert!(!holds_refresh_token(out.expose()));
        let codex = cred(r#"{"OPENAI_API_KEY":"sk-proj-1"}"#);
        assert!(matches!(
            placeholder_login("codex", &codex.inspect(now), &Secret::new("kfg_00".into())),
            Err(SnapshotError::NotClaude { .. })
        ));
    }

    #[test]
    fn claude_login_loses_its_refresh_token_and_keeps_the_rest() {
        let c = cred(
            r#"{"claudeAiOauth":{"accessToken":"sk-ant-oat01-A","refreshToken":"sk-ant-ort01-R","expiresAt":1790000000000,"scopes":["user:inference"],"subscriptionType":"max","clientId":"keep"},"other":1}"#,
        );
        let out = render("claude", &c, false).unwrap();
        let v: Value = serde_json::from_str(out.expose()).unwrap();
        assert_eq!(v["claudeAiOauth"]["accessToken"], "sk-ant-oat01-A");
        assert!(v["claudeAiOauth"].get("refreshToken").is_none());
        assert_eq!(v["claudeAiOauth"]["clientId"], "keep");
        assert_eq!(v["other"], 1);
        let with = render("claude", &c, true).unwrap();
        assert!(with.expose().contains("sk-ant-ort01-R"));
    }

    #[test]
    fn setup_token_becomes_the_claude_shape() {
        let mut c = cred("sk-ant-oat01-SETUP");
        c.assume_expiry(
            time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            time::Duration::days(365),
        );
        let v: Value = serde_json::from_str(render("claude", &c, false).unwrap().expose()).unwrap();
        assert_eq!(v["claudeAiOauth"]["accessToken"], "sk-ant-oat01-SETUP");
        assert_eq!(v["claudeAiOauth"]["expiresAt"], 1_731_536_000_000_i64);
        assert_eq!(v["claudeAiOauth"]["scopes"][0], "user:inference");
    }

    #[test]
    fn codex_and_gemini_drop_refresh_tokens_and_api_keys_are_refused() {
        let codex = cred(
            r#"{"OPENAI_API_KEY":null,"tokens":{"access_token":"a.b.c","refresh_token":"rt","id_token":"x","account_id":"acc"},"last_refresh":"2026-01-01T00:00:00Z"}"#,
        );
        let v: Value =
            serde_json::from_str(render("codex", &codex, false).unwrap().expose()).unwrap();
        assert!(v["tokens"].get("refresh_token").is_none());
        assert_eq!(v["tokens"]["account_id"], "acc");
        let gemini = cred(r#"{"access_token":"ya29.x","refresh_token":"1//r","expiry_date":1}"#);
        assert!(!render("gemini", &gemini, false)
            .unwrap()
            .expose()
            .contains("1//r"));
        let err = render("claude", &cred("sk-ant-api03-K"), false).unwrap_err();
        assert!(err.to_string().contains("ANTHROPIC_API_KEY"));
    }
}
