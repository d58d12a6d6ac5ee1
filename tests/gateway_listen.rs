//! Where the gateway listens, from where another user of the machine sits: no TCP port
//! while no grant exists (the Unix socket always), a grant opens one before it prints its
//! variables and the last revoke closes it; an address that cannot be bound waits with its
//! reason shown and keeps no other listener off; a bridge that appears later is bound, and
//! dropped when it goes.

#![cfg(target_os = "linux")]

mod common;
mod kf;

use std::time::Duration;

use kf::fake_api::FakeApi;
use kf::{ok, Home};
use testkit::wait_until;

const SETUP: &str = "sk-ant-oat01-LISTENsetupAAAAbbbbCCCC-1111";

fn home(api: &FakeApi, listen: &str) -> Home {
    let h = Home::new();
    h.write(
        ".config/keyferry/config.toml",
        &format!(
            "[gateway]\nlisten = [{listen}]\nunix_socket = true\nlisten_retry_ms = 200\nupstream = \"{}\"\n",
            api.url
        ),
        0o600,
    );
    ok(&h.run(&["setup"], Some(SETUP), &[]));
    h
}

/// The TCP ports `pid` listens on, read as any user could: its socket inodes matched
/// against the kernel's table.
fn tcp_listening(pid: i32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_owned)
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                let port = f[1].rsplit(':').next().unwrap();
                ports.push(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports
}

fn base_url(env: &str) -> String {
    env.lines()
        .find_map(|l| l.strip_prefix("ANTHROPIC_BASE_URL="))
        .unwrap()
        .to_owned()
}

/// One HTTP request; the status line, or the connect error.
fn http_get(base: &str) -> Result<String, std::io::Error> {
    use std::io::{Read, Write};
    let addr = base.strip_prefix("http://").unwrap();
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET /v1/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    Ok(out.lines().next().unwrap_or_default().to_owned())
}

fn status(h: &Home) -> String {
    ok(&h.run(&["status"], None, &[])).0
}

#[test]
fn no_tcp_port_without_a_grant_and_the_last_revoke_closes_it() {
    let api = FakeApi::start();
    let h = home(&api, "\"127.0.0.1:0\"");
    let agent = h.start_agent();
    let sock = h.path("run/gateway.sock");
    wait_until(Duration::from_secs(10), "the gateway's Unix socket", || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    assert_eq!(tcp_listening(agent.pid()), Vec::<u16>::new());
    let st = status(&h);
    assert!(
        st.contains("gateway closed 127.0.0.1:0 (no grants)"),
        "{st}"
    );

    let (env, _) = ok(&h.run(&["grant", "box", "--ttl", "1h"], None, &[]));
    let base = base_url(&env);
    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
    assert_ne!(port, 0, "{env}");
    assert_eq!(tcp_listening(agent.pid()), vec![port]);
    let answer = http_get(&base).unwrap();
    assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
    assert!(status(&h).contains(&format!("gateway listening {base}")));

    ok(&h.run(&["revoke", "box"], None, &[]));
    wait_until(Duration::from_secs(10), "the port closed", || {
        tcp_listening(agent.pid()).is_empty()
    });
    assert!(http_get(&base).is_err(), "{base} still answers");
    assert!(std::os::unix::net::UnixStream::connect(&sock).is_ok());
}

#[test]
fn an_expired_last_grant_closes_the_port() {
    let api = FakeApi::start();
    let h = home(&api, "\"127.0.0.1:0\"");
    let agent = h.start_agent();
    let (env, _) = ok(&h.run(&["grant", "brief", "--ttl", "2s"], None, &[]));
    let base = base_url(&env);
    assert!(http_get(&base).is_ok());
    wait_until(Duration::from_secs(15), "the port closed on expiry", || {
        tcp_listening(agent.pid()).is_empty()
    });
}

#[test]
fn an_address_not_on_this_machine_waits_and_keeps_no_other_listener_off() {
    let api = FakeApi::start();
    // 10.213.77.1 is on no interface here: its bind fails, nothing is ever sent to it.
    let h = home(&api, "\"10.213.77.1:47778\", \"127.0.0.1:0\"");
    let agent = h.start_agent();
    let (env, _) = ok(&h.run(&["grant", "box", "--ttl", "1h"], None, &[]));
    let base = base_url(&env);
    assert!(base.starts_with("http://127.0.0.1:"), "{env}");
    assert!(http_get(&base).unwrap().starts_with("HTTP/1.1 "));
    let st = status(&h);
    assert!(
        st.contains(
            "gateway waiting 10.213.77.1:47778 (address not on this machine yet; retrying)"
        ),
        "{st}"
    );
    assert!(st.contains(&format!("gateway listening {base}")), "{st}");
    assert_eq!(tcp_listening(agent.pid()).len(), 1);
    let doctor = kf::text(&h.run(&["doctor"], None, &[]).stdout);
    assert!(
        doctor.contains("waiting 10.213.77.1:47778 (address not on this machine yet"),
        "{doctor}"
    );
    assert!(doctor.contains(&format!("listening {base}")), "{doctor}");
}

/// The agent in a network namespace of its own (loopback up): traffic stays inside it.
fn agent_in_netns(h: &Home) -> kf::AgentProc {
    let log = h.path("agent-netns.log");
    let mut cmd = h.command("unshare");
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.args([
        "--net",
        "sh",
        "-c",
        "ip link set lo up && exec \"$0\" agent",
    ])
    .arg(env!("CARGO_BIN_EXE_keyferry"))
    .stdout(std::process::Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap());
    let child = cmd.spawn().expect("spawn unshare");
    let sock = h.socket();
    wait_until(
        Duration::from_secs(20),
        "the agent in its namespace",
        || keyferry::client::Client::connect(&sock).is_ok(),
    );
    kf::AgentProc { child, sock, log }
}

/// `ip ARGS` inside the agent's network namespace.
fn ip_in(pid: i32, args: &[&str]) {
    let ns = format!("--net=/proc/{pid}/ns/net");
    let st = std::process::Command::new("nsenter")
        .arg(&ns)
        .arg("ip")
        .args(args)
        .status()
        .unwrap();
    assert!(st.success(), "ip {args:?}");
}

/// One HTTP request from inside the agent's namespace; curl's status code ("000": none).
fn http_code_in(pid: i32, url: &str) -> String {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args([
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-m",
            "5",
        ])
        .arg(format!("{url}/v1/models"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_bridge_created_after_the_agent_is_bound_and_dropped_when_it_goes() {
    testkit::require_root("a network namespace and a dummy interface");
    let api = FakeApi::start();
    let h = home(&api, "\"10.213.0.1:7779\", \"127.0.0.1:0\"");
    let agent = agent_in_netns(&h);
    let pid = agent.pid();
    ok(&h.run(&["grant", "box", "--ttl", "1h"], None, &[]));
    let st = status(&h);
    assert!(
        st.contains("gateway waiting 10.213.0.1:7779 (address not on this machine yet"),
        "{st}"
    );
    // A bridge, as docker0 is (this kernel has no dummy driver).
    ip_in(pid, &["link", "add", "kfbr0", "type", "bridge"]);
    ip_in(pid, &["addr", "add", "10.213.0.1/24", "dev", "kfbr0"]);
    ip_in(pid, &["link", "set", "kfbr0", "up"]);
    wait_until(Duration::from_secs(15), "the new address bound", || {
        status(&h).contains("gateway listening http://10.213.0.1:7779")
    });
    let code = http_code_in(pid, "http://10.213.0.1:7779");
    assert!(code.starts_with('4'), "{code}");
    ip_in(pid, &["link", "del", "kfbr0"]);
    wait_until(Duration::from_secs(15), "the gone address dropped", || {
        status(&h).contains("gateway waiting 10.213.0.1:7779")
    });
}
