//! Codex and Gemini CLI in a container on a real Docker bridge (Multicooker's layout), and
//! `keyferry grant --recipe docker` run as printed: each container holds a placeholder only
//! and the upstream sees the host's logins (the engine and fixtures of `tests/docker`).

#![cfg(target_os = "linux")]

mod common;
mod docker;
mod kf;

use std::path::PathBuf;
use std::time::Duration;

use docker::*;
use kf::fake_api::REPLY;
use kf::{ok, text};
use testkit::wait_until;

const CODEX_SIG: &str = "REALcodexDOCKERsignatureNOTleak-7171";
const CODEX_REFRESH: &str = "rt_REALcodexDOCKERrefreshNOTleak-7272";
const GEMINI: &str = "ya29.REALgeminiDOCKERaccessNOTleak-7373";

/// Codex and Gemini CLI side by side in one container on the bridge (Multicooker's
/// layout): each holds a placeholder only, both answer through the gateway, and the
/// upstream sees the host's logins.
#[test]
fn codex_and_gemini_in_a_bridge_container_hold_only_placeholders() {
    let mut s = setup_with(
        "[providers.openai]\nupstream = \"{api}\"\n[providers.google]\nupstream = \"{api}\"\n",
    );
    let (auth, access) = testkit::logins::codex_auth("acct-docker-1", CODEX_SIG, CODEX_REFRESH);
    s.h.write(".codex/auth.json", &auth, 0o600);
    s.h.write(
        ".gemini/oauth_creds.json",
        &testkit::logins::gemini_creds(GEMINI, CODEX_REFRESH),
        0o600,
    );
    let url = format!("http://host.docker.internal:{PORT}");
    let codex_home = s.h._dir.path().join("codex-home");
    let grant_env = |args: &[&str]| {
        let mut all = vec!["grant", "--ttl", "1h", "--base-url", &url];
        all.extend_from_slice(args);
        ok(&s.h.run(&all, None, &[])).0
    };
    let codex_env = grant_env(&[
        "cx",
        "--cred",
        "codex",
        "--codex-home",
        codex_home.to_str().unwrap(),
    ]);
    let gemini_env = grant_env(&["gm", "--cred", "gemini"]);
    // The listeners open with the first grant; the bridge is bound once it exists.
    let net = s.docker.docker().bridge();
    let want = format!("http://{}:{PORT}", s.docker.as_docker().host_address());
    wait_until(Duration::from_secs(15), "the late bridge bound", || {
        ok(&s.h.run(&["status"], None, &[])).0.contains(&want)
    });
    let env_file = s.h._dir.path().join("box.env");
    // CODEX_HOME is where the folder is mounted in the container, not the host's path.
    let lines: String = format!("{codex_env}{gemini_env}")
        .lines()
        .filter(|l| !l.starts_with("CODEX_HOME="))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&env_file, format!("{lines}CODEX_HOME=/box/codex\n")).unwrap();
    let extra: Vec<String> = [
        "--network",
        &net,
        "--add-host",
        "host.docker.internal:host-gateway",
        "--env-file",
        env_file.to_str().unwrap(),
        "-v",
        &format!("{}:/box/codex", codex_home.display()),
        "-e",
        "HOME=/box",
        "-e",
        "GEMINI_CLI_TRUST_WORKSPACE=true",
        "-e",
        "NO_BROWSER=true",
    ]
    .map(str::to_owned)
    .to_vec();
    let script = "cd /box && timeout 60 /opt/npm/node_modules/.bin/codex exec --skip-git-repo-check 'say hi'; echo codex=$?; \
                  timeout 60 /opt/npm/node_modules/.bin/gemini -p 'say hi' -m gemini-2.5-flash; echo gemini=$?; \
                  echo --env--; env";
    let out = run_in(&s, &extra, &[], script);
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "{all}\ndockerd: {}",
        s.docker.log_text()
    );
    assert!(all.contains("codex=0") && all.contains("gemini=0"), "{all}");
    assert!(all.matches(REPLY).count() >= 2, "{all}");
    for secret in [CODEX_SIG, CODEX_REFRESH, GEMINI] {
        assert!(
            !all.contains(secret),
            "{secret} reached the container: {all}"
        );
        assert_eq!(
            kf::files_containing(&codex_home, secret),
            Vec::<PathBuf>::new()
        );
        assert_eq!(
            kf::files_containing(s.docker.dir(), secret),
            Vec::<PathBuf>::new()
        );
    }
    let env = all.split("--env--").nth(1).unwrap();
    assert!(
        env.contains("KEYFERRY_CODEX_TOKEN=kfg_") && env.contains("GOOGLE_CLOUD_ACCESS_TOKEN=kfg_"),
        "{env}"
    );
    let bearers = |prefix: &str| s.api.bearers_at(prefix);
    assert!(!bearers("/backend-api/codex/responses").is_empty());
    assert!(bearers("/backend-api/").iter().all(|b| *b == access));
    assert!(!bearers("/v1internal:streamGenerateContent").is_empty());
    assert!(bearers("/v1internal").iter().all(|b| b == GEMINI));
}

/// `keyferry grant --recipe docker` pasted as printed, only `IMAGE` and the command filled
/// in (with this engine's network and the test image's mounts): the container's real
/// `claude` answers through the gateway, the upstream gets the stored token, and the
/// container's environment holds only the placeholder.
#[test]
fn the_printed_docker_recipe_runs_as_printed() {
    let mut s = setup();
    let (recipe, _) = ok(&s.h.run(
        &["grant", "rc", "--ttl", "1h", "--recipe", "docker"],
        None,
        &[],
    ));
    assert!(recipe.contains("IMAGE claude"), "{recipe}");
    let placeholder = recipe
        .lines()
        .find_map(|l| l.strip_prefix("export ANTHROPIC_AUTH_TOKEN='"))
        .and_then(|l| l.strip_suffix('\''))
        .unwrap_or_else(|| panic!("{recipe}"))
        .to_owned();
    let net = s.docker.docker().bridge();
    let want = format!("http://{}:{PORT}", s.docker.as_docker().host_address());
    wait_until(Duration::from_secs(15), "the late bridge bound", || {
        ok(&s.h.run(&["status"], None, &[])).0.contains(&want)
    });
    let (all, env) = s
        .docker
        .as_docker()
        .paste_claude_recipe(&recipe, &net, &npm_dir());
    assert!(all.contains(REPLY), "{all}");
    assert!(
        env.contains(&format!("ANTHROPIC_AUTH_TOKEN={placeholder}")),
        "{env}"
    );
    assert!(!all.contains(TOKEN), "{all}");
    let bearers = s.api.wait_bearers(1, Duration::from_secs(10));
    assert!(
        !bearers.is_empty() && bearers.iter().all(|b| b == TOKEN),
        "{bearers:?}"
    );
    assert_eq!(
        kf::files_containing(s.docker.dir(), TOKEN),
        Vec::<PathBuf>::new()
    );
}
