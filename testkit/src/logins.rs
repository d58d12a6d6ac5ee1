//! The host's logins of the CLIs Keyferry reads, as each CLI writes them, with values a
//! test can search for afterwards: Codex's `auth.json` (ChatGPT tokens as JWTs, unsigned
//! here, and the workspace id) and Gemini CLI's `oauth_creds.json`.

use base64::Engine as _;

/// Far in the future (2100-01-01), in seconds.
pub const FAR_EXP: i64 = 4_102_444_800;

/// A ChatGPT login as `codex login` writes it: the document and its access token. `sig`
/// (the JWTs' signature part) and `refresh` are what must never leave the host.
#[must_use]
pub fn codex_auth(account: &str, sig: &str, refresh: &str) -> (String, String) {
    let b = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let head = b(serde_json::json!({"alg":"RS256","typ":"JWT"}));
    let access = format!(
        "{head}.{}.{sig}",
        b(serde_json::json!({"exp": FAR_EXP, "scp": ["openid"]}))
    );
    let id = format!(
        "{head}.{}.{sig}",
        b(
            serde_json::json!({"email":"u@example.com","https://api.openai.com/auth":{"chatgpt_plan_type":"pro","chatgpt_account_id":account}})
        )
    );
    let doc = serde_json::json!({"OPENAI_API_KEY": null, "tokens": {"id_token": id, "access_token": access, "refresh_token": refresh, "account_id": account}, "last_refresh": "2026-12-01T00:00:00Z"});
    (doc.to_string(), access)
}

/// Gemini CLI's `oauth_creds.json` for `access` and `refresh`, expiring far ahead.
#[must_use]
pub fn gemini_creds(access: &str, refresh: &str) -> String {
    serde_json::json!({"access_token": access, "refresh_token": refresh, "scope": "https://www.googleapis.com/auth/cloud-platform", "token_type": "Bearer", "expiry_date": FAR_EXP * 1000}).to_string()
}
