//! Codex CLI `~/.codex/auth.json`: an API key or ChatGPT OAuth tokens (JWTs).

use base64::Engine as _;
use serde_json::Value;
use time::OffsetDateTime;

use super::{str_field, Credential, CredentialError, Kind, Parts};

pub(super) fn parse(doc: &Value, origin: &str) -> Result<Credential, CredentialError> {
    let api_key =
        str_field(doc, "OPENAI_API_KEY", "OPENAI_API_KEY", origin)?.filter(|k| !k.is_empty());
    let tokens = doc.get("tokens").filter(|t| !t.is_null());
    let access = match tokens {
        Some(t) => str_field(t, "access_token", "tokens.access_token", origin)?,
        None => None,
    };
    let (token, refresh) = match (api_key, access) {
        (_, Some(access)) if !access.is_empty() => {
            let refresh = match tokens {
                Some(t) => str_field(t, "refresh_token", "tokens.refresh_token", origin)?,
                None => None,
            };
            (access, refresh)
        }
        (Some(key), _) => (key, None),
        _ => {
            return Err(CredentialError::Field {
                origin: origin.to_owned(),
                field: "tokens.access_token",
                problem: "missing or empty (and OPENAI_API_KEY is unset)",
                expected: "a token string",
            })
        }
    };
    let claims = jwt_claims(token);
    let expires_at = claims
        .as_ref()
        .and_then(|c| c.get("exp")?.as_i64())
        .and_then(|exp| OffsetDateTime::from_unix_timestamp(exp).ok());
    // The plan lives in the id_token's OpenAI auth claim.
    let plan = tokens
        .and_then(|t| t.get("id_token")?.as_str())
        .and_then(jwt_claims)
        .and_then(|c| {
            c.get("https://api.openai.com/auth")?
                .get("chatgpt_plan_type")?
                .as_str()
                .map(str::to_owned)
        });
    let scopes = claims
        .as_ref()
        .and_then(|c| c.get("scp"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Ok(Parts {
        kind: Kind::Codex,
        token,
        refresh,
        expires_at,
        plan,
        rate_limit_tier: None,
        scopes,
        // The workspace Codex names in `ChatGPT-Account-ID` (`TokenData.account_id`).
        account: tokens
            .and_then(|t| t.get("account_id")?.as_str())
            .filter(|a| !a.is_empty())
            .map(str::to_owned),
    }
    .into())
}

/// Decodes a JWT's payload without verifying it: we only read expiry and plan for display.
fn jwt_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use crate::credential::{Credential, Kind};
    use crate::secret::Secret;

    fn jwt(payload: &str) -> String {
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            b.encode(r#"{"alg":"none"}"#),
            b.encode(payload)
        )
    }

    #[test]
    fn parses_chatgpt_tokens_with_expiry_and_plan() {
        let access = jwt(r#"{"exp":1790000000}"#);
        let id = jwt(r#"{"https://api.openai.com/auth":{"chatgpt_plan_type":"pro"}}"#);
        let json = format!(
            r#"{{"OPENAI_API_KEY":null,"tokens":{{"id_token":"{id}","access_token":"{access}","refresh_token":"rt","account_id":"a"}},"last_refresh":"2026-11-01T00:00:00Z"}}"#
        );
        let c = Credential::parse(&Secret::new(json), "auth.json").unwrap();
        assert_eq!(c.kind, Kind::Codex);
        assert_eq!(c.expires_at.unwrap().unix_timestamp(), 1_790_000_000);
        assert_eq!(c.plan.as_deref(), Some("pro"));
        assert!(c.refresh_token.is_some());
        assert_eq!(c.account.as_deref(), Some("a"));
    }

    #[test]
    fn api_key_mode() {
        let c = Credential::parse(
            &Secret::new(r#"{"OPENAI_API_KEY":"sk-proj-1"}"#.into()),
            "a",
        )
        .unwrap();
        assert_eq!(c.token.expose(), "sk-proj-1");
        assert!(c.expires_at.is_none());
    }
}
