//! One writer per file: a `[[sink]]` of the config owns its file. A snapshot asked for at
//! that path is refused (`config_sink`, naming the sink and the fix) unless it asks for
//! exactly what the sink writes; a `[[sink]]` added at a registered snapshot's path wins and
//! the registration is shown as not written; `snapshot --forget` never touches a config
//! sink's state.

use std::path::Path;

use keyferry::domain::SinkStatus;
use keyferry::protocol::{Event, Request};

use crate::common;
use crate::kf::{assert_no_secret, ok, text, AgentProc, Home};
use crate::{login, ACCESS_A, ACCESS_B, REFRESH, SETUP, WAIT};

const WORK_A: &str = "sk-ant-oat01-WORKsetupAAAAbbbbCCCCdddd-0001";
const WORK_B: &str = "sk-ant-oat01-WORKsetupEEEEffffGGGGhhhh-0002";
const CONFIG: &str = ".config/keyferry/config.toml";
/// A second Claude credential, so two writers of one file would differ in content.
const WORK: &str = "[credentials.work]\nsources = [\"file:~/.config/work/token\"]\n";
const SNAP: &str = "box/.credentials.json";

/// The rows `status` shows for the sinks at `path`.
fn rows_at(agent: &AgentProc, path: &Path) -> Vec<SinkStatus> {
    let st = agent.client().status().expect("status");
    st.sinks
        .into_iter()
        .filter(|s| Path::new(&s.path) == path)
        .collect()
}

/// Waits (with a deadline) until `path` holds `token`.
fn wait_holds(agent: &AgentProc, path: &Path, token: &str) {
    let held = common::wait_for("the sink to hold the token", WAIT, || {
        let now = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        if now.contains(token) {
            Ok(())
        } else {
            Err(now)
        }
    });
    if let Err(e) = held {
        panic!("{}: {e}\n{}", path.display(), agent.log_text());
    }
}

/// Replaces a token file the way an editor or a CLI does: a new file renamed over it.
fn replace(h: &Home, rel: &str, contents: &str) {
    let tmp = h.write(&format!("{rel}.tmp"), contents, 0o600);
    std::fs::rename(tmp, h.path(rel)).unwrap();
}

#[test]
fn forgetting_a_config_sinks_path_keeps_its_state() {
    let h = Home::new();
    h.write(".config/cf/claude-token", &format!("{SETUP}\n"), 0o600);
    h.write(
        CONFIG,
        "[[sink]]\ncredential = \"claude\"\ndotenv = \"~/proj/.env\"\n",
        0o600,
    );
    std::fs::create_dir_all(h.path("proj")).unwrap();
    let agent = h.start_agent();
    let env = h.path("proj/.env");
    wait_holds(&agent, &env, SETUP);
    let before = rows_at(&agent, &env);
    assert!(
        before.len() == 1 && before[0].written_at.is_some(),
        "{before:?}"
    );

    let out = h.run(&["snapshot", "--forget", env.to_str().unwrap()], None, &[]);
    assert_eq!(
        rows_at(&agent, &env),
        before,
        "`snapshot --forget` of a [[sink]]'s path left its status alone"
    );
    // It says so, and how to stop that sink instead.
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("[[sink]]") && err.contains("config.toml") && err.contains("\"claude\""),
        "{err}"
    );
    let e = agent
        .client()
        .forget(env.to_str().unwrap())
        .expect_err("forget of a config sink");
    assert_eq!(e.code(), "config_sink");
    assert_no_secret(&format!("{err}{e}"), &[SETUP]);
    // The sink still follows the token.
    let next = "sk-ant-oat01-NEXTtokenJJJJkkkkLLLL-2222";
    replace(&h, ".config/cf/claude-token", &format!("{next}\n"));
    wait_holds(&agent, &env, next);
}

#[test]
fn a_snapshot_at_a_config_sinks_path_is_that_sink_or_refused() {
    let h = Home::new();
    h.write(".claude/.credentials.json", &login(ACCESS_A), 0o600);
    h.write(".config/work/token", &format!("{WORK_A}\n"), 0o600);
    h.write(
        CONFIG,
        &format!("{WORK}[[sink]]\ncredential = \"claude\"\nsnapshot = \"~/{SNAP}\"\n"),
        0o600,
    );
    let agent = h.start_agent();
    let snap = h.path(SNAP);
    let shown = snap.to_str().unwrap();
    wait_holds(&agent, &snap, ACCESS_A);

    // Another credential there would be a second writer: the file would flip between the
    // two tokens on every change of either.
    let other = agent.client().snapshot("work", shown, false);
    let now = std::fs::read_to_string(&snap).unwrap();
    assert!(
        !now.contains(WORK_A) && now.contains(ACCESS_A),
        "a snapshot overwrote the [[sink]]'s file: {now}"
    );
    let e = other.expect_err("a snapshot of another credential at a [[sink]]'s path");
    assert_eq!(e.code(), "config_sink");
    let msg = e.to_string();
    assert!(
        msg.contains("[[sink]]") && msg.contains("config.toml") && msg.contains("\"claude\""),
        "{msg}"
    );
    // The refresh token the [[sink]] keeps out of the file does not come in by a snapshot.
    let with_refresh = agent.client().snapshot("claude", shown, true);
    let now = std::fs::read_to_string(&snap).unwrap();
    assert!(
        !now.contains(REFRESH),
        "a snapshot put the refresh token in: {now}"
    );
    assert_eq!(
        with_refresh
            .expect_err("a refresh token at a [[sink]]'s path")
            .code(),
        "config_sink"
    );
    // The CLI exits 1 with the message; no token in it.
    let out = h.run(&["snapshot", "work", "--out", shown], None, &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("another path"), "{err}");
    // Without the agent too: no one-off write over a [[sink]]'s file.
    let direct = h.run(
        &["--no-agent", "snapshot", "work", "--out", shown],
        None,
        &[],
    );
    assert_eq!(direct.status.code(), Some(1), "{}", text(&direct.stderr));
    assert!(!std::fs::read_to_string(&snap).unwrap().contains(WORK_A));
    assert_no_secret(
        &format!("{msg}{err}{}", agent.log_text()),
        &[ACCESS_A, REFRESH, WORK_A],
    );

    // Exactly what the [[sink]] writes is that sink: written, not registered a second time.
    ok(&h.run(&["snapshot", "claude", "--out", shown], None, &[]));
    let rows = rows_at(&agent, &snap);
    assert!(
        rows.len() == 1 && rows[0].credential == "claude" && rows[0].error.is_none(),
        "{rows:?}"
    );
    // The one writer follows the host's refresh; a change of `work` leaves the file alone.
    replace(&h, ".claude/.credentials.json", &login(ACCESS_B));
    wait_holds(&agent, &snap, ACCESS_B);
    let mut watcher = agent.client();
    let _: serde_json::Value = watcher.call(Request::Watch {}).unwrap();
    replace(&h, ".config/work/token", &format!("{WORK_B}\n"));
    wait_changed(&mut watcher, "work");
    assert!(!std::fs::read_to_string(&snap).unwrap().contains(WORK_B));
}

#[test]
fn a_config_sink_added_at_a_snapshots_path_is_the_one_writer() {
    let h = Home::new();
    h.write(".claude/.credentials.json", &login(ACCESS_A), 0o600);
    h.write(".config/work/token", &format!("{WORK_A}\n"), 0o600);
    h.write(CONFIG, WORK, 0o600);
    let snap = h.path(SNAP);
    let shown = snap.to_str().unwrap();
    {
        let mut first = h.start_agent();
        ok(&h.run(&["snapshot", "work", "--mkdir", "--out", shown], None, &[]));
        wait_holds(&first, &snap, WORK_A);
        first.stop(libc::SIGTERM);
    }
    // The config now declares a [[sink]] of another credential at that path.
    h.write(
        CONFIG,
        &format!("{WORK}[[sink]]\ncredential = \"claude\"\nsnapshot = \"~/{SNAP}\"\n"),
        0o600,
    );
    let agent = h.start_agent();
    wait_holds(&agent, &snap, ACCESS_A);
    let mut watcher = agent.client();
    let _: serde_json::Value = watcher.call(Request::Watch {}).unwrap();
    replace(&h, ".config/work/token", &format!("{WORK_B}\n"));
    wait_changed(&mut watcher, "work");
    let now = std::fs::read_to_string(&snap).unwrap();
    assert!(
        !now.contains(WORK_B) && now.contains(ACCESS_A),
        "the registered snapshot still rewrote the [[sink]]'s file: {now}"
    );

    // status shows both: the [[sink]] written, the registration not written, and why.
    let rows = rows_at(&agent, &snap);
    let sink = rows.iter().find(|r| r.credential == "claude");
    assert!(
        sink.is_some_and(|s| s.written_at.is_some() && s.error.is_none()),
        "{rows:?}"
    );
    let shadowed = rows.iter().find(|r| r.credential == "work");
    let e = shadowed
        .and_then(|s| s.error.clone())
        .unwrap_or_else(|| panic!("the registration is not shown as not written: {rows:?}"));
    assert_eq!(e.code, "config_sink");
    assert!(
        e.message.contains("[[sink]]") && e.message.contains("--forget"),
        "{}",
        e.message
    );
    let (out, _) = ok(&h.run(&["status"], None, &[]));
    assert!(out.contains("[[sink]]"), "{out}");
    assert_no_secret(&out, &[ACCESS_A, WORK_A, WORK_B]);

    // Nothing lost: the registration is kept until forgotten; forgetting it leaves the
    // [[sink]] as it was.
    let (_, err) = ok(&h.run(&["snapshot", "--forget", shown], None, &[]));
    assert!(err.contains("[[sink]]"), "{err}");
    let rows = rows_at(&agent, &snap);
    assert!(
        rows.len() == 1 && rows[0].credential == "claude" && rows[0].written_at.is_some(),
        "{rows:?}"
    );
}

/// Waits for the `changed` event of credential `name` (sinks are written before it).
fn wait_changed(watcher: &mut keyferry::client::Client, name: &str) {
    let deadline = common::Deadline::after(WAIT);
    loop {
        watcher.set_timeout(Some(deadline.remaining("the changed event")));
        if let Event::Changed { status } = watcher.next_event().unwrap() {
            if status.name == name {
                return;
            }
        }
    }
}

/// Two spellings of one `[[sink]]`'s file that does not exist yet — `x/..` and a linked
/// folder — are that file: a snapshot there with the refresh token the `[[sink]]` keeps
/// out is refused, with the agent and without it, and nothing is written.
#[test]
fn another_spelling_of_a_config_sinks_unwritten_file_is_that_file() {
    let h = Home::new();
    h.write(".claude/.credentials.json", &login(ACCESS_A), 0o600);
    // The [[sink]] is of `work`, whose token file is not there yet: its file is not written.
    h.write(
        CONFIG,
        &format!("{WORK}[[sink]]\ncredential = \"work\"\nsnapshot = \"~/{SNAP}\"\n"),
        0o600,
    );
    std::fs::create_dir_all(h.path("box/x")).unwrap();
    std::os::unix::fs::symlink(h.path("box"), h.path("linked")).unwrap();
    let snap = h.path(SNAP);
    let spellings = [
        h.path("box/x/../.credentials.json"),
        h.path("linked/.credentials.json"),
    ];
    let refused = |out: &std::process::Output, how: &str| {
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{how}: {err}");
        assert!(
            err.contains("[[sink]]") && err.contains("config.toml") && err.contains("\"work\""),
            "{how}: {err}"
        );
        assert!(
            !snap.exists(),
            "{how}: a second writer wrote the [[sink]]'s file"
        );
        assert_no_secret(&err, &[ACCESS_A, REFRESH]);
    };
    for p in &spellings {
        let shown = p.to_str().unwrap();
        let args = [
            "snapshot",
            "claude",
            "--include-refresh-token",
            "--out",
            shown,
        ];
        let direct = h.run(&[&["--no-agent"], &args[..]].concat(), None, &[]);
        refused(&direct, &format!("--no-agent at {shown}"));
    }
    let agent = h.start_agent();
    for p in &spellings {
        let shown = p.to_str().unwrap();
        let out = h.run(
            &[
                "snapshot",
                "claude",
                "--include-refresh-token",
                "--out",
                shown,
            ],
            None,
            &[],
        );
        refused(&out, &format!("through the agent at {shown}"));
        let e = agent
            .client()
            .snapshot("claude", shown, true)
            .expect_err("a second writer of the [[sink]]'s file");
        assert_eq!(e.code(), "config_sink");
    }
    // Nothing was registered at either spelling; the [[sink]] is its file's one writer.
    let st = agent.client().status().expect("status");
    assert!(
        st.sinks.iter().all(|s| s.credential == "work"),
        "{:?}",
        st.sinks
    );
    h.write(".config/work/token", &format!("{WORK_A}\n"), 0o600);
    wait_holds(&agent, &snap, WORK_A);
    assert_no_secret(&agent.log_text(), &[ACCESS_A, REFRESH, WORK_A]);
}

/// Two `.env` `[[sink]]`s of different credentials in one file, neither with a `key`, both
/// Claude tokens: both would write `CLAUDE_CODE_OAUTH_TOKEN`, which is only known once the
/// tokens are read. The one listed first writes it; the other is refused (`config_sink`,
/// naming the variable and the fix) and never replaces it, whichever is read first.
#[test]
fn two_env_sinks_that_come_to_write_one_variable_have_one_writer() {
    const VAR: &str = "CLAUDE_CODE_OAUTH_TOKEN";
    let h = Home::new();
    h.write(".config/cf/claude-token", &format!("{SETUP}\n"), 0o600);
    h.write(".config/work/token", &format!("{WORK_A}\n"), 0o600);
    h.write(
        CONFIG,
        &format!(
            "{WORK}[[sink]]\ncredential = \"work\"\ndotenv = \"~/proj/.env\"\n\
             [[sink]]\ncredential = \"claude\"\ndotenv = \"~/proj/.env\"\n"
        ),
        0o600,
    );
    std::fs::create_dir_all(h.path("proj")).unwrap();
    let agent = h.start_agent();
    let env = h.path("proj/.env");
    let settled = common::wait_for("work's token in, claude's sink refused", WAIT, || {
        let rows = rows_at(&agent, &env);
        let now = std::fs::read_to_string(&env).unwrap_or_default();
        let refused = rows
            .iter()
            .any(|r| r.credential == "claude" && r.error.is_some());
        if refused && now.contains(WORK_A) {
            Ok(rows)
        } else {
            Err(format!("{rows:?}"))
        }
    });
    let rows = settled.unwrap_or_else(|e| panic!("{e}\n{}", agent.log_text()));
    let now = std::fs::read_to_string(&env).unwrap();
    assert_eq!(now.matches(VAR).count(), 1, "{now}");
    assert!(
        !now.contains(SETUP),
        "the second writer's token is in: {now}"
    );
    let e = rows
        .iter()
        .find(|r| r.credential == "claude")
        .and_then(|r| r.error.clone())
        .unwrap();
    assert_eq!(e.code, "config_sink");
    assert!(
        e.message.contains(VAR)
            && e.message.contains("\"work\"")
            && e.message.contains("key = \"NAME\""),
        "{}",
        e.message
    );
    let work = rows.iter().find(|r| r.credential == "work").unwrap();
    assert!(
        work.error.is_none() && work.written_at.is_some(),
        "{rows:?}"
    );

    // A new token of the second leaves the variable alone; one of the first is written.
    let mut watcher = agent.client();
    let _: serde_json::Value = watcher.call(Request::Watch {}).unwrap();
    let next = "sk-ant-oat01-NEXTtokenJJJJkkkkLLLL-2222";
    replace(&h, ".config/cf/claude-token", &format!("{next}\n"));
    wait_changed(&mut watcher, "claude");
    let now = std::fs::read_to_string(&env).unwrap();
    assert!(
        now.contains(WORK_A) && !now.contains(next),
        "the refused sink wrote: {now}"
    );
    replace(&h, ".config/work/token", &format!("{WORK_B}\n"));
    wait_holds(&agent, &env, WORK_B);
    let (out, _) = ok(&h.run(&["status"], None, &[]));
    assert!(out.contains(VAR), "{out}");
    assert_no_secret(
        &format!("{out}{}", agent.log_text()),
        &[SETUP, next, WORK_A, WORK_B],
    );
}
