//! The gateway in front of a TLS upstream the test owns (a CA made by rcgen): trusted via
//! `extra_ca_file` it forwards over HTTP/2 by ALPN; untrusted, it refuses with a 502 that
//! names the cause and never sends the token.

mod gw;

use gw::upstream::{Script, Upstream};
use gw::{call, error_type, messages, Gateway, OAUTH};
use keyferry::gateway::Limits;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_tls_upstream_gets_the_token_over_h2() {
    let up = Upstream::tls(Script::Json).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = up.ca_file(dir.path());
    let gw = Gateway::start(&up.url, Some(&ca), Limits::default()).await;
    let p = gw.grant("box", "claude");
    let (status, _, body) = call(messages(&gw.url, p.expose(), false)).await;
    assert_eq!(status, 200, "{body}");
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].version,
        http::Version::HTTP_2,
        "ALPN should pick h2"
    );
    assert_eq!(
        seen[0].headers["authorization"],
        format!("Bearer {OAUTH}").as_str()
    );
    assert_eq!(
        seen[0].headers["anthropic-beta"],
        "claude-code-20250219,oauth-2025-04-20"
    );
    assert!(!format!("{:?}", seen[0].headers).contains(p.expose()));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_refused_with_502_naming_the_cause() {
    let up = Upstream::tls(Script::Json).await;
    let gw = Gateway::start(&up.url, None, Limits::default()).await;
    let p = gw.grant("box", "claude");
    let (status, _, body) = call(messages(&gw.url, p.expose(), false)).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(error_type(&body), "api_error");
    assert!(
        body.contains("certificate") && body.contains("UnknownIssuer"),
        "{body}"
    );
    assert!(!body.contains(OAUTH) && !body.contains(p.expose()));
    assert!(
        up.seen().is_empty(),
        "a request got through an untrusted TLS session"
    );
    let rec = gw::records(&gw.ctx, 1).await;
    assert_eq!(rec[0].status, 502);
    gw.stop().await;
}
