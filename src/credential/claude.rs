//! Claude Code's OAuth login JSON (`claudeAiOauth`) and Anthropic token prefixes.

use serde_json::Value;

use super::{epoch_ms_field, required_str, str_field, Credential, CredentialError, Kind, Parts};

pub const SETUP_PREFIX: &str = "sk-ant-oat01-";
pub const REFRESH_PREFIX: &str = "sk-ant-ort01-";
pub const API_KEY_PREFIX: &str = "sk-ant-api03-";

pub(super) fn parse(doc: &Value, origin: &str) -> Result<Credential, CredentialError> {
    let oauth = doc
        .get("claudeAiOauth")
        .filter(|v| v.is_object())
        .ok_or_else(|| CredentialError::Field {
            origin: origin.to_owned(),
            field: "claudeAiOauth",
            problem: "not an object",
            expected: "an object",
        })?;
    let token = required_str(oauth, "accessToken", "claudeAiOauth.accessToken", origin)?;
    let refresh = str_field(oauth, "refreshToken", "claudeAiOauth.refreshToken", origin)?;
    let expires_at = epoch_ms_field(oauth, "expiresAt", "claudeAiOauth.expiresAt", origin)?;
    let scopes = match oauth.get("scopes") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect(),
        Some(_) => {
            return Err(CredentialError::Field {
                origin: origin.to_owned(),
                field: "claudeAiOauth.scopes",
                problem: "not a list",
                expected: "a list of strings",
            })
        }
    };
    Ok(Parts {
        kind: Kind::ClaudeOauth,
        token,
        refresh,
        expires_at,
        plan: str_field(
            oauth,
            "subscriptionType",
            "claudeAiOauth.subscriptionType",
            origin,
        )?
        .map(str::to_owned),
        rate_limit_tier: str_field(
            oauth,
            "rateLimitTier",
            "claudeAiOauth.rateLimitTier",
            origin,
        )?
        .map(str::to_owned),
        scopes,
        account: None,
    }
    .into())
}

#[cfg(test)]
mod tests {
    use crate::credential::{Credential, Kind};
    use crate::secret::Secret;

    #[test]
    fn parses_login_json_and_keeps_document() {
        let json = r#"{"claudeAiOauth":{"accessToken":"sk-ant-oat01-AAAA","refreshToken":"sk-ant-ort01-BBBB","expiresAt":1790000000000,"scopes":["user:inference","user:profile"],"subscriptionType":"max","rateLimitTier":"default_claude_max_20x","clientId":"future-field"}}"#;
        let c = Credential::parse(&Secret::new(json.into()), "f").unwrap();
        assert_eq!(c.kind, Kind::ClaudeOauth);
        assert_eq!(c.token.expose(), "sk-ant-oat01-AAAA");
        assert_eq!(
            c.refresh_token.as_ref().unwrap().expose(),
            "sk-ant-ort01-BBBB"
        );
        assert_eq!(c.expires_at.unwrap().unix_timestamp(), 1_790_000_000);
        assert_eq!(c.plan.as_deref(), Some("max"));
        assert_eq!(c.scopes, ["user:inference", "user:profile"]);
        assert!(c.document.unwrap().expose().contains("future-field"));
    }

    #[test]
    fn missing_access_token_is_named() {
        let err =
            Credential::parse(&Secret::new(r#"{"claudeAiOauth":{}}"#.into()), "f").unwrap_err();
        assert!(
            err.to_string()
                .contains("claudeAiOauth.accessToken is missing"),
            "{err}"
        );
    }
}
