//! How a request's path and method may appear in a record or a log line, and the one
//! request answered before any provider is known. Which requests are forwarded is each
//! provider's (`provider::GatewayProvider::route`).

use http::Method;

/// Bun's connection warm-up (`HEAD /`, no credential): answered by the gateway itself,
/// never forwarded, for every provider.
#[must_use]
pub fn is_preconnect(method: &Method, path: &str) -> bool {
    method == Method::HEAD && path == "/"
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
    fn only_head_slash_is_a_preconnect() {
        assert!(is_preconnect(&Method::HEAD, "/"));
        assert!(!is_preconnect(&Method::GET, "/"));
        assert!(!is_preconnect(&Method::HEAD, "/v1/messages"));
    }
}
