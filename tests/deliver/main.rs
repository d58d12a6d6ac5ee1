//! Delivery into sandboxes, proven with real parts: the real `claude` CLI (npm) against a
//! loopback fake Anthropic API ([`claude`]), snapshots bind-mounted into a running bubblewrap
//! sandbox ([`snapshots`]), `.env` sinks under crashes and concurrency ([`dotenv`]), and
//! provisioning over `sh` and over `ssh` to a real sshd on 127.0.0.1 ([`provision`]).

// Real Secret Service, bubblewrap, sshd: these run on Linux only.
#![cfg(target_os = "linux")]

#[path = "../common/mod.rs"]
mod common;
#[path = "../kf/mod.rs"]
mod kf;

mod claude;
mod dotenv;
mod one_writer;
mod provision;
mod snapshots;

use std::time::Duration;

use kf::fake_api::FakeApi;

const SETUP: &str = "sk-ant-oat01-DELIVERsetupAAAAbbbbCCCC-1111";
const ACCESS_A: &str = "sk-ant-oat01-HOSTaccessAAAAbbbbCCCCdddd-AAAA";
const ACCESS_B: &str = "sk-ant-oat01-HOSTaccessREFRESHEDeeeeffff-BBBB";
const REFRESH: &str = "sk-ant-ort01-HOSTrefreshGGGGhhhhIIII-RRRR";
/// The overall deadline of every wait in these tests.
const WAIT: Duration = Duration::from_secs(30);

fn login(access: &str) -> String {
    format!(
        r#"{{"claudeAiOauth":{{"accessToken":"{access}","refreshToken":"{REFRESH}","expiresAt":4102444800000,"scopes":["user:inference","user:profile"],"subscriptionType":"max"}}}}"#
    )
}

/// What claude needs to run offline against the fake API.
fn claude_env(api: &FakeApi) -> Vec<(&'static str, String)> {
    vec![
        ("ANTHROPIC_BASE_URL", api.url.clone()),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".into()),
        ("DISABLE_AUTOUPDATER", "1".into()),
    ]
}
