//! The gateway child role of the gateway benchmark; its upstream is testkit's
//! (`testkit::bench_upstream`), the one home of every fake upstream.

use std::sync::Arc;

/// The child role: a Keyferry gateway in front of `KF_BENCH_UPSTREAM`, one grant, on
/// 127.0.0.1:0. Prints `READY addr placeholder codex-placeholder gemini-placeholder` (a
/// grant on a Claude, a Codex and a Gemini login), serves until stdin closes.
pub fn gateway_role() {
    use keyferry::credential::Kind;
    use keyferry::gateway::{self, Limits, Listener, MemoryContext, NewGrant};
    // `current`: one thread for everything (no cross-thread wake-ups); default: tokio's
    // multi-thread runtime, as the agent runs.
    let rt = if std::env::var("KF_BENCH_GATEWAY_RT").as_deref() == Ok("current") {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    } else {
        tokio::runtime::Runtime::new().unwrap()
    };
    rt.block_on(async {
        let url = std::env::var("KF_BENCH_UPSTREAM").unwrap();
        let ctx = Arc::new(MemoryContext::new(
            keyferry::http::Upstream::new(&url, None).unwrap(),
        ));
        let mut placeholders = Vec::new();
        for (cred, kind) in [
            ("claude", Kind::ClaudeOauth),
            ("codex", Kind::Codex),
            ("gemini", Kind::Gemini),
        ] {
            ctx.set_login(
                cred,
                gateway::Lent {
                    kind,
                    token: keyferry::Secret::new(super::TOKEN.into()),
                    account: (kind == Kind::Codex).then(|| "acct-bench".to_owned()),
                },
            );
            let p = ctx
                .grant(NewGrant {
                    name: format!("bench-{cred}"),
                    credential: cred.into(),
                    ttl: std::time::Duration::from_secs(3600),
                    max_concurrent: None,
                    daily_token_budget: None,
                })
                .unwrap();
            placeholders.push(p.expose().to_owned());
        }
        let l = Listener::bind(&"127.0.0.1:0".parse().unwrap(), false)
            .await
            .unwrap();
        println!("READY {} {}", l.base_url(), placeholders.join(" "));
        let ctx: Arc<dyn gateway::GatewayContext> = ctx;
        let stop = async {
            let _ = tokio::task::spawn_blocking(|| {
                std::io::copy(&mut std::io::stdin(), &mut std::io::sink())
            })
            .await;
        };
        gateway::run(vec![l], ctx, Limits::default(), stop).await;
    });
}
