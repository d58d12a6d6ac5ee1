//! Gemini CLI `~/.gemini/oauth_creds.json` (Google OAuth).

use serde_json::Value;

use super::{epoch_ms_field, required_str, str_field, Credential, CredentialError, Kind, Parts};

pub(super) fn parse(doc: &Value, origin: &str) -> Result<Credential, CredentialError> {
    let token = required_str(doc, "access_token", "access_token", origin)?;
    let refresh = str_field(doc, "refresh_token", "refresh_token", origin)?;
    let expires_at = epoch_ms_field(doc, "expiry_date", "expiry_date", origin)?;
    let scopes = str_field(doc, "scope", "scope", origin)?
        .map(|s| s.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    Ok(Parts {
        kind: Kind::Gemini,
        token,
        refresh,
        expires_at,
        plan: None,
        rate_limit_tier: None,
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
    fn parses_oauth_creds() {
        let json = r#"{"access_token":"ya29.AAA","refresh_token":"1//rt","scope":"openid https://www.googleapis.com/auth/cloud-platform","token_type":"Bearer","id_token":"x","expiry_date":1790000000000}"#;
        let c = Credential::parse(&Secret::new(json.into()), "oauth_creds.json").unwrap();
        assert_eq!(c.kind, Kind::Gemini);
        assert_eq!(c.scopes.len(), 2);
        assert_eq!(c.expires_at.unwrap().unix_timestamp(), 1_790_000_000);
    }
}
