//! The attack from a second process of the same (non-root) user: the agent, run as that
//! user with a token, is asked for nothing — its memory is read directly, through
//! `/proc/PID/mem` (searched for the token along its mappings), `/proc/PID/environ` and
//! `ptrace(PTRACE_ATTACH)`. Each is refused, and core dumps are off. The same attacker
//! reads a plain dumpable process of that user, so the test shows the attack works here.

// /proc, prctl and a second Unix user: Linux only.
#![cfg(target_os = "linux")]

mod common;
mod kf;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::Proc;
use kf::text;

const USER: &str = "kfharden";
const TOKEN: &str = "sk-ant-oat01-HARDENmemAAAAbbbbCCCCddddEEEE-5678";
const WAIT: Duration = Duration::from_secs(20);

/// Searches another process's memory for a needle, as an attacker of the same uid would.
const READER: &str = r#"
import ctypes, sys
pid, needle = int(sys.argv[1]), sys.argv[2].encode()
libc = ctypes.CDLL(None, use_errno=True)
if libc.ptrace(16, pid, None, None) == 0:  # PTRACE_ATTACH
    print("ptrace: attached"); libc.ptrace(17, pid, None, None)  # PTRACE_DETACH
else:
    print("ptrace: refused", ctypes.get_errno())
try:
    open(f"/proc/{pid}/environ", "rb").read(); print("environ: read")
except OSError as e:
    print("environ: refused", e.errno)
try:
    mem = open(f"/proc/{pid}/mem", "rb", 0)
except OSError as e:
    print("mem: refused", e.errno); sys.exit(0)
found, readable = False, 0
for line in open(f"/proc/{pid}/maps"):
    rng, perms = line.split()[:2]
    if not perms.startswith("r"):
        continue
    lo, hi = (int(x, 16) for x in rng.split("-"))
    try:
        mem.seek(lo); data = mem.read(min(hi - lo, 64 << 20)); readable += 1
    except OSError:
        continue
    found = found or needle in data
print("mem: read", readable, "found" if found else "absent")
"#;

fn runuser() -> std::path::PathBuf {
    common::which("runuser").expect("runuser (Debian package util-linux)")
}

fn as_user(args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(runuser());
    cmd.args(["-u", USER, "--"]).args(args);
    common::run_with_timeout(&mut cmd, None, WAIT)
}

/// The pid of the process of `USER` whose command line contains `needle`.
fn pid_of(needle: &str) -> i32 {
    common::wait_for("the process to appear", WAIT, || {
        let out = common::run_with_timeout(
            Command::new("pgrep").args(["-u", USER, "-f", needle]),
            None,
            WAIT,
        );
        text(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse::<i32>().ok())
            .find(|pid| {
                std::fs::read_link(format!("/proc/{pid}/exe"))
                    .is_ok_and(|e| !e.ends_with("runuser") && !e.ends_with("sh"))
            })
            .ok_or_else(|| text(&out.stdout))
    })
    .unwrap()
}

#[test]
fn a_same_user_process_cannot_read_the_agents_memory() {
    common::require_root("it creates and runs as a second Unix user (useradd, runuser)");
    kf::ensure_user(USER);
    let home = text(&as_user(&["mktemp", "-d"]).stdout).trim().to_owned();
    assert!(home.starts_with('/'), "mktemp as {USER} failed");
    let sock = format!("{home}/run/agent.sock");
    // The token in a 0600 file source; the config keeps the gateway off any fixed port.
    let script = format!(
        "umask 077; mkdir -p $HOME/.config/cf $HOME/.config/keyferry && \
         printf '%s\\n' {TOKEN} > $HOME/.config/cf/claude-token && \
         printf '[gateway]\\nlisten = []\\nunix_socket = false\\n' > $HOME/.config/keyferry/config.toml && \
         exec {} agent --socket {sock}",
        env!("CARGO_BIN_EXE_keyferry")
    );
    let mut cmd = Command::new(runuser());
    cmd.args([
        "-u",
        USER,
        "--",
        "env",
        "-i",
        &format!("HOME={home}"),
        "PATH=/usr/bin:/bin",
        &format!("USER={USER}"),
        "sh",
        "-c",
        &script,
    ]);
    let log = tempfile::NamedTempFile::new().unwrap();
    let _agent = Proc::spawn("the user's agent", cmd, log.path().to_path_buf(), None);
    common::wait_until(WAIT, "the agent's socket", || Path::new(&sock).exists());
    let agent = pid_of(&format!("agent --socket {sock}"));
    // The agent serves the token (so it is in its memory): its own user gets it.
    let got = as_user(&[
        "env",
        &format!("HOME={home}"),
        env!("CARGO_BIN_EXE_keyferry"),
        "--socket",
        &sock,
        "--require-agent",
        "get",
    ]);
    assert_eq!(text(&got.stdout).trim(), TOKEN, "{}", text(&got.stderr));

    let reader = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(reader.path(), READER).unwrap();
    std::fs::set_permissions(
        reader.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let script = reader.path().to_str().unwrap();
    let attack = |pid: i32| {
        let out = as_user(&["python3", script, &pid.to_string(), TOKEN]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };

    // The control: a dumpable process of the same user with the token in its environment.
    let mut control = Command::new(runuser());
    control.args([
        "-u",
        USER,
        "--",
        "env",
        &format!("KF_CONTROL={TOKEN}"),
        "sleep",
        "60",
    ]);
    let control_log = tempfile::NamedTempFile::new().unwrap();
    let _control = Proc::spawn(
        "a dumpable process",
        control,
        control_log.path().to_path_buf(),
        None,
    );
    let seen = attack(pid_of("sleep 60"));
    assert!(seen.contains("ptrace: attached"), "{seen}");
    assert!(seen.contains("environ: read"), "{seen}");
    assert!(
        seen.contains("found"),
        "the attack does not work here at all: {seen}"
    );

    let seen = attack(agent);
    assert!(seen.contains("ptrace: refused"), "{seen}");
    assert!(seen.contains("environ: refused"), "{seen}");
    assert!(seen.contains("mem: refused"), "{seen}");
    assert!(!seen.contains("found"), "{seen}");

    let limits = std::fs::read_to_string(format!("/proc/{agent}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(
        core.split_whitespace().skip(4).take(2).collect::<Vec<_>>(),
        ["0", "0"],
        "{core}"
    );
}

/// Sends newline-delimited requests on one connection and returns the reply lines.
fn converse(sock: &Path, requests: &[String]) -> Vec<String> {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut hello = format!(
        "{{\"op\":\"hello\",\"version\":{}}}\n",
        keyferry::protocol::VERSION
    );
    for req in requests {
        hello.push_str(req);
        hello.push('\n');
    }
    s.write_all(hello.as_bytes()).unwrap();
    (0..=requests.len())
        .map(|_| {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            line
        })
        .skip(1)
        .collect()
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// The lock's KDF (Argon2id, 19 MiB per guess) must not stay resident: after a lock and a
/// few wrong passphrases the agent is back near its idle size (glibc kept ~50 MB before).
#[test]
fn lock_and_wrong_passphrases_give_the_kdf_memory_back() {
    let h = kf::Home::new();
    h.write(
        ".config/keyferry/config.toml",
        "[gateway]\nlisten = []\nunix_socket = false\n",
        0o600,
    );
    kf::ok(&h.run(&["setup"], Some(TOKEN), &[]));
    let agent = h.start_agent();
    let (got, _) = kf::ok(&h.run(&["--require-agent", "get"], None, &[]));
    assert_eq!(got.trim(), TOKEN);
    let idle = rss_kib(agent.pid());
    let pass = |p: &str| format!("{{\"op\":\"unlock\",\"passphrase\":\"{p}\"}}");
    let replies = converse(
        &h.socket(),
        &[
            "{\"op\":\"lock\",\"passphrase\":\"correct horse battery\"}".to_owned(),
            pass("wrong one"),
            pass("wrong two"),
            pass("wrong three"),
            pass("correct horse battery"),
        ],
    );
    assert!(replies[0].contains("\"ok\":true"), "{replies:?}");
    assert!(
        replies[1..4].iter().all(|r| r.contains("bad_passphrase")),
        "{replies:?}"
    );
    assert!(replies[4].contains("\"ok\":true"), "{replies:?}");
    let after = rss_kib(agent.pid());
    eprintln!("agent RSS idle {idle} KiB, after lock + 3 wrong + 1 right unlock {after} KiB");
    // Each guess allocates 19 MiB; kept, two would already pass this bound.
    assert!(
        after <= idle + 12 * 1024,
        "idle {idle} KiB, after the KDF {after} KiB"
    );
}
