//! Serving over the socket: the CLI with and without an agent, the socket's permissions,
//! the raw protocol, setup through the agent, the audit log, version checks.

use std::os::unix::fs::PermissionsExt;

use keyferry::client::{Client, ClientError};
use keyferry::protocol::VERSION;

use crate::kf::{self, ok, text};
use crate::{get, home_with_token, Raw, TOKEN, TOKEN2};

#[test]
fn without_an_agent_require_agent_fails_and_the_default_falls_back() {
    let h = home_with_token("");
    let out = h.run(&["--require-agent", "get"], None, &[]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no keyferry agent is running"));
    assert_eq!(ok(&h.run(&["get"], None, &[])).0.trim(), TOKEN);
}

#[test]
fn the_socket_is_private_and_serves_the_cli() {
    let h = home_with_token("");
    let agent = h.start_agent();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&agent.sock), 0o600);
    assert_eq!(mode(agent.sock.parent().unwrap()), 0o700);
    assert_eq!(
        ok(&h.run(&["--require-agent", "get"], None, &[])).0.trim(),
        TOKEN
    );
    let (status, _) = ok(&h.run(&["--require-agent", "status", "claude"], None, &[]));
    assert!(
        status.starts_with("claude: source=file:~/.config/cf/claude-token kind=setup-token"),
        "{status}"
    );
}

#[test]
fn a_raw_client_speaks_the_documented_protocol() {
    let h = home_with_token("");
    let agent = h.start_agent();
    let mut raw = Raw::connect(&agent.sock);
    let hello = raw.send(&format!(r#"{{"op":"hello","version":{VERSION}}}"#));
    assert_eq!(hello["ok"], true);
    assert_eq!(hello["result"]["pid"], agent.pid());
    let reply = raw.send(r#"{"op":"get","name":"claude","id":42}"#);
    assert_eq!(reply["id"], 42);
    assert_eq!(reply["result"]["token"], TOKEN);
    assert_eq!(reply["result"]["env_var"], "CLAUDE_CODE_OAUTH_TOKEN");
    let status = raw.send(r#"{"op":"status"}"#);
    assert!(
        !status.to_string().contains(&TOKEN[13..30]),
        "status carries no secret"
    );
}

/// Setup through the agent stores in the real Secret Service and is served at once; the
/// environment override still wins; clear falls back; the audit log says who asked.
#[test]
fn setup_through_the_agent_is_served_at_once_and_audited() {
    let h = home_with_token("");
    let _agent = h.start_agent();
    assert_eq!(
        ok(&h.run(&["--require-agent", "get"], None, &[])).0.trim(),
        TOKEN
    );
    let (_, err) = ok(&h.run(&["--require-agent", "setup"], Some(TOKEN2), &[]));
    assert!(err.contains("through the agent"), "{err}");
    assert_eq!(
        ok(&h.run(&["--require-agent", "get"], None, &[])).0.trim(),
        TOKEN2
    );
    let lookup = h.ss.secret_tool(
        &["lookup", "service", "cf-claude-token", "username", kf::USER],
        None,
    );
    assert_eq!(text(&lookup.stdout).trim(), TOKEN2);
    // The environment override still wins over the agent, as in cfauth.
    let envkey = "sk-ant-api03-OVERRIDEhhhhIIIIjjjj-3333";
    assert_eq!(
        ok(&h.run(&["get"], None, &[("CF_CLAUDE_API_KEY", envkey)]))
            .0
            .trim(),
        envkey
    );
    ok(&h.run(&["--require-agent", "clear"], None, &[]));
    assert_eq!(
        ok(&h.run(&["--require-agent", "get"], None, &[])).0.trim(),
        TOKEN
    );
    // The audit log holds who asked, and never a token.
    let (log, _) = ok(&h.run(&["log", "-n", "50", "--json"], None, &[]));
    assert!(
        log.contains("\"op\":\"get\"") && log.contains("allowed") && !log.contains("/socat"),
        "{log}"
    );
    assert!(
        log.contains(env!("CARGO_BIN_EXE_keyferry")),
        "the client's executable is recorded: {log}"
    );
    assert!(
        !log.contains(&TOKEN[13..30]) && !log.contains(&TOKEN2[13..30]),
        "{log}"
    );
}

#[test]
fn version_mismatch_is_reported_both_ways() {
    let h = home_with_token("");
    let agent = h.start_agent();
    for v in [0, VERSION + 1, u32::MAX] {
        match Client::connect_as(&agent.sock, v) {
            Err(ClientError::Refused(e)) => {
                assert_eq!(e.code, "version_mismatch");
                assert!(
                    e.message.contains(&format!("protocol {v}")),
                    "{}",
                    e.message
                );
            }
            Ok(_) => panic!("version {v} was accepted"),
            Err(other) => panic!("{other}"),
        }
    }
    let mut c = Client::connect_as(&agent.sock, VERSION).unwrap();
    assert_eq!(c.hello.version, VERSION);
    assert_eq!(get(&mut c).unwrap(), TOKEN);
    let mut raw = Raw::connect(&agent.sock);
    assert_eq!(
        raw.send(r#"{"op":"get","name":"claude"}"#)["error"]["code"],
        "handshake_required"
    );
}
