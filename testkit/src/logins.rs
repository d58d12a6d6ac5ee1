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
    codex_auth_at(account, sig, refresh, FAR_EXP, "2026-12-01T00:00:00Z")
}

/// As [`codex_auth`], with the access token expiring at `exp` (epoch seconds) and
/// `last_refresh` as given.
#[must_use]
pub fn codex_auth_at(
    account: &str,
    sig: &str,
    refresh: &str,
    exp: i64,
    last_refresh: &str,
) -> (String, String) {
    let access = codex_access_jwt(exp, sig);
    let id = codex_id_jwt(account, sig);
    let doc = serde_json::json!({"OPENAI_API_KEY": null, "tokens": {"id_token": id, "access_token": access, "refresh_token": refresh, "account_id": account}, "last_refresh": last_refresh});
    (doc.to_string(), access)
}

fn b64(v: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

/// An (unsigned) ChatGPT access token JWT expiring at `exp`, its signature part `sig`.
#[must_use]
pub fn codex_access_jwt(exp: i64, sig: &str) -> String {
    let head = b64(&serde_json::json!({"alg":"RS256","typ":"JWT"}));
    let body = b64(&serde_json::json!({"exp": exp, "scp": ["openid"]}));
    format!("{head}.{body}.{sig}")
}

/// An (unsigned) ChatGPT id token JWT for workspace `account`, as Codex parses it.
#[must_use]
pub fn codex_id_jwt(account: &str, sig: &str) -> String {
    let head = b64(&serde_json::json!({"alg":"RS256","typ":"JWT"}));
    let body = b64(
        &serde_json::json!({"email":"u@example.com","https://api.openai.com/auth":{"chatgpt_plan_type":"pro","chatgpt_account_id":account}}),
    );
    format!("{head}.{body}.{sig}")
}

/// Gemini CLI's `oauth_creds.json` for `access` and `refresh`, expiring far ahead.
#[must_use]
pub fn gemini_creds(access: &str, refresh: &str) -> String {
    gemini_creds_at(access, refresh, FAR_EXP * 1000)
}

/// As [`gemini_creds`], expiring at `expiry_ms` (epoch milliseconds, as the CLI stores it).
#[must_use]
pub fn gemini_creds_at(access: &str, refresh: &str, expiry_ms: i64) -> String {
    serde_json::json!({"access_token": access, "refresh_token": refresh, "scope": "https://www.googleapis.com/auth/cloud-platform", "token_type": "Bearer", "expiry_date": expiry_ms}).to_string()
}
