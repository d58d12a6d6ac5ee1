//! Snapshot rendering (`keyferry::snapshot::render`) for parsed credentials. Invariants:
//! no panic; the result is JSON; without `include_refresh_token` it never contains the
//! refresh token; it always carries the access token it serves.
#![no_main]

use keyferry::credential::Credential;
use keyferry::snapshot::render;
use keyferry::Secret;
use libfuzzer_sys::fuzz_target;
use time::{Duration, OffsetDateTime};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let include_refresh = flags & 1 == 1;
    let text = String::from_utf8_lossy(rest).into_owned();
    let Ok(mut c) = Credential::parse(&Secret::new(text), "fuzz") else {
        return;
    };
    if flags & 2 == 2 {
        let stored = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        c.assume_expiry(stored, Duration::days(365));
    }
    let Ok(out) = render("fuzz", &c, include_refresh) else {
        return;
    };
    let doc: serde_json::Value = serde_json::from_str(out.expose())
        .unwrap_or_else(|e| panic!("a snapshot is not JSON: {e}"));
    assert!(doc.is_object(), "a snapshot is a JSON object");
    let rendered = serde_json::to_string(&doc).unwrap();
    if let Some(refresh) = c.refresh_token.as_ref().map(Secret::expose) {
        // Copies the document holds outside its refresh field, or the access token being
        // the same string, are served on purpose; the refresh field's own copy never is.
        let original = c
            .document
            .as_ref()
            .and_then(|d| serde_json::from_str::<serde_json::Value>(d.expose()).ok());
        let elsewhere =
            original.as_ref().map_or(0, |o| count(o, refresh)) > 1 || c.token.expose() == refresh;
        if !include_refresh && !elsewhere {
            assert_eq!(
                count(&doc, refresh),
                0,
                "the refresh token is in a snapshot made without it: {rendered}"
            );
        }
    }
    let access = serde_json::to_string(c.token.expose()).unwrap();
    assert!(
        rendered.contains(&access),
        "the snapshot does not carry the token it serves: {rendered}"
    );
});

/// How many string values and keys in `v` are exactly `s`.
fn count(v: &serde_json::Value, s: &str) -> usize {
    match v {
        serde_json::Value::String(x) => usize::from(x == s),
        serde_json::Value::Array(a) => a.iter().map(|x| count(x, s)).sum(),
        serde_json::Value::Object(o) => o
            .iter()
            .map(|(k, x)| usize::from(k == s) + count(x, s))
            .sum(),
        _ => 0,
    }
}
