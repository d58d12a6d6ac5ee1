//! The gateway's credential swap, attacked: the upstream gets the host's current token and
//! never the placeholder; bad placeholders, foreign paths and non-Claude-Code clients on a
//! subscription are refused before any upstream call; nothing secret reaches a log line.

mod gw;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gw::upstream::{Script, Upstream};
use gw::{call, error_type, messages, records, Gateway, API_KEY, OAUTH, OAUTH_B, WAIT};
use http::Request;
use http_body_util::Full;
use keyferry::credential::Kind;
use keyferry::gateway::Limits;
use keyferry::Secret;

/// Trace-level capture of everything this test binary logs through `tracing`.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture() -> Capture {
    static CAP: std::sync::OnceLock<Capture> = std::sync::OnceLock::new();
    CAP.get_or_init(|| {
        let cap = Capture::default();
        let writer = cap.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .init();
        cap
    })
    .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_gets_the_stored_token_and_beta_never_the_placeholder_nor_a_log_line() {
    let logs = capture();
    let up = Upstream::http(Script::Json).await;
    let gw = Gateway::start(&up.url, None, Limits::default()).await;
    let p = gw.grant("box", "claude");
    let mut req = messages(&gw.url, p.expose(), false);
    // The sandbox tries to smuggle more credentials; none may pass.
    req.headers_mut()
        .insert("x-api-key", p.expose().parse().unwrap());
    req.headers_mut()
        .insert("cookie", "session=stolen".parse().unwrap());
    req.headers_mut()
        .insert("x-claude-code-session-id", "sess-1".parse().unwrap());
    let (status, _, body) = call(req).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("pong-from-upstream"), "{body}");

    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(
        (s.method.as_str(), s.uri.as_str()),
        ("POST", "/v1/messages?beta=true")
    );
    assert_eq!(
        s.headers["authorization"],
        format!("Bearer {OAUTH}").as_str()
    );
    assert_eq!(
        s.headers["anthropic-beta"],
        "claude-code-20250219,oauth-2025-04-20"
    );
    assert_eq!(s.headers["anthropic-version"], "2023-06-01");
    assert_eq!(s.headers["x-claude-code-session-id"], "sess-1");
    assert_eq!(s.headers["host"], up.addr.to_string().as_str());
    for gone in ["x-api-key", "cookie"] {
        assert!(!s.headers.contains_key(gone), "{gone} reached upstream");
    }
    let all = format!("{:?}{}", s.headers, String::from_utf8_lossy(&s.body));
    assert!(
        !all.contains(p.expose()),
        "the placeholder reached upstream"
    );
    assert!(String::from_utf8_lossy(&s.body).contains("\"ping\""));

    let rec = records(&gw.ctx, 1).await;
    assert_eq!(rec[0].grant.as_deref(), Some("box"));
    assert_eq!((rec[0].path.as_str(), rec[0].status), ("/v1/messages", 200));
    let rec_text = format!("{rec:?}");
    // A wrong placeholder too, so the refusal path logs as well.
    let (status, _, _) = call(messages(&gw.url, "kfg_wrong", false)).await;
    assert_eq!(status, 401);
    // And a sandbox that hides its placeholder in a path or a method.
    let sneaky = Request::builder()
        .method(http::Method::from_bytes(format!("X{}", &p.expose()[4..20]).as_bytes()).unwrap())
        .uri(format!("{}/v1/{}", gw.url, p.expose()))
        .header("authorization", format!("Bearer {}", p.expose()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, body) = call(sneaky).await;
    assert_eq!(status, 404);
    assert!(!body.contains(&p.expose()[4..20]), "{body}");
    gw.stop().await;

    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        text.contains("gateway request done") && text.contains("gateway refused"),
        "{text}"
    );
    for secret in [
        p.expose(),
        OAUTH,
        "kfg_wrong",
        &p.expose()[4..24],
        &OAUTH[14..30],
    ] {
        assert!(!text.contains(secret), "a secret in the logs: {text}");
        assert!(
            !rec_text.contains(secret),
            "a secret in a record: {rec_text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_go_as_x_api_key_and_x_api_key_placeholders_are_accepted() {
    let up = Upstream::http(Script::Json).await;
    let gw = Gateway::start(&up.url, None, Limits::default()).await;
    let p = gw.grant("k", "key");
    let mut req = messages(&gw.url, "unused", false);
    req.headers_mut().remove("authorization");
    req.headers_mut()
        .insert("x-api-key", p.expose().parse().unwrap());
    req.headers_mut()
        .insert("user-agent", "my-sdk/1.0".parse().unwrap());
    req.headers_mut().remove("x-app");
    let (status, _, body) = call(req).await;
    assert_eq!(status, 200, "{body}");
    let s = &up.seen()[0];
    assert_eq!(s.headers["x-api-key"], API_KEY);
    assert!(!s.headers.contains_key("authorization"));
    assert_eq!(s.headers["anthropic-beta"], "claude-code-20250219");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_placeholders_get_401_and_no_upstream_call() {
    let up = Upstream::http(Script::Json).await;
    let gw = Gateway::start(&up.url, None, Limits::default()).await;
    let revoked = gw.grant("gone", "claude");
    gw.ctx.revoke("gone").unwrap();
    let expired = gw.grant("old", "claude");
    gw.ctx.grants().grants.iter_mut().for_each(|g| {
        if g.name == "old" {
            g.expires = time::OffsetDateTime::now_utc() - Duration::from_secs(1);
        }
    });
    let cases = [
        ("missing", None),
        ("wrong", Some("kfg_0123456789abcdef".to_owned())),
        ("the real token itself", Some(OAUTH.to_owned())),
        ("revoked", Some(revoked.expose().to_owned())),
        ("expired", Some(expired.expose().to_owned())),
    ];
    for (what, placeholder) in cases {
        let mut req = messages(&gw.url, placeholder.as_deref().unwrap_or(""), true);
        if placeholder.is_none() {
            req.headers_mut().remove("authorization");
        }
        let (status, _, body) = call(req).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(error_type(&body), "authentication_error", "{what}");
        if let Some(p) = &placeholder {
            assert!(!body.contains(p.as_str()), "{what}: the placeholder echoed");
        }
    }
    let (_, _, body) = call(messages(&gw.url, revoked.expose(), true)).await;
    assert!(body.contains("revoked"), "{body}");
    let (_, _, body) = call(messages(&gw.url, expired.expose(), true)).await;
    assert!(body.contains("expired"), "{body}");
    assert!(
        up.seen().is_empty(),
        "an upstream call was made: {:?}",
        up.seen()
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_outside_the_list_get_404_and_no_upstream_call() {
    let up = Upstream::http(Script::Json).await;
    let gw = Gateway::start(&up.url, None, Limits::default()).await;
    let p = gw.grant("box", "claude");
    for (method, path) in [
        ("POST", "/v1/files"),
        ("GET", "/v1/organizations/me"),
        ("POST", "/v1/messages/../files"),
        ("POST", "/v1/messages/batches"),
        ("GET", "/api/oauth/profile"),
        ("DELETE", "/v1/messages"),
    ] {
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", gw.url))
            .header("authorization", format!("Bearer {}", p.expose()))
            .header("user-agent", gw::CLAUDE_UA)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let (status, _, body) = call(req).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert_eq!(error_type(&body), "not_found_error");
    }
    // Bun's warm-up HEAD / carries no credential: answered here, never forwarded.
    let head = Request::head(format!("{}/", gw.url))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(call(head).await.0, 200);
    assert!(up.seen().is_empty(), "{:?}", up.seen());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_token_serves_only_claude_code() {
    let up = Upstream::http(Script::Json).await;
    let gw = Gateway::start(&up.url, None, Limits::default()).await;
    let p = gw.grant("box", "claude");
    let mut req = messages(&gw.url, p.expose(), false);
    req.headers_mut()
        .insert("user-agent", "python-httpx/0.27".parse().unwrap());
    req.headers_mut().remove("x-app");
    let (status, _, body) = call(req).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(error_type(&body), "permission_error");
    assert!(body.contains("Claude Code only"), "{body}");
    assert!(up.seen().is_empty());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_swap_between_two_requests_changes_what_upstream_receives() {
    let up = Upstream::http(Script::Json).await;
    let gw = Gateway::start(&up.url, None, Limits::default()).await;
    let p = gw.grant("box", "claude");
    assert_eq!(call(messages(&gw.url, p.expose(), false)).await.0, 200);
    gw.ctx
        .set_token("claude", Kind::ClaudeOauth, Secret::new(OAUTH_B.into()));
    assert_eq!(call(messages(&gw.url, p.expose(), false)).await.0, 200);
    let auth: Vec<_> = up
        .seen()
        .iter()
        .map(|s| s.headers["authorization"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        auth,
        [format!("Bearer {OAUTH}"), format!("Bearer {OAUTH_B}")]
    );
    tokio::time::timeout(WAIT, gw.stop()).await.unwrap();
}
