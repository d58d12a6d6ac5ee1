//! `config.toml` parsing (`Config::parse`) and what the agent derives from a config: every
//! credential's spec, sink targets, expiry thresholds applied to tokens near and far, and a
//! setup-token's assumed expiry. Invariant: no panic, whatever the file says.
#![no_main]

use std::path::Path;

use keyferry::config::Config;
use keyferry::credential::Credential;
use keyferry::expiry::Thresholds;
use keyferry::Secret;
use libfuzzer_sys::fuzz_target;
use time::{Duration, OffsetDateTime};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = Config::parse(text, Path::new("/fuzz/config.toml")) else {
        return;
    };
    for target in &cfg.sinks {
        let _ = target.sink.path();
    }
    let _ = cfg.policy.approvers();
    let _ = cfg.gateway.specs(Path::new("/run/keyferry"));
    let thresholds: Thresholds = cfg.agent.thresholds();
    let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    for name in cfg.names() {
        let Ok(spec) = cfg.spec(&name) else {
            continue;
        };
        let mut setup =
            Credential::parse(&Secret::new("sk-ant-oat01-FUZZ".into()), "fuzz").unwrap();
        setup.assume_expiry(now, spec.setup_token_lifetime);
        let mut times = vec![
            setup.expires_at,
            Some(now),
            Some(now - Duration::days(3)),
            Some(now + Duration::hours(5)),
            Some(OffsetDateTime::from_unix_timestamp(0).unwrap()),
            Some(OffsetDateTime::from_unix_timestamp(253_402_300_799).unwrap()),
        ];
        times.push(None);
        for at in times {
            for refreshes in [false, true] {
                let _ = thresholds.due(refreshes, at, now);
                let _ = thresholds.health(refreshes, at, now);
                let _ = thresholds.next_change(refreshes, at, now);
            }
        }
    }
});
