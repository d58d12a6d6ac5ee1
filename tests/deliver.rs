//! Delivery into sandboxes, proven with real parts: the real `claude` CLI (npm) against a
//! loopback fake Anthropic API, bubblewrap file-scoped mounts, `.env` sinks under crashes and
//! concurrency, and provisioning over `sh` and over `ssh` to a real sshd on 127.0.0.1.

// Real Secret Service, bubblewrap, sshd: these run on Linux only.
#![cfg(target_os = "linux")]

mod common;
mod kf;

use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kf::fake_api::{FakeApi, REPLY};
use kf::{assert_no_secret, ok, text, Home};

const SETUP: &str = "sk-ant-oat01-DELIVERsetupAAAAbbbbCCCC-1111";
const ACCESS_A: &str = "sk-ant-oat01-HOSTaccessAAAAbbbbCCCCdddd-AAAA";
const ACCESS_B: &str = "sk-ant-oat01-HOSTaccessREFRESHEDeeeeffff-BBBB";
const REFRESH: &str = "sk-ant-ort01-HOSTrefreshGGGGhhhhIIII-RRRR";
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

#[test]
fn exec_hands_the_stored_token_to_the_real_claude_cli() {
    let h = Home::new();
    ok(&h.run(&["setup"], Some(SETUP), &[]));
    let api = FakeApi::start();
    let claude = kf::claude_bin();
    let mut envs: Vec<(&str, String)> = claude_env(&api);
    // A host API key would outrank the OAuth token in Claude Code: exec removes it.
    envs.push((
        "ANTHROPIC_API_KEY",
        "sk-ant-api03-HOSTkeyMUSTnotWIN-9999".into(),
    ));
    let envs_ref: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let ps = kf::sample_ps(Arc::clone(&stop));
    let out = h.run(
        &[
            "exec",
            "--audit",
            "--",
            claude.to_str().unwrap(),
            "-p",
            "ping",
        ],
        None,
        &envs_ref,
    );
    stop.store(true, Ordering::SeqCst);
    let (stdout, stderr) = ok(&out);
    assert!(stdout.contains(REPLY), "{stdout}\n{stderr}");
    assert_eq!(api.bearers(), vec![SETUP.to_owned()]);
    let seen = api.seen.lock().unwrap().clone();
    let call = seen
        .iter()
        .find(|s| s.path.starts_with("/v1/messages"))
        .unwrap();
    assert!(
        call.beta
            .as_deref()
            .unwrap_or("")
            .contains("oauth-2025-04-20"),
        "{call:?}"
    );
    assert!(call.api_key.is_none(), "{call:?}");
    // The audit: generated, forwarded, removed — all masked.
    assert!(
        stderr.contains(
            "[~] CLAUDE_CODE_OAUTH_TOKEN=sk-ant-oat01-…1111  (claude: keychain:cf-claude-token)"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("[>] ANTHROPIC_BASE_URL="), "{stderr}");
    assert!(stderr.contains("[-] ANTHROPIC_API_KEY (removed: it would take precedence over CLAUDE_CODE_OAUTH_TOKEN)"), "{stderr}");
    assert_no_secret(&stderr, &[SETUP]);
    let ps = ps.join().unwrap();
    assert!(ps.contains("-p ping"), "ps sampling saw the run");
    assert_no_secret(&ps, &[SETUP]);
    // --dry-run prints the very same audit and starts nothing.
    let args = [
        "exec",
        "--env",
        "EXTRA=1",
        "--",
        claude.to_str().unwrap(),
        "-p",
        "ping",
    ];
    let dry = h.run(
        &[&args[..1], &["--dry-run"], &args[1..]].concat(),
        None,
        &envs_ref,
    );
    let real = h.run(
        &[&args[..1], &["--audit"], &args[1..]].concat(),
        None,
        &envs_ref,
    );
    let (dry_err, real_err) = (text(&dry.stderr), text(&real.stderr));
    assert!(
        dry_err.starts_with(&real_err[..real_err.find("\nCommand:").unwrap()]),
        "dry:\n{dry_err}\nreal:\n{real_err}"
    );
    assert!(dry_err.contains("[+] EXTRA=") && dry_err.contains("(dry run: nothing was started)"));
    assert_eq!(api.bearers().len(), 2, "the dry run sent nothing");
}

#[test]
fn snapshots_follow_the_hosts_refresh_into_a_running_bubblewrap_sandbox() {
    let h = Home::new();
    h.write(".claude/.credentials.json", &login(ACCESS_A), 0o600);
    let agent = h.start_agent();
    let snap = h.path("cooks/task1/.auth/claude/.credentials.json");
    let (_, err) = ok(&h.run(
        &["snapshot", "claude", "--out", snap.to_str().unwrap()],
        None,
        &[],
    ));
    assert!(err.contains("keeps it current"), "{err}");
    let first = std::fs::read_to_string(&snap).unwrap();
    assert!(
        first.contains(ACCESS_A) && !first.contains(REFRESH) && !first.contains("refreshToken"),
        "{first}"
    );
    assert_eq!(std::fs::metadata(&snap).unwrap().mode() & 0o777, 0o600);
    let inode = std::fs::metadata(&snap).unwrap().ino();

    // One long-lived sandbox: claude runs, waits for a go, runs again — never re-provisioned.
    let api = FakeApi::start();
    let sandbox_home = tempfile::tempdir().unwrap();
    let sb = sandbox_home.path().to_str().unwrap().to_owned();
    let fifo = h.path("go.fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let claude = kf::claude_bin();
    let script = format!(
        "{c} -p ping; read go < {f}; {c} -p ping",
        c = claude.display(),
        f = fifo.display()
    );
    let mut bwrap = Command::new("bwrap");
    bwrap
        .args(["--dev-bind", "/", "/", "--tmpfs", &sb])
        .args([
            "--ro-bind",
            snap.to_str().unwrap(),
            &format!("{sb}/.claude/.credentials.json"),
        ])
        .args(["--setenv", "HOME", &sb, "--chdir", &sb, "sh", "-c", &script])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .envs(claude_env(&api))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = bwrap.spawn().expect("bwrap (Debian package bubblewrap)");
    assert_eq!(
        api.wait_bearers(1, WAIT),
        vec![ACCESS_A.to_owned()],
        "first run used the snapshot"
    );

    // The host's Claude Code refreshes its login (atomic rename, as it writes it).
    let tmp = h.write(".claude/.credentials.json.tmp", &login(ACCESS_B), 0o600);
    std::fs::rename(&tmp, h.path(".claude/.credentials.json")).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while !std::fs::read_to_string(&snap).unwrap().contains(ACCESS_B) {
        assert!(
            std::time::Instant::now() < deadline,
            "snapshot not rewritten:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        std::fs::metadata(&snap).unwrap().ino(),
        inode,
        "rewritten in place, so the bind mount sees it"
    );
    std::fs::write(&fifo, "go\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(
        text(&out.stdout).matches(REPLY).count(),
        2,
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        api.bearers(),
        vec![ACCESS_A.to_owned(), ACCESS_B.to_owned()]
    );
    // The refresh token never entered the sandbox.
    assert!(!std::fs::read_to_string(&snap).unwrap().contains(REFRESH));

    // --forget stops the updates; the opt-in refresh token comes with a warning.
    ok(&h.run(&["snapshot", "--forget", snap.to_str().unwrap()], None, &[]));
    let owned = h.path("owned/.credentials.json");
    let (_, err) = ok(&h.run(
        &[
            "--no-agent",
            "snapshot",
            "--out",
            owned.to_str().unwrap(),
            "--include-refresh-token",
        ],
        None,
        &[],
    ));
    assert!(err.contains("log each other out"), "{err}");
    assert!(std::fs::read_to_string(&owned).unwrap().contains(REFRESH));
    let tmp = h.write(".claude/.credentials.json.tmp", &login(ACCESS_A), 0o600);
    std::fs::rename(&tmp, h.path(".claude/.credentials.json")).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        std::fs::read_to_string(&snap).unwrap().contains(ACCESS_B),
        "forgotten snapshots are left alone"
    );
}

#[test]
fn configured_dotenv_sink_is_kept_current() {
    let h = Home::new();
    h.write(".config/cf/claude-token", &format!("{SETUP}\n"), 0o600);
    h.write(
        "proj/.env",
        "# compose settings\r\nIMAGE=cpm-runner:demo\r\nCLAUDE_CODE_OAUTH_TOKEN=stale\r\n",
        0o644,
    );
    h.write(
        ".config/keyferry/config.toml",
        "[[sink]]\ncredential = \"claude\"\ndotenv = \"~/proj/.env\"\n",
        0o600,
    );
    let agent = h.start_agent();
    let env = h.path("proj/.env");
    let expect = |tok: &str| {
        format!("# compose settings\r\nIMAGE=cpm-runner:demo\r\nCLAUDE_CODE_OAUTH_TOKEN={tok}\r\n")
    };
    assert_eq!(
        std::fs::read_to_string(&env).unwrap(),
        expect(SETUP),
        "written at start"
    );
    assert_eq!(std::fs::metadata(&env).unwrap().mode() & 0o777, 0o600);
    let mut watcher = agent.client();
    let _: serde_json::Value = watcher.call(keyferry::protocol::Request::Watch {}).unwrap();
    let next = "sk-ant-oat01-NEXTtokenJJJJkkkkLLLL-2222";
    let tmp = h.write(".config/cf/claude-token.new", &format!("{next}\n"), 0o600);
    std::fs::rename(tmp, h.path(".config/cf/claude-token")).unwrap();
    watcher.set_timeout(Some(WAIT));
    loop {
        let ev = watcher.next_event().unwrap();
        if let keyferry::protocol::Event::SinkWritten { path, .. } = ev {
            assert_eq!(path, env.display().to_string());
            break;
        }
    }
    assert_eq!(std::fs::read_to_string(&env).unwrap(), expect(next));
}

#[test]
fn dotenv_writes_survive_kill_dash_nine_and_concurrent_writers() {
    let h = Home::new();
    // A large file widens the window between write and rename.
    let filler: String = (0..60_000)
        .map(|i| format!("# filler line {i}\n"))
        .collect();
    let path = h.path("big.env");
    let versions = |tok: &str| format!("{filler}CLAUDE_CODE_OAUTH_TOKEN={tok}\n");
    std::fs::write(&path, versions("v0")).unwrap();
    let mut current = "v0".to_owned();
    for i in 1..=25 {
        let next = format!("sk-ant-api03-CRASH{i:04}xxxxyyyyzzzz");
        let mut child = h
            .kf()
            .args([
                "--no-agent",
                "export",
                "--env-file",
                path.to_str().unwrap(),
                "--var",
                "CLAUDE_CODE_OAUTH_TOKEN",
            ])
            .env("CF_CLAUDE_API_KEY", &next)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(500 * (i % 12)));
        let _ = child.kill();
        let _ = child.wait();
        let text = std::fs::read_to_string(&path).unwrap();
        if text == versions(&next) {
            current = next;
        } else {
            assert_eq!(
                text,
                versions(&current),
                "round {i}: neither the old nor the new file"
            );
        }
    }
    // The next write sweeps temp files that killed writers left (they hold a token).
    ok(&h.run(
        &["--no-agent", "export", "--env-file", "big.env"],
        None,
        &[("CF_CLAUDE_API_KEY", "sk-ant-api03-FINALkeyAAAA")],
    ));
    let leftovers: Vec<_> = std::fs::read_dir(&h.home)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("keyferry-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Two writers updating different keys never lose each other's line.
    let small = h.write("shared.env", "# shared\nA=0\nB=0\n", 0o600);
    let writers: Vec<_> = ["A", "B"]
        .iter()
        .map(|key| {
            let (key, small) = ((*key).to_owned(), small.clone());
            let cmd = h.kf();
            let program = cmd.get_program().to_owned();
            let envs: Vec<_> = cmd
                .get_envs()
                .map(|(k, v)| (k.to_owned(), v.map(ToOwned::to_owned)))
                .collect();
            std::thread::spawn(move || {
                for i in 0..40 {
                    let mut c = Command::new(&program);
                    for (k, v) in &envs {
                        if let Some(v) = v {
                            c.env(k, v);
                        }
                    }
                    let out = c
                        .args([
                            "--no-agent",
                            "export",
                            "--env-file",
                            small.to_str().unwrap(),
                            "--var",
                            &key,
                        ])
                        .env("CF_CLAUDE_API_KEY", format!("sk-ant-api03-{key}{i:03}"))
                        .output()
                        .unwrap();
                    assert!(
                        out.status.success(),
                        "{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(&small).unwrap(),
        "# shared\nA=sk-ant-api03-A039\nB=sk-ant-api03-B039\n"
    );
}

#[test]
fn provision_over_sh_is_idempotent_and_never_shows_the_token() {
    let h = Home::new();
    ok(&h.run(&["setup"], Some(SETUP), &[]));
    h.write(".bashrc", "# my bashrc\nexport EDITOR=vi\n", 0o644);
    let stop = Arc::new(AtomicBool::new(false));
    let ps = kf::sample_ps(Arc::clone(&stop));
    let via = "sh -c 'sleep 0.3; exec sh'";
    let base = [("ANTHROPIC_BASE_URL", "https://proxy.corp.example")];
    let (out, _) = ok(&h.run(&["provision", "--via", via], None, &base));
    assert!(
        out.contains("added a # keyferry-claude-auth block"),
        "{out}"
    );
    let (out, _) = ok(&h.run(&["provision", "--via", via], None, &base));
    assert!(out.contains("replaced"), "{out}");
    stop.store(true, Ordering::SeqCst);
    let rc = std::fs::read_to_string(h.path(".bashrc")).unwrap();
    assert_eq!(
        rc,
        format!(
            "# my bashrc\nexport EDITOR=vi\n# keyferry-claude-auth\nexport CLAUDE_CODE_OAUTH_TOKEN='{SETUP}'\n\
             export ANTHROPIC_BASE_URL='https://proxy.corp.example'\n# end-keyferry-claude-auth\n"
        )
    );
    assert_eq!(
        std::fs::metadata(h.path(".bashrc")).unwrap().mode() & 0o777,
        0o600
    );
    let seen = ps.join().unwrap();
    assert!(seen.contains("sleep 0.3"), "ps sampled during the run");
    assert_no_secret(&seen, &[SETUP]);
    // A dry run shows the block masked; --remove takes it out again.
    let (_, err) = ok(&h.run(&["provision", "--via", "sh", "--dry-run"], None, &[]));
    assert!(
        err.contains("export CLAUDE_CODE_OAUTH_TOKEN='sk-ant-oat01-…1111'"),
        "{err}"
    );
    ok(&h.run(&["provision", "--via", "sh", "--remove"], None, &[]));
    assert_eq!(
        std::fs::read_to_string(h.path(".bashrc")).unwrap(),
        "# my bashrc\nexport EDITOR=vi\n"
    );
    // A failing transport is an error that says the block was not written.
    let out = h.run(&["provision", "--via", "false"], None, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("was not written"),
        "{}",
        text(&out.stderr)
    );
}

/// OpenSSH's sshd on 127.0.0.1, for the second test user, with a throwaway host key.
struct Sshd {
    child: std::process::Child,
    port: u16,
    key: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Sshd {
    fn start(user: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let keygen = |path: &std::path::Path| {
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(path)
                .output()
                .expect("ssh-keygen (Debian package openssh-client)");
            assert!(out.status.success(), "{}", text(&out.stderr));
        };
        keygen(&d.join("host_key"));
        keygen(&d.join("client_key"));
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {hk}\nAuthorizedKeysFile {ak}\nPidFile none\nUsePAM no\n\
             StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nAllowUsers {user}\n",
            hk = d.join("host_key").display(),
            ak = d.join("authorized_keys").display()
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        let sshd = common::which("sshd")
            .or_else(|| Some("/usr/sbin/sshd".into()))
            .unwrap();
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stderr(std::fs::File::create(d.join("sshd.log")).unwrap())
            .spawn()
            .expect("sshd (Debian package openssh-server)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "sshd did not start: {}",
                std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            port,
            key: d.join("client_key"),
            _dir: dir,
        }
    }

    fn via(&self, user: &str) -> String {
        format!(
            "ssh -i {} -p {} -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR {user}@127.0.0.1 sh",
            self.key.display(),
            self.port
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn provision_over_ssh_to_a_real_sshd() {
    let user = "kfother";
    kf::ensure_user(user);
    let sshd = Sshd::start(user);
    let h = Home::new();
    ok(&h.run(&["setup"], Some(SETUP), &[]));
    let rc_name = format!(".kf-test-rc-{}", std::process::id());
    let rc_arg = format!("~/{rc_name}");
    let remote_rc = std::path::PathBuf::from(format!("/home/{user}/{rc_name}"));
    std::fs::write(&remote_rc, "# theirs\n").unwrap();
    let _ = Command::new("chown")
        .args([&format!("{user}:{user}"), remote_rc.to_str().unwrap()])
        .status();
    let stop = Arc::new(AtomicBool::new(false));
    let ps = kf::sample_ps(Arc::clone(&stop));
    let via = sshd.via(user);
    let (out, err) = ok(&h.run(
        &[
            "provision",
            "--via",
            &via,
            "--rc",
            &rc_arg,
            "--marker",
            "cf-claude-auth",
        ],
        None,
        &[],
    ));
    assert!(
        out.contains("added a # cf-claude-auth block"),
        "{out}\n{err}"
    );
    ok(&h.run(
        &[
            "provision",
            "--via",
            &via,
            "--rc",
            &rc_arg,
            "--marker",
            "cf-claude-auth",
        ],
        None,
        &[],
    ));
    stop.store(true, Ordering::SeqCst);
    let text_rc = std::fs::read_to_string(&remote_rc).unwrap();
    assert_eq!(text_rc.matches("# cf-claude-auth").count(), 1, "{text_rc}");
    assert!(
        text_rc.starts_with("# theirs\n# cf-claude-auth\n") && text_rc.contains(SETUP),
        "{text_rc}"
    );
    let meta = std::fs::metadata(&remote_rc).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    let uid = text(
        &Command::new("id")
            .args(["-u", user])
            .output()
            .unwrap()
            .stdout,
    )
    .trim()
    .parse::<u32>()
    .unwrap();
    assert_eq!(meta.uid(), uid, "written as the sandbox user");
    // The user's login shell sees the token.
    let out = Command::new("runuser")
        .args([
            "-u",
            user,
            "--",
            "sh",
            "-c",
            &format!(". ~/{rc_name}; printf %s \"$CLAUDE_CODE_OAUTH_TOKEN\""),
        ])
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), SETUP);
    let seen = ps.join().unwrap();
    assert!(seen.contains("127.0.0.1"), "ps sampled the ssh run");
    assert_no_secret(&seen, &[SETUP]);
    ok(&h.run(
        &[
            "provision",
            "--via",
            &via,
            "--rc",
            &rc_arg,
            "--marker",
            "cf-claude-auth",
            "--remove",
        ],
        None,
        &[],
    ));
    assert_eq!(std::fs::read_to_string(&remote_rc).unwrap(), "# theirs\n");
    let _ = std::fs::remove_file(&remote_rc);
}
