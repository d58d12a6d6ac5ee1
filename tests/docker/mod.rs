//! What the Docker and Podman recipe tests share: a private engine, a fake API, an agent
//! whose gateway listens on loopback and the test bridge, and running a container of the
//! test image with the host's `/usr`, the npm CLIs and `keyferry` mounted read-only.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use crate::kf::fake_api::{FakeApi, REPLY};
use crate::kf::{self, ok, text, Home};
use testkit::docker::{Docker, IMAGE};
use testkit::podman::Podman;

pub const TOKEN: &str = "sk-ant-oat01-DOCKERrecipeAAAAbbbbCCCCdddd-4242";
pub const REFRESH: &str = "sk-ant-ort01-DOCKERrefreshAAAAbbbb-4343";
/// The port the README's recipes use, on the test bridge's own address (no other listener
/// can hold it: the address exists only for this test).
pub const PORT: u16 = 7778;

/// The container engine a recipe runs on.
pub enum Engine {
    Docker(Docker),
    Podman(Podman),
}

impl Engine {
    pub fn cmd(&self) -> std::process::Command {
        match self {
            Self::Docker(d) => d.cmd(),
            Self::Podman(p) => p.cmd(),
        }
    }

    pub fn dir(&self) -> &Path {
        match self {
            Self::Docker(d) => d.dir(),
            Self::Podman(p) => p.dir(),
        }
    }

    /// `run` flags this machine needs for the engine (not part of any recipe).
    pub fn run_flags(&self) -> &'static [&'static str] {
        match self {
            Self::Docker(_) => &[],
            Self::Podman(_) => &testkit::podman::RUN_LIMITS,
        }
    }

    pub fn log_text(&self) -> String {
        match self {
            Self::Docker(d) => d.log_text(),
            Self::Podman(_) => "(podman has no daemon)".to_owned(),
        }
    }

    pub fn docker(&mut self) -> &mut Docker {
        match self {
            Self::Docker(d) => d,
            Self::Podman(_) => panic!("a Docker recipe on Podman"),
        }
    }

    pub fn as_docker(&self) -> &Docker {
        match self {
            Self::Docker(d) => d,
            Self::Podman(_) => panic!("a Docker recipe on Podman"),
        }
    }
}

pub struct Setup {
    pub docker: Engine,
    pub api: FakeApi,
    pub h: Home,
    pub agent: kf::AgentProc,
}

/// A Docker engine, a fake API, and an agent whose gateway listens on loopback and on the
/// test bridge's host address, which does not exist yet.
pub fn setup() -> Setup {
    setup_with("")
}

/// [`setup`] with `more` appended to the config file.
pub fn setup_with(more: &str) -> Setup {
    let docker = Docker::start();
    let bridge = format!(", \"{}:{PORT}\"", docker.host_address());
    setup_on(Engine::Docker(docker), &bridge, more)
}

/// [`setup`] on `engine`, the gateway also on `extra_listen`.
pub fn setup_on(docker: Engine, extra_listen: &str, more: &str) -> Setup {
    let api = FakeApi::start();
    let h = Home::new();
    h.write(
        ".config/keyferry/config.toml",
        &format!(
            "[gateway]\nlisten = [\"127.0.0.1:0\"{extra_listen}]\nunix_socket = true\n\
             listen_retry_ms = 200\nupstream = \"{}\"\n{}",
            api.url,
            more.replace("{api}", &api.url)
        ),
        0o600,
    );
    ok(&h.run(&["setup"], Some(TOKEN), &[]));
    // Claude Code's own login on the host: what a container must never read.
    h.write(
        ".claude/.credentials.json",
        &format!(
            r#"{{"claudeAiOauth":{{"accessToken":"{TOKEN}","refreshToken":"{REFRESH}","expiresAt":4102444800000}}}}"#
        ),
        0o600,
    );
    let agent = h.start_agent();
    Setup {
        docker,
        api,
        h,
        agent,
    }
}

/// `keyferry grant NAME`: the placeholder it prints.
pub fn grant(h: &Home, name: &str) -> String {
    let (env, _) = ok(&h.run(&["grant", name, "--ttl", "1h"], None, &[]));
    env.lines()
        .find_map(|l| l.strip_prefix("ANTHROPIC_AUTH_TOKEN="))
        .unwrap_or_else(|| panic!("no placeholder in {env}"))
        .to_owned()
}

pub fn npm_dir() -> PathBuf {
    kf::claude_bin()
        .ancestors()
        .nth(3)
        .expect("target/npm above node_modules/.bin/claude")
        .to_owned()
}

/// `docker run --rm` of the test image with the host's `/usr`, the npm CLIs and the
/// `keyferry` binary read-only, then `extra` (the recipe's own flags), then `sh -c script`.
pub fn run_in(s: &Setup, extra: &[String], envs: &[(&str, &str)], script: &str) -> Output {
    let mut cmd = s.docker.cmd();
    cmd.args([
        "run",
        "--rm",
        "-v",
        "/usr:/usr:ro",
        "-v",
        "/etc/ssl:/etc/ssl:ro",
    ])
    .arg("-v")
    .arg(format!("{}:/opt/npm:ro", npm_dir().display()))
    .arg("-v")
    .arg(format!(
        "{}:/opt/kf/keyferry:ro",
        env!("CARGO_BIN_EXE_keyferry")
    ))
    .args([
        "-e",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1",
        "-e",
        "DISABLE_AUTOUPDATER=1",
    ])
    .args(s.docker.run_flags())
    .args(extra)
    .args([IMAGE, "sh", "-c", script])
    .envs(envs.iter().copied());
    testkit::run_with_timeout(&mut cmd, None, testkit::docker::DOCKER_TIMEOUT)
}

pub const CLAUDE: &str = "/opt/npm/node_modules/.bin/claude";

/// What a hostile container tries with what it can name from outside: the CLI, the host's
/// socket path, the host's bus, Claude Code's login, the agent's `/proc` entry.
pub fn attacks(s: &Setup) -> String {
    format!(
        "echo --attack--; /opt/kf/keyferry --require-agent get; \
         KEYFERRY_SOCK={sock} /opt/kf/keyferry --require-agent get; \
         printf '{{\"op\":\"hello\",\"version\":1}}\\n{{\"id\":1,\"op\":\"get\",\"name\":\"claude\"}}\\n' | socat -t 3 - UNIX-CONNECT:{sock}; \
         DBUS_SESSION_BUS_ADDRESS='{bus}' secret-tool search --all service keyferry; \
         cat {home}/.claude/.credentials.json; cat /proc/{pid}/environ; ls /proc | grep -c '^[0-9]'; true",
        sock = s.h.socket().display(),
        bus = s.h.ss.env().into_iter().find(|(k, _)| *k == "DBUS_SESSION_BUS_ADDRESS").map(|(_, v)| v).unwrap_or_default(),
        home = s.h.home.display(),
        pid = s.agent.pid(),
    )
}

/// Runs `script` in a container made with the recipe's `extra` flags, the placeholder in
/// its environment, and checks that nothing of the token was taken.
#[track_caller]
pub fn run_recipe(s: &Setup, extra: &[String], placeholder: &str, script: &str) -> Output {
    let out = run_in(s, extra, &[("ANTHROPIC_AUTH_TOKEN", placeholder)], script);
    assert_nothing_taken(s, &out, placeholder);
    out
}

#[track_caller]
pub fn assert_nothing_taken(s: &Setup, out: &Output, placeholder: &str) {
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "{all}\ndockerd: {}",
        s.docker.log_text()
    );
    assert!(all.contains(REPLY), "the real claude got no answer: {all}");
    assert!(!all.contains(TOKEN) && !all.contains(REFRESH), "{all}");
    let attack = all
        .split("--attack--")
        .nth(1)
        .unwrap_or_else(|| panic!("{all}"));
    // The CLI found no agent, socat no socket, the agent's pid no /proc entry.
    assert!(attack.contains("no keyferry agent is running"), "{attack}");
    assert!(attack.contains("No such file"), "{attack}");
    // The upstream got the host's token, never the placeholder.
    let bearers = s.api.wait_bearers(1, Duration::from_secs(10));
    assert!(bearers.iter().any(|b| b == TOKEN), "{bearers:?}");
    assert!(!bearers.iter().any(|b| b == placeholder), "{bearers:?}");
    // Nothing of the token in the engine's state (container configs, layers, logs).
    assert_eq!(
        kf::files_containing(s.docker.dir(), TOKEN),
        Vec::<PathBuf>::new()
    );
}
