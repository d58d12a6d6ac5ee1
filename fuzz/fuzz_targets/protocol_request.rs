//! A protocol request line, handled as the agent's connection loop handles it before
//! dispatch: line framing, blank-line skip, `Envelope` parse, the error reply with the
//! echoed id. Invariants: no panic; error replies quote no input; a parsed request
//! round-trips through its wire form; `Debug` never shows a token or passphrase.
#![no_main]

use keyferry::error::ErrorBody;
use keyferry::protocol::{err_line, Envelope, Request, WireSecret, MAX_LINE};
use keyferry::Secret;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The agent's codec: lines split at '\n', a trailing '\r' dropped, UTF-8 or the
    // connection closes, longer than MAX_LINE refused.
    for raw in data.split(|b| *b == b'\n') {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.len() > MAX_LINE {
            continue;
        }
        let Ok(line) = std::str::from_utf8(raw) else {
            continue;
        };
        handle(line);
    }
});

fn handle(line: &str) {
    if line.trim().is_empty() {
        return;
    }
    match serde_json::from_str::<Envelope>(line) {
        Err(e) => {
            let id = serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("id")?.as_u64());
            let body = ErrorBody {
                code: keyferry::domain::ErrorCode::BadRequest,
                message: format!(
                    "not a valid request (line 1, column {}); see docs/protocol.md",
                    e.column()
                ),
            };
            let reply = err_line(id, &body);
            let parsed: serde_json::Value =
                serde_json::from_str(&reply).expect("an error reply is JSON");
            assert_eq!(parsed["ok"], false);
        }
        Ok(envelope) => {
            let wire = serde_json::to_string(&envelope).expect("a request serializes");
            let again: Envelope = serde_json::from_str(&wire)
                .unwrap_or_else(|e| panic!("re-parsing {wire:?} failed: {e}"));
            let wire2 = serde_json::to_string(&again).expect("a request serializes");
            assert_eq!(wire, wire2, "the wire form is not stable");
            assert_eq!(envelope.id, again.id);
            assert_eq!(envelope.request.op(), again.request.op());
            check_debug_redacts(&envelope.request);
        }
    }
}

/// The secret of a request, and the same request with it replaced by a marker.
fn secret_of(r: &Request) -> Option<(String, Request)> {
    let marker = || WireSecret(Secret::new("MARKER".into()));
    match r {
        Request::Store { name, token } => Some((
            token.0.expose().to_owned(),
            Request::Store {
                name: name.clone(),
                token: marker(),
            },
        )),
        Request::Lock {
            passphrase: Some(p),
        } => Some((
            p.0.expose().to_owned(),
            Request::Lock {
                passphrase: Some(marker()),
            },
        )),
        Request::Unlock {
            passphrase: Some(p),
        } => Some((
            p.0.expose().to_owned(),
            Request::Unlock {
                passphrase: Some(marker()),
            },
        )),
        _ => None,
    }
}

fn check_debug_redacts(r: &Request) {
    let Some((secret, skeleton)) = secret_of(r) else {
        return;
    };
    // A secret that the redacted rendering contains anyway (its name, "redacted") is no leak.
    if secret.is_empty() || format!("{skeleton:?}").contains(&secret) {
        return;
    }
    let shown = format!("{r:?}");
    assert!(!shown.contains(&secret), "Debug shows the secret: {shown}");
}
