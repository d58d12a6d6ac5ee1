//! Every credential parser (raw tokens, Claude Code login JSON, Codex `auth.json`, Gemini
//! `oauth_creds.json`) through `Credential::parse`, then `assume_expiry`, `inspect` and
//! `Debug`. Invariants: no panic; neither errors, `Debug` nor the inspection show a
//! token, refresh token or any other string of the input document.
#![no_main]

use keyferry::credential::Credential;
use keyferry::Secret;
use libfuzzer_sys::fuzz_target;
use time::{Duration, OffsetDateTime};

/// Strings shorter than this can occur in any message by chance ("pro", "a").
const MIN_SECRET: usize = 16;

fuzz_target!(|data: &[u8]| {
    // The first 8 bytes choose the setup-token lifetime (days, as config's u32) and the
    // inspection time; the rest is the credential text.
    if data.len() < 8 {
        return;
    }
    let (head, body) = data.split_at(8);
    let days = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let now_secs = i64::from(i32::from_le_bytes([head[4], head[5], head[6], head[7]])) * 64;
    let text = String::from_utf8_lossy(body).into_owned();
    let strings = json_strings(&text);
    match Credential::parse(&Secret::new(text.clone()), "fuzz") {
        Err(e) => {
            let shown = format!("{e} {e:?}");
            for s in strings.iter().filter(|s| s.len() >= MIN_SECRET) {
                assert!(!shown.contains(s.as_str()), "error shows input: {shown}");
            }
            if !text.trim_start().starts_with('{') {
                let token = text.trim();
                if token.len() >= MIN_SECRET {
                    assert!(!shown.contains(token), "error shows the token: {shown}");
                }
            }
        }
        Ok(mut c) => {
            let stored = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
            c.assume_expiry(stored, Duration::days(i64::from(days)));
            let now = OffsetDateTime::from_unix_timestamp(now_secs).unwrap();
            let inspection = c.inspect(now);
            let json = serde_json::to_string(&inspection).expect("an inspection serializes");
            let debug = format!("{c:?}");
            // What the view shows on purpose: plan, tier and scopes are not secret.
            let visible = format!(
                "{:?}{:?}{:?}{}{}",
                c.plan, c.rate_limit_tier, c.scopes, inspection.masked, inspection.fingerprint
            );
            let mut secrets = vec![c.token.expose().to_owned()];
            secrets.extend(c.refresh_token.as_ref().map(|r| r.expose().to_owned()));
            for s in secrets
                .iter()
                .filter(|s| s.len() >= MIN_SECRET && !visible.contains(s.as_str()))
            {
                assert!(!debug.contains(s.as_str()), "Debug shows a token: {debug}");
                assert!(
                    !json.contains(s.as_str()),
                    "inspection shows a token: {json}"
                );
            }
        }
    }
});

/// Every string value in `text` if it is JSON.
fn json_strings(text: &str) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s) => out.push(s.clone()),
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            serde_json::Value::Object(o) => o.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(text.trim()) {
        walk(&v, &mut out);
    }
    out
}
