//! `.env` sinks: a configured sink is kept current; writes survive kill -9 (the file is the
//! old or the new one, never torn; left temp files are swept); concurrent writers of
//! different keys never lose each other's line.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keyferry::protocol::{Event, Request};

use crate::common;
use crate::kf::{ok, Home};
use crate::{SETUP, WAIT};

/// Whether writer `pid` left its temp file (the name carries the writer's pid).
fn has_temp_of(dir: &Path, pid: u32) -> bool {
    let tag = format!("keyferry-{pid}-");
    temp_files(dir)
        .iter()
        .any(|p| p.to_string_lossy().contains(&tag))
}

/// Rounds the kill -9 test always runs, and at most runs while looking for interrupted ones.
const MIN_ROUNDS: u64 = 25;
const MAX_ROUNDS: u64 = 200;

/// Temp files a writer left next to its target (`.NAME.keyferry-PID-….tmp`).
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("keyferry-"))
        .map(|e| e.path())
        .collect()
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
    let _: serde_json::Value = watcher.call(Request::Watch {}).unwrap();
    let next = "sk-ant-oat01-NEXTtokenJJJJkkkkLLLL-2222";
    let tmp = h.write(".config/cf/claude-token.new", &format!("{next}\n"), 0o600);
    std::fs::rename(tmp, h.path(".config/cf/claude-token")).unwrap();
    let deadline = common::Deadline::after(WAIT);
    let written = loop {
        watcher.set_timeout(Some(deadline.remaining("the sink_written event")));
        if let Event::SinkWritten { path, .. } = watcher.next_event().unwrap() {
            break path;
        }
    };
    assert_eq!(written, env.display().to_string());
    assert_eq!(std::fs::read_to_string(&env).unwrap(), expect(next));
}

#[test]
fn dotenv_writes_survive_kill_dash_nine() {
    let h = Home::new();
    // A large file widens the window between write and rename.
    let filler: String = (0..60_000)
        .map(|i| format!("# filler line {i}\n"))
        .collect();
    let path = h.path("big.env");
    let versions = |tok: &str| format!("{filler}CLAUDE_CODE_OAUTH_TOKEN={tok}\n");
    std::fs::write(&path, versions("v0")).unwrap();
    let mut current = "v0".to_owned();
    let (mut rounds, mut interrupted, mut unfinished) = (0, 0, 0);
    // Fixed delays alternate with killing the moment the temp file shows up, until enough
    // rounds really cut a write short (a temp file left behind), or a bounded number ran.
    while rounds < MIN_ROUNDS || (interrupted < 3 && rounds < MAX_ROUNDS) {
        rounds += 1;
        let i = rounds;
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
        let pid = child.id();
        if i % 2 == 0 {
            std::thread::sleep(Duration::from_micros(500 * (i % 12)));
        } else {
            let end = Instant::now() + WAIT;
            while !has_temp_of(&h.home, pid)
                && matches!(child.try_wait(), Ok(None))
                && Instant::now() < end
            {
                std::hint::spin_loop();
            }
        }
        if matches!(child.try_wait(), Ok(None)) {
            unfinished += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        if has_temp_of(&h.home, pid) {
            interrupted += 1;
        }
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
    eprintln!("kill -9: {interrupted} of {rounds} rounds cut a write short, {unfinished} killed unfinished");
    assert!(
        interrupted >= 1,
        "no round of {rounds} killed a writer mid-write ({unfinished} killed before they \
         finished, none left a temp file): the test proved nothing"
    );
    // The next write sweeps temp files that killed writers left (they hold a token).
    ok(&h.run(
        &["--no-agent", "export", "--env-file", "big.env"],
        None,
        &[("CF_CLAUDE_API_KEY", "sk-ant-api03-FINALkeyAAAA")],
    ));
    let leftovers = temp_files(&h.home);
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Two writers updating different keys never lose each other's line.
#[test]
fn concurrent_dotenv_writers_never_lose_each_others_line() {
    let h = Home::new();
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
                    c.args([
                        "--no-agent",
                        "export",
                        "--env-file",
                        small.to_str().unwrap(),
                        "--var",
                        &key,
                    ])
                    .env("CF_CLAUDE_API_KEY", format!("sk-ant-api03-{key}{i:03}"));
                    let out = common::run_with_timeout(&mut c, None, WAIT);
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
