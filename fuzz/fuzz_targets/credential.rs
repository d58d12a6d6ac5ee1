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
    match Credential::parse(&Secret::new(text.clone()), "fuzz") {
        Err(e) => {
            // Errors carry no input: the same input with every secret character masked
            // (shape, prefixes, whitespace and emptiness kept) gives the same message. A
            // check for the token as a substring would flag inputs that merely spell out
            // an error message.
            let masked = Credential::parse(&Secret::new(masked_input(&text)), "fuzz")
                .expect_err("masking keeps an input invalid");
            assert_eq!(
                format!("{e} {e:?}"),
                format!("{masked} {masked:?}"),
                "the error depends on the secret's characters"
            );
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

/// Keeps a 13-character prefix (`sk-ant-oat01-`), whitespace and control characters; every
/// other character becomes `x`.
fn mask(s: &str) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if i < 13 || c.is_whitespace() || c.is_control() {
                c
            } else {
                'x'
            }
        })
        .collect()
}

/// The input with its secrets masked: every string value of a JSON document (its keys and
/// layout kept), or the raw token. Invalid JSON is kept: its errors quote only positions.
fn masked_input(text: &str) -> String {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::String(s) => *s = mask(s),
            serde_json::Value::Array(a) => a.iter_mut().for_each(walk),
            serde_json::Value::Object(o) => o.values_mut().for_each(walk),
            _ => {}
        }
    }
    let trimmed = text.trim();
    if !trimmed.starts_with('{') {
        return mask(trimmed);
    }
    match serde_json::from_str::<serde_json::Value>(trimmed) {
        Ok(mut v) => {
            walk(&mut v);
            v.to_string()
        }
        Err(_) => text.to_owned(),
    }
}
