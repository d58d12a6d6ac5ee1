//! The attack from inside a sandbox that can reach the agent's socket: bubblewrap with the
//! whole root bound (`--dev-bind / /`, the socket and everything else visible), with its
//! own user and pid namespaces, and a bare `unshare --mount`. The same uid asks the real
//! agent for the token with the real `keyferry get` and with socat speaking the protocol
//! by hand; each gets `sandboxed_peer` and never the token, and the audit log names the
//! sandbox. With the one line the error prints, the same peer is served; a host peer always.

// bubblewrap, unshare and /proc namespaces: Linux only.
#![cfg(target_os = "linux")]

mod common;
mod kf;

use std::process::Output;

use keyferry::domain::exit;
use kf::{ok, text, Home};

const TOKEN: &str = "sk-ant-oat01-SANDBOXpeerAAAAbbbbCCCCddddEEEE-1234";

fn home_with_agent(config: &str) -> (Home, kf::AgentProc) {
    let h = Home::new();
    h.write(".config/keyferry/config.toml", config, 0o600);
    ok(&h.run(&["setup"], Some(TOKEN), &[]));
    let agent = h.start_agent();
    (h, agent)
}

/// Runs `argv` under `wrapper` (bwrap …, unshare …) with the home's environment.
fn inside(h: &Home, wrapper: &[&str], argv: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = h.command(wrapper[0]);
    cmd.args(&wrapper[1..]).args(argv);
    common::run_with_timeout(&mut cmd, stdin.map(str::as_bytes), common::COMMAND_TIMEOUT)
}

const BWRAP: &[&str] = &["bwrap", "--die-with-parent", "--dev-bind", "/", "/"];
const BWRAP_USER_PID: &[&str] = &[
    "bwrap",
    "--die-with-parent",
    "--dev-bind",
    "/",
    "/",
    "--unshare-user",
    "--unshare-pid",
];
const UNSHARE: &[&str] = &["unshare", "--mount"];

fn keyferry() -> &'static str {
    env!("CARGO_BIN_EXE_keyferry")
}

#[track_caller]
fn assert_refused(out: &Output, kind: &str) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(exit::REFUSED),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        !stdout.contains(TOKEN) && !stderr.contains(TOKEN),
        "{stdout}{stderr}"
    );
    assert!(stderr.contains("runs in a sandbox"), "{stderr}");
    assert!(stderr.contains(kind), "{stderr}");
    assert!(
        stderr.contains("keyferry grant NAME --cred claude"),
        "{stderr}"
    );
}

#[test]
fn keyferry_get_from_bubblewrap_and_unshare_gets_sandboxed_peer_not_the_token() {
    common::require_root("unshare --mount needs CAP_SYS_ADMIN");
    let (h, _agent) = home_with_agent("");
    let get = [keyferry(), "--require-agent", "get"];
    assert_refused(&inside(&h, BWRAP, &get, None), "(bubblewrap)");
    assert_refused(&inside(&h, BWRAP_USER_PID, &get, None), "(bubblewrap)");
    assert_refused(&inside(&h, UNSHARE, &get, None), "(unknown)");
    // export and exec read through the same get.
    let export = [keyferry(), "--require-agent", "export", "--token-only"];
    assert_refused(&inside(&h, BWRAP, &export, None), "(bubblewrap)");
    // The host is served as before.
    let (stdout, _) = ok(&h.run(&["--require-agent", "get"], None, &[]));
    assert_eq!(stdout.trim(), TOKEN);

    let audit = std::fs::read_to_string(h.path(".local/state/keyferry/audit.jsonl")).unwrap();
    let refused: Vec<&str> = audit
        .lines()
        .filter(|l| l.contains("\"sandboxed_peer\""))
        .collect();
    assert!(
        refused
            .iter()
            .any(|l| l.contains("\"sandbox\":\"bubblewrap\"")),
        "{audit}"
    );
    assert!(
        refused
            .iter()
            .any(|l| l.contains("\"sandbox\":\"unknown\"")),
        "{audit}"
    );
    assert!(!audit.contains(TOKEN));
}

#[test]
fn socat_speaking_the_protocol_from_bubblewrap_gets_nothing_that_bears_a_token() {
    let (h, _agent) = home_with_agent("");
    let sock = h.socket();
    let script = [
        r#"{"op":"hello","version":1,"client":"attacker"}"#,
        r#"{"id":1,"op":"get","name":"claude"}"#,
        r#"{"id":2,"op":"snapshot","name":"claude","path":"/tmp/kf-sandbox-snap.json"}"#,
        r#"{"id":3,"op":"grant","name":"mine","credential":"claude","ttl_secs":600}"#,
        r#"{"id":4,"op":"settings","notifications":false}"#,
        r#"{"id":5,"op":"approvals"}"#,
        r#"{"id":6,"op":"store","name":"claude","token":"sk-ant-oat01-EVILevilEVILevilEVILevil-0000"}"#,
        r#"{"id":7,"op":"status"}"#,
        "",
    ]
    .join("\n");
    let connect = format!("UNIX-CONNECT:{}", sock.display());
    let out = inside(
        &h,
        BWRAP,
        &["socat", "-t", "5", "-", &connect],
        Some(&script),
    );
    let replies = text(&out.stdout);
    assert!(!replies.contains(TOKEN), "{replies}");
    for id in 1..=6 {
        let line = replies
            .lines()
            .find(|l| l.contains(&format!("\"id\":{id},")))
            .unwrap_or_else(|| panic!("no reply {id} in {replies}"));
        assert!(line.contains("\"sandboxed_peer\""), "{line}");
    }
    // status carries no secret and stays open to the sandbox.
    let status = replies.lines().find(|l| l.contains("\"id\":7,")).unwrap();
    assert!(status.contains("\"ok\":true"), "{status}");
    // Nothing changed: the stored token is the same, no snapshot was written.
    let (stdout, _) = ok(&h.run(&["--require-agent", "get"], None, &[]));
    assert_eq!(stdout.trim(), TOKEN);
    assert!(!std::path::Path::new("/tmp/kf-sandbox-snap.json").exists());
}

#[test]
fn the_line_the_error_prints_lets_that_sandbox_in_and_no_other() {
    let (h, agent) = home_with_agent("[policy.claude]\nsandboxed_peers = [\"bubblewrap\"]\n");
    let get = [keyferry(), "--require-agent", "get"];
    let (stdout, _) = ok(&inside(&h, BWRAP, &get, None));
    assert_eq!(stdout.trim(), TOKEN);
    // A rule per credential leaves requests that name none refused.
    let lock = [keyferry(), "--require-agent", "lock"];
    let out = inside(&h, BWRAP, &lock, None);
    assert_eq!(
        out.status.code(),
        Some(exit::REFUSED),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("under [policy]"));
    drop(agent);

    // The executable form: an unknown sandbox allowed by the path the kernel reports.
    let exe = std::fs::canonicalize(keyferry()).unwrap();
    let (h, _agent) = home_with_agent(&format!(
        "[policy.claude]\nsandboxed_peers = [{:?}]\n",
        exe.display().to_string()
    ));
    let (stdout, _) = ok(&inside(&h, BWRAP, &get, None));
    assert_eq!(stdout.trim(), TOKEN);
    let out = inside(
        &h,
        BWRAP,
        &[
            "socat",
            "-t",
            "5",
            "-",
            &format!("UNIX-CONNECT:{}", h.socket().display()),
        ],
        Some("{\"op\":\"hello\",\"version\":1}\n{\"id\":1,\"op\":\"get\",\"name\":\"claude\"}\n"),
    );
    assert!(
        text(&out.stdout).contains("\"sandboxed_peer\""),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_bad_sandboxed_peers_value_is_an_error_naming_the_choices() {
    let h = Home::new();
    h.write(
        ".config/keyferry/config.toml",
        "[policy]\nsandboxed_peers = \"sometimes\"\n",
        0o600,
    );
    let out = h.run(&["status"], None, &[]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("\"refuse\", \"allow\""), "{stderr}");
    assert!(stderr.contains("bubblewrap, flatpak, toolbox"), "{stderr}");
}

/// `doctor` run inside a sandbox says what it is in.
#[test]
fn doctor_inside_bubblewrap_names_the_sandbox() {
    let (h, _agent) = home_with_agent("");
    let out = inside(&h, BWRAP, &[keyferry(), "doctor"], None);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("sandbox"), "{stdout}");
    assert!(stdout.contains("bubblewrap"), "{stdout}");
}

/// A desktop-shaped home (one runtime folder outside HOME with the bus, the keyring's
/// control socket and the agent's sockets), a stored token, Claude Code's own login, the
/// agent running with its gateway's Unix socket.
fn desktop_with_agent() -> (Home, kf::AgentProc) {
    let h = Home::with_one_runtime_dir();
    h.write(
        ".config/keyferry/config.toml",
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\nunix_socket = true\nupstream = \"http://127.0.0.1:9\"\n",
        0o600,
    );
    ok(&h.run(&["setup"], Some(TOKEN), &[]));
    h.write(
        ".claude/.credentials.json",
        &format!(r#"{{"claudeAiOauth":{{"accessToken":"{TOKEN}","refreshToken":"sk-ant-ort01-RECIPErefreshAAAAbbbb-77","expiresAt":4102444800000}}}}"#),
        0o600,
    );
    let agent = h.start_agent();
    (h, agent)
}

/// What a process inside a recipe's sandbox tries with what it can name from outside: the
/// CLI, socat on the agent's socket path, the Secret Service on the session bus (its
/// address given by hand, though the recipe unsets it), Claude Code's login, the keyring
/// files, the agent's `/proc` entry.
fn attack_script(h: &Home, agent: &kf::AgentProc) -> String {
    let bus =
        h.ss.env()
            .into_iter()
            .find(|(k, _)| *k == "DBUS_SESSION_BUS_ADDRESS")
            .map(|(_, v)| v)
            .unwrap();
    assert!(
        bus.contains(h.run.to_str().unwrap()),
        "the bus is in the runtime folder: {bus}"
    );
    format!(
        "{kf} --require-agent get; {kf} get; \
         printf '{{\"op\":\"hello\",\"version\":1}}\\n{{\"id\":1,\"op\":\"get\",\"name\":\"claude\"}}\\n' | socat -t 3 - UNIX-CONNECT:{sock}; \
         DBUS_SESSION_BUS_ADDRESS='{bus}' secret-tool search --all service keyferry; \
         cat {home}/.claude/.credentials.json; ls -la {home}/.local/share/keyrings; \
         cat /proc/{pid}/environ; cat /proc/{pid}/cmdline; echo attack-ran",
        kf = keyferry(),
        sock = h.socket().display(),
        home = h.home.display(),
        pid = agent.pid(),
    )
}

#[track_caller]
fn assert_nothing_taken(out: &Output) {
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(all.contains("attack-ran"), "{all}");
    assert!(!all.contains(TOKEN), "{all}");
    assert!(!all.contains("RECIPErefresh"), "{all}");
    // The agent's socket and the bus are not there at all, the keyring gave nothing.
    assert!(
        all.contains("socat") && all.contains("No such file"),
        "{all}"
    );
    assert!(all.contains("secret-tool: Could not connect"), "{all}");
}

/// The README's shared-network bubblewrap recipe, attacked from inside: its flags leave no
/// way to the token — not through the CLI, the socket path, the session bus, Claude Code's
/// login, the keyring files or the agent's `/proc` entry.
#[test]
fn the_readme_bubblewrap_recipe_leaves_nothing_to_take() {
    let (h, agent) = desktop_with_agent();
    let home = h.home.to_str().unwrap().to_owned();
    let runtime = h.run.to_str().unwrap().to_owned();
    let recipe = [
        "bwrap",
        "--die-with-parent",
        "--dev-bind",
        "/",
        "/",
        "--tmpfs",
        &home,
        "--tmpfs",
        &runtime,
        "--unshare-pid",
        "--proc",
        "/proc",
        "--unsetenv",
        "DBUS_SESSION_BUS_ADDRESS",
    ];
    let out = inside(&h, &recipe, &["sh", "-c", &attack_script(&h, &agent)], None);
    assert_nothing_taken(&out);
}

/// The README's `--unshare-net` bubblewrap recipe: only the gateway's socket is bound in.
/// From inside, the same attack gets nothing; the gateway socket answers 401 without the
/// placeholder; and an abstract Unix socket on the host (as a `dbus-launch` bus is) cannot
/// be reached, which the shared-network recipe cannot promise.
#[test]
fn the_readme_unshare_net_recipe_leaves_nothing_to_take() {
    let (h, agent) = desktop_with_agent();
    let abstract_name = common::unique_name("kf-abstract-bus");
    let mut listener = h.command("socat");
    listener.args([
        &format!("ABSTRACT-LISTEN:{abstract_name},fork"),
        "SYSTEM:echo abstract-bus-reached",
    ]);
    let _abstract_bus = common::Proc::spawn("socat", listener, h.path("socat.log"), None);
    let probe = format!("socat -t 2 - ABSTRACT-CONNECT:{abstract_name}");
    common::wait_until(
        std::time::Duration::from_secs(10),
        "the abstract socket",
        || {
            let mut c = h.command("sh");
            c.args(["-c", &probe]);
            text(&common::run_with_timeout(&mut c, None, common::COMMAND_TIMEOUT).stdout)
                .contains("abstract-bus-reached")
        },
    );
    let gw = h.socket().with_file_name("gateway.sock");
    common::wait_until(
        std::time::Duration::from_secs(10),
        "the gateway socket",
        || std::os::unix::net::UnixStream::connect(&gw).is_ok(),
    );
    let home = h.home.to_str().unwrap().to_owned();
    let runtime = h.run.to_str().unwrap().to_owned();
    let recipe = [
        "bwrap",
        "--die-with-parent",
        "--unshare-net",
        "--unshare-pid",
        "--dev-bind",
        "/",
        "/",
        "--proc",
        "/proc",
        "--tmpfs",
        &home,
        "--tmpfs",
        &runtime,
        "--ro-bind",
        gw.to_str().unwrap(),
        "/run/kf/gateway.sock",
        "--unsetenv",
        "DBUS_SESSION_BUS_ADDRESS",
    ];
    let script = format!(
        "{attack}; {probe}; echo; curl -s -m 10 -o /dev/null -w 'noauth=%{{http_code}}\\n' \
         --unix-socket /run/kf/gateway.sock -X POST http://localhost/v1/messages",
        attack = attack_script(&h, &agent),
    );
    let out = inside(&h, &recipe, &["sh", "-c", &script], None);
    assert_nothing_taken(&out);
    let stdout = text(&out.stdout);
    assert!(!stdout.contains("abstract-bus-reached"), "{stdout}");
    assert!(stdout.contains("noauth=401"), "{stdout}");
}

/// The pre-launch audit says what a bwrap argv exposes, and says nothing for the README's
/// recipe.
#[test]
fn the_dry_run_audit_marks_what_the_sandbox_can_reach() {
    let h = Home::new();
    ok(&h.run(&["setup"], Some(TOKEN), &[]));
    let home = h.home.to_str().unwrap().to_owned();
    let envs = [
        ("HOME", home.as_str()),
        ("XDG_RUNTIME_DIR", "/run/user/4242"),
    ];
    let open = h.run(
        &[
            "--no-agent",
            "exec",
            "--dry-run",
            "--",
            "bwrap",
            "--dev-bind",
            "/",
            "/",
            "claude",
        ],
        None,
        &envs,
    );
    let audit = format!("{}{}", text(&open.stdout), text(&open.stderr));
    assert!(
        audit.contains(
            "[!] reachable inside: the agent's socket and the session bus (/run/user/4242)"
        ),
        "{audit}"
    );
    assert!(
        audit.contains("[!] reachable inside: Claude Code's login"),
        "{audit}"
    );
    assert!(audit.contains("--tmpfs \"$XDG_RUNTIME_DIR\""), "{audit}");
    let safe = h.run(
        &[
            "--no-agent",
            "exec",
            "--dry-run",
            "--",
            "bwrap",
            "--dev-bind",
            "/",
            "/",
            "--tmpfs",
            &home,
            "--tmpfs",
            "/run/user/4242",
            "--unshare-pid",
            "--proc",
            "/proc",
            "claude",
        ],
        None,
        &envs,
    );
    let audit = format!("{}{}", text(&safe.stdout), text(&safe.stderr));
    assert!(audit.contains("Mounts:"), "{audit}");
    assert!(!audit.contains("[!]"), "{audit}");
    assert!(!audit.contains(TOKEN), "{audit}");
}
