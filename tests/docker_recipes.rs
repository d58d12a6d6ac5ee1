//! The README's Docker recipes, run with a real Docker engine (a private `dockerd`, see
//! `testkit::docker`) and the no-network one on a real Podman (`testkit::podman`), and
//! attacked from inside each container: the real `claude` CLI works
//! through the gateway with only a placeholder, and the container's own tries at the token —
//! `keyferry get`, socat on the agent's socket, the session bus, `~/.claude`, the agent's
//! `/proc` entry, the upstream itself — get nothing. A container that is handed the agent's
//! socket by mistake is refused as a sandboxed peer named `docker`. The bridge is made after
//! the agent started (as an agent started at login always is) and is bound then.

#![cfg(target_os = "linux")]

mod common;
mod docker;
mod kf;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use docker::*;
use keyferry::domain::exit;
use kf::fake_api::REPLY;
use kf::{ok, text, Home};
use testkit::docker::IMAGE;
use testkit::podman::Podman;
use testkit::wait_until;

/// The README's bridge recipe: the gateway on the bridge address, `host.docker.internal`
/// from `--add-host …:host-gateway`, the placeholder copied from the environment (`-e VAR`).
#[test]
fn the_bridge_recipe_binds_a_late_bridge_and_the_container_holds_only_a_placeholder() {
    let mut s = setup();
    let placeholder = grant(&s.h, "ci");
    let want = format!(
        "gateway listening http://{}:{PORT}",
        s.docker.as_docker().host_address()
    );
    let st = ok(&s.h.run(&["status"], None, &[])).0;
    assert!(!st.contains(&want), "bound before the bridge existed: {st}");
    let net = s.docker.docker().bridge();
    wait_until(Duration::from_secs(15), "the late bridge bound", || {
        ok(&s.h.run(&["status"], None, &[])).0.contains(&want)
    });
    let extra: Vec<String> = [
        "--network",
        &net,
        "--add-host",
        "host.docker.internal:host-gateway",
        "-e",
        &format!("ANTHROPIC_BASE_URL=http://host.docker.internal:{PORT}"),
        "-e",
        "ANTHROPIC_AUTH_TOKEN",
    ]
    .map(str::to_owned)
    .to_vec();
    let upstream_port = s.api.url.rsplit(':').next().unwrap().to_owned();
    let script = format!(
        "timeout 60 {CLAUDE} -p ping; echo claude=$?; {attacks}; \
         echo; curl -s -m 10 -o /dev/null -w 'noauth=%{{http_code}}\\n' -X POST http://host.docker.internal:{PORT}/v1/messages; \
         curl -s -m 5 -o /dev/null -w 'upstream=%{{http_code}}\\n' http://host.docker.internal:{upstream_port}/v1/models; true",
        attacks = attacks(&s),
    );
    let out = run_recipe(&s, &extra, &placeholder, &script);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("noauth=401"), "{stdout}");
    // The upstream listens on the host's loopback: the bridge cannot reach it.
    assert!(stdout.contains("upstream=000"), "{stdout}");
}

/// The no-network recipe's flags: no network, only the gateway's socket mounted, Claude
/// Code pointed at it with `ANTHROPIC_UNIX_SOCKET`, the placeholder from the environment.
fn no_network_recipe(h: &Home) -> Vec<String> {
    let gw = h.path("run/gateway.sock");
    vec![
        "--network".into(),
        "none".into(),
        "-v".into(),
        format!("{}:/run/kf/gateway.sock", gw.display()),
        "-e".into(),
        "ANTHROPIC_UNIX_SOCKET=/run/kf/gateway.sock".into(),
        "-e".into(),
        "ANTHROPIC_BASE_URL=http://localhost".into(),
        "-e".into(),
        "ANTHROPIC_AUTH_TOKEN".into(),
    ]
}

/// The README's no-network recipe: only the gateway's socket is mounted; Claude Code
/// speaks to it through `ANTHROPIC_UNIX_SOCKET`.
#[test]
fn the_no_network_recipe_reaches_the_gateway_socket_and_nothing_else() {
    let s = setup();
    let placeholder = grant(&s.h, "offline");
    let extra = no_network_recipe(&s.h);
    let script = format!(
        "{CLAUDE} -p ping; {attacks}; echo; \
         curl -s -m 10 -o /dev/null -w 'noauth=%{{http_code}}\\n' --unix-socket /run/kf/gateway.sock -X POST http://localhost/v1/messages; \
         curl -s -m 10 -o /dev/null -w 'offroute=%{{http_code}}\\n' --unix-socket /run/kf/gateway.sock \
           -H \"Authorization: Bearer $ANTHROPIC_AUTH_TOKEN\" http://localhost/v1/organizations; true",
        attacks = attacks(&s),
    );
    let out = run_recipe(&s, &extra, &placeholder, &script);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("noauth=401"), "{stdout}");
    let offroute = stdout
        .lines()
        .find_map(|l| l.strip_prefix("offroute="))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(offroute.starts_with('4'), "{stdout}");
}

/// The README's compose file, as written, with a test overlay for the image and mounts:
/// `keyferry grant compose --format env > .env`, then `docker-compose run`.
#[test]
fn the_compose_recipe_as_written_holds_only_a_placeholder() {
    testkit::require(&[("docker-compose", "docker-compose")]);
    let mut s = setup();
    let net = s.docker.docker().bridge();
    let want = format!(
        "gateway listening http://{}:{PORT}",
        s.docker.as_docker().host_address()
    );
    let proj = s.h.path("proj");
    std::fs::create_dir_all(&proj).unwrap();
    std::fs::write(proj.join("compose.yaml"), readme_compose()).unwrap();
    std::fs::write(
        proj.join("test.yaml"),
        format!(
            "services:\n  agent:\n    image: {IMAGE}\n    networks: [kf]\n    volumes:\n      \
             - /usr:/usr:ro\n      - /etc/ssl:/etc/ssl:ro\n      - {npm}:/opt/npm:ro\n    \
             command: [\"timeout\", \"60\", \"{CLAUDE}\", \"-p\", \"ping\"]\n    environment:\n      \
             CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: \"1\"\n      DISABLE_AUTOUPDATER: \"1\"\n\
             networks:\n  kf:\n    external: true\n    name: {net}\n",
            npm = npm_dir().display()
        ),
    )
    .unwrap();
    let mut sh = s.h.command("sh");
    sh.args(["-c", "\"$0\" grant compose --ttl 1h --format env > .env"])
        .arg(env!("CARGO_BIN_EXE_keyferry"))
        .current_dir(&proj);
    let out = common::run_with_timeout(&mut sh, None, common::COMMAND_TIMEOUT);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dotenv = std::fs::read_to_string(proj.join(".env")).unwrap();
    let placeholder = dotenv
        .lines()
        .find_map(|l| l.strip_prefix("ANTHROPIC_AUTH_TOKEN="))
        .unwrap_or_else(|| panic!("{dotenv}"))
        .to_owned();
    wait_until(Duration::from_secs(15), "the bridge bound", || {
        ok(&s.h.run(&["status"], None, &[])).0.contains(&want)
    });
    let mut compose = s.h.command("docker-compose");
    compose
        .env("DOCKER_HOST", s.docker.as_docker().host())
        .args(["-p", "kfcompose", "-f", "compose.yaml", "-f", "test.yaml"])
        .args(["run", "--rm", "-T", "agent"])
        .current_dir(&proj);
    let out = testkit::run_with_timeout(&mut compose, None, testkit::docker::DOCKER_TIMEOUT);
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{all}");
    assert!(all.contains(REPLY), "{all}");
    let bearers = s.api.wait_bearers(1, Duration::from_secs(10));
    assert!(bearers.iter().any(|b| b == TOKEN), "{bearers:?}");
    assert!(!bearers.contains(&placeholder), "{bearers:?}");
    assert_eq!(kf::files_containing(&proj, TOKEN), Vec::<PathBuf>::new());
    assert_eq!(
        kf::files_containing(s.docker.dir(), TOKEN),
        Vec::<PathBuf>::new()
    );
}

/// The mistake: no network, but the agent's own socket mounted in.
fn agent_socket_mounted(h: &Home) -> Vec<String> {
    vec![
        "--network".into(),
        "none".into(),
        "-v".into(),
        format!("{}:/run/kf/agent.sock", h.socket().display()),
        "-e".into(),
        "KEYFERRY_SOCK=/run/kf/agent.sock".into(),
    ]
}

/// A container handed the agent's own socket (a mistake the README warns against) is a
/// sandboxed peer: the same uid, another mount and pid namespace, `/.dockerenv` in its root.
#[test]
fn a_container_given_the_agent_socket_is_refused_as_docker() {
    let s = setup();
    let extra = agent_socket_mounted(&s.h);
    let script = "/opt/kf/keyferry --require-agent get; echo \"exit=$?\"; \
         printf '{\"op\":\"hello\",\"version\":1}\\n{\"id\":1,\"op\":\"get\",\"name\":\"claude\"}\\n' \
         | socat -t 3 - UNIX-CONNECT:/run/kf/agent.sock";
    let out = run_in(&s, &extra, &[], script);
    let (stdout, _) = assert_refused_as(&out, "Docker");
    let reply = stdout
        .lines()
        .find(|l| l.contains("\"id\":1,"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(reply.contains("\"sandboxed_peer\""), "{reply}");
    let audit = std::fs::read_to_string(s.h.path(".local/state/keyferry/audit.jsonl")).unwrap();
    assert!(audit.contains("\"sandbox\":\"docker\""), "{audit}");
    assert!(!audit.contains(TOKEN));
    // The host is served as before.
    assert_eq!(
        ok(&s.h.run(&["--require-agent", "get"], None, &[]))
            .0
            .trim(),
        TOKEN
    );
}

/// A `keyferry get` in the container printed `exit=…` refused, naming the sandbox `kind`,
/// and nothing printed holds the token. Returns stdout and stderr.
#[track_caller]
fn assert_refused_as(out: &Output, kind: &str) -> (String, String) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        !stdout.contains(TOKEN) && !stderr.contains(TOKEN),
        "{stdout}{stderr}"
    );
    assert!(
        stdout.contains(&format!("exit={}", exit::REFUSED)),
        "{stdout}{stderr}"
    );
    assert!(
        stderr.contains(&format!("runs in a sandbox ({kind})")),
        "{stderr}"
    );
    (stdout, stderr)
}

/// The compose block of the README's gateway recipes, verbatim.
fn readme_compose() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let after = readme
        .split_once("Compose (`keyferry grant compose --format env > .env`")
        .expect("the README's compose recipe")
        .1;
    let block = after
        .split_once("```yaml\n")
        .expect("its yaml block")
        .1
        .split_once("```")
        .expect("the block's end")
        .0;
    assert!(
        block.contains("host.docker.internal:host-gateway"),
        "{block}"
    );
    block.to_owned()
}

/// The no-network recipe on Podman (`podman run --network none`, the gateway socket
/// mounted): the real `claude` works with the placeholder, and the container's tries at the
/// token get nothing. Podman's bridge recipe differs from Docker's only in the host name
/// (`host.containers.internal`).
#[test]
fn podman_no_network_recipe_holds_only_a_placeholder() {
    let s = setup_on(Engine::Podman(Podman::start()), "", "");
    let placeholder = grant(&s.h, "pod");
    let extra = no_network_recipe(&s.h);
    let script = format!("{CLAUDE} -p ping; {attacks}", attacks = attacks(&s));
    run_recipe(&s, &extra, &placeholder, &script);
}

/// A Podman container handed the agent's socket is a sandboxed peer named `Podman`
/// (`/run/.containerenv` in its root).
#[test]
fn a_podman_container_given_the_agent_socket_is_refused_as_podman() {
    let s = setup_on(Engine::Podman(Podman::start()), "", "");
    let extra = agent_socket_mounted(&s.h);
    let out = run_in(
        &s,
        &extra,
        &[],
        "/opt/kf/keyferry --require-agent get; echo \"exit=$?\"",
    );
    assert_refused_as(&out, "Podman");
}
