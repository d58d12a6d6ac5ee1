//! Which requests the gateway forwards (only what Claude Code calls), and how a request's
//! path and method may appear in a record or a log line.

use http::Method;

/// What to do with a request.
pub enum Route {
    Api,
    Preconnect,
    Refused,
}

/// Only what Claude Code calls. Paths are compared exactly: no normalisation to trick.
pub fn route(method: &Method, path: &str) -> Route {
    let model_id = |id: &str| {
        !id.is_empty()
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
            && id != "."
            && id != ".."
    };
    match (method, path) {
        (&Method::POST, "/v1/messages" | "/v1/messages/count_tokens")
        | (&Method::GET, "/v1/models") => Route::Api,
        (&Method::GET, p) if p.strip_prefix("/v1/models/").is_some_and(model_id) => Route::Api,
        (&Method::HEAD, "/") => Route::Preconnect,
        _ => Route::Refused,
    }
}

/// An extension method is the client's free text: recorded as `OTHER`.
#[must_use]
pub fn loggable_method(method: &Method) -> String {
    let m = method.as_str();
    if m.len() <= 8 && m.bytes().all(|b| b.is_ascii_uppercase()) {
        m.to_owned()
    } else {
        "OTHER".to_owned()
    }
}

/// The path as it may appear in a record, a log line or an error: a sandbox could put a
/// placeholder or a token in it, so anything shaped like one is cut, and it is bounded.
#[must_use]
pub fn loggable_path(path: &str) -> String {
    const MAX: usize = 128;
    let mut out = String::with_capacity(path.len().min(MAX));
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        let secretish = segment.starts_with(super::placeholder::PREFIX)
            || segment.starts_with("sk-ant-")
            || segment.len() > 40;
        out.push_str(if secretish { "[redacted]" } else { segment });
    }
    if out.len() > MAX {
        let cut = (0..=MAX)
            .rev()
            .find(|&i| out.is_char_boundary(i))
            .unwrap_or(0);
        out.truncate(cut);
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_logged_without_anything_secret_shaped() {
        assert_eq!(loggable_path("/v1/messages"), "/v1/messages");
        assert_eq!(loggable_method(&Method::POST), "POST");
        assert_eq!(
            loggable_method(&Method::from_bytes(b"Xkfg_abc").unwrap()),
            "OTHER"
        );
        assert_eq!(loggable_path("/x/kfg_0123abcd/y"), "/x/[redacted]/y");
        assert_eq!(loggable_path("/sk-ant-oat01-abc"), "/[redacted]");
        assert_eq!(
            loggable_path(&format!("/{}", "a".repeat(41))),
            "/[redacted]"
        );
        let long = "/ab".repeat(100);
        assert!(loggable_path(&long).chars().count() <= 129);
    }

    #[test]
    fn only_claude_codes_paths_are_routed() {
        let api = |m: Method, p: &str| matches!(route(&m, p), Route::Api);
        assert!(api(Method::POST, "/v1/messages"));
        assert!(api(Method::POST, "/v1/messages/count_tokens"));
        assert!(api(Method::GET, "/v1/models"));
        assert!(api(Method::GET, "/v1/models/claude-sonnet-4-5"));
        assert!(matches!(route(&Method::HEAD, "/"), Route::Preconnect));
        for (m, p) in [
            (Method::GET, "/v1/messages"),
            (Method::POST, "/v1/messages/"),
            (Method::POST, "/v1/messages/../files"),
            (Method::POST, "/v1/files"),
            (Method::GET, "/v1/models/.."),
            (Method::GET, "/v1/models/a/b"),
            (Method::POST, "/v1/complete"),
            (Method::GET, "/"),
            (Method::DELETE, "/v1/messages"),
        ] {
            assert!(matches!(route(&m, p), Route::Refused), "{m} {p}");
        }
    }
}
