//! The real thing: the real `claude` CLI (npm) inside bubblewrap with only the gateway's
//! URL and a placeholder. The upstream receives the host's token; the sandbox's
//! environment and files never hold it. Then with `--unshare-net`: the gateway's Unix
//! socket bind-mounted in, reached through a socat shim, and through Claude Code's own
//! `ANTHROPIC_UNIX_SOCKET` (which the installed build honours: see docs/gateway.md).

mod gw;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gw::upstream::{Script, Upstream};
use gw::{Gateway, OAUTH};
use keyferry::gateway::Limits;

const RUN: Duration = Duration::from_secs(120);
const SOCK_IN: &str = "/run/keyferry-gw/gateway.sock";
/// The README's shim port. It is bound only inside the sandbox's own network namespace
/// (`--unshare-net`), where nothing else listens, so it can never meet the user's agent.
const SHIM_PORT: u16 = 7778;

fn claude_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KEYFERRY_TEST_CLAUDE") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/npm/node_modules/.bin/claude");
    assert!(
        p.exists(),
        "the real claude CLI is missing at {}: `npm install --prefix target/npm @anthropic-ai/claude-code@2`",
        p.display()
    );
    p
}

/// Runs `script` under bash in a bubblewrap sandbox whose HOME is `home` (a host dir, so
/// its files can be searched afterwards), with exactly `env`.
async fn sandbox(
    home: &Path,
    extra: &[&str],
    env: Vec<(&'static str, String)>,
    script: String,
) -> (String, String) {
    let sb = "/home/sandbox";
    let mut cmd = Command::new("bwrap");
    cmd.args([
        "--die-with-parent",
        "--dev-bind",
        "/",
        "/",
        "--tmpfs",
        "/home",
    ])
    .args(["--bind", home.to_str().unwrap(), sb])
    .args(extra)
    .args(["--setenv", "HOME", sb, "--chdir", sb, "bash", "-c", &script])
    .env_clear()
    .env("PATH", std::env::var("PATH").unwrap())
    .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
    .env("DISABLE_AUTOUPDATER", "1")
    .envs(env);
    let out = tokio::task::spawn_blocking(move || testkit::run_bounded(&mut cmd, None, RUN))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("bwrap (Debian package bubblewrap): {e}"));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "sandbox failed: {}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    (stdout, stderr)
}

/// Every file under `dir`, searched for `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file()
                && std::fs::read(e.path())
                    .is_ok_and(|b| String::from_utf8_lossy(&b).contains(needle))
            {
                hits.push(e.path());
            }
        }
    }
    hits
}

/// What every variant checks: the answer came back, upstream got the host token and the
/// oauth beta, never the placeholder; the sandbox's env and files never held the token.
fn assert_ferried(up: &Upstream, placeholder: &str, stdout: &str, home: &Path) {
    assert!(
        stdout.contains("pong-from-upstream"),
        "claude's answer: {stdout}"
    );
    let env_dump = stdout.split("--env--").nth(1).expect("the env dump");
    assert!(
        env_dump.contains(&format!("ANTHROPIC_AUTH_TOKEN={placeholder}")),
        "{env_dump}"
    );
    assert!(!stdout.contains(OAUTH), "the token reached the sandbox");
    assert!(
        files_containing(home, OAUTH).is_empty(),
        "the token is in a sandbox file"
    );
    let seen = up.seen();
    let msgs: Vec<_> = seen
        .iter()
        .filter(|s| s.uri.starts_with("/v1/messages"))
        .collect();
    assert!(
        !msgs.is_empty(),
        "no Messages call reached upstream: {seen:?}"
    );
    for s in &seen {
        assert_eq!(
            s.headers["authorization"],
            format!("Bearer {OAUTH}").as_str(),
            "{}",
            s.uri
        );
        let beta = s
            .headers
            .get("anthropic-beta")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        assert!(beta.split(',').any(|b| b == "oauth-2025-04-20"), "{beta}");
        assert_eq!(
            s.headers["user-agent"].to_str().unwrap().split('/').next(),
            Some("claude-cli")
        );
        let all = format!("{:?}{}", s.headers, String::from_utf8_lossy(&s.body));
        assert!(
            !all.contains(placeholder),
            "the placeholder reached upstream"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_claude_in_bwrap_with_only_a_placeholder_shared_net() {
    let up = Upstream::http(Script::Auto).await;
    let gw = Gateway::start(&up.url, None, Limits::default()).await;
    let p = gw.grant("bwrap", "claude");
    let home = tempfile::tempdir().unwrap();
    let script = format!("{} -p ping; echo --env--; env", claude_bin().display());
    let env = vec![
        ("ANTHROPIC_BASE_URL", gw.url.clone()),
        ("ANTHROPIC_AUTH_TOKEN", p.expose().to_owned()),
    ];
    let (stdout, _) = sandbox(home.path(), &[], env, script).await;
    assert_ferried(&up, p.expose(), &stdout, home.path());
    let g = gw.ctx.grants().get("bwrap").cloned().unwrap();
    assert!(g.requests >= 1 && g.tokens.input_tokens >= 25, "{g:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_claude_in_bwrap_unshare_net_through_the_socket_and_a_socat_shim() {
    let up = Upstream::http(Script::Auto).await;
    let gw = Gateway::start(&up.url, None, Limits::default()).await;
    let p = gw.grant("netless", "claude");
    let home = tempfile::tempdir().unwrap();
    let sock = gw.socket.clone().unwrap();
    let bind = [
        "--unshare-net",
        "--ro-bind",
        sock.to_str().unwrap(),
        SOCK_IN,
    ];
    // The shim: a loopback port inside the sandbox's own network namespace.
    let script = format!(
        "socat TCP-LISTEN:{SHIM_PORT},fork,reuseaddr,bind=127.0.0.1 UNIX-CONNECT:{SOCK_IN} & \
         for i in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/{SHIM_PORT}) 2>/dev/null && break; sleep 0.05; done; \
         {} -p ping; kill %1; echo --env--; env",
        claude_bin().display()
    );
    let env = vec![
        (
            "ANTHROPIC_BASE_URL",
            format!("http://127.0.0.1:{SHIM_PORT}"),
        ),
        ("ANTHROPIC_AUTH_TOKEN", p.expose().to_owned()),
    ];
    let (stdout, _) = sandbox(home.path(), &bind, env, script).await;
    assert_ferried(&up, p.expose(), &stdout, home.path());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_claude_in_bwrap_unshare_net_with_anthropic_unix_socket() {
    let up = Upstream::http(Script::Auto).await;
    let gw = Gateway::start(&up.url, None, Limits::default()).await;
    let p = gw.grant("netless", "claude");
    let home = tempfile::tempdir().unwrap();
    let sock = gw.socket.clone().unwrap();
    let bind = [
        "--unshare-net",
        "--ro-bind",
        sock.to_str().unwrap(),
        SOCK_IN,
    ];
    let script = format!("{} -p ping; echo --env--; env", claude_bin().display());
    let env = vec![
        ("ANTHROPIC_BASE_URL", "http://localhost".to_owned()),
        ("ANTHROPIC_UNIX_SOCKET", SOCK_IN.to_owned()),
        ("ANTHROPIC_AUTH_TOKEN", p.expose().to_owned()),
    ];
    let (stdout, _) = sandbox(home.path(), &bind, env, script).await;
    assert_ferried(&up, p.expose(), &stdout, home.path());
    gw.stop().await;
}
