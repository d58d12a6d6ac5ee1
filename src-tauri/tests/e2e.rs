//! End to end: the real `keyferry-tray` binary and the real `keyferry` CLI, each test on its
//! own Xvfb display, its own private session bus with a real gnome-keyring Secret Service,
//! and a throwaway HOME (see `support/`). Issue 5, "Done means":
//!
//! 1. [`window_shows_the_keychain_credential`]: the window (through tauri-driver +
//!    WebKitWebDriver) shows the token `keyferry setup` stored in the Secret Service; saves
//!    `test-output/tray-window.png`.
//! 2. [`reroll_wizard_captures_setup_token_and_serves_it`]: the reroll wizard runs a stand-in
//!    `claude setup-token` from PATH, stores what it printed, and `keyferry get` over the
//!    socket returns the new token.
//! 3. [`approval_allow_once_and_deny_decide_a_waiting_get`]: with `mode = "ask"`, a waiting
//!    client's request appears in the window; Allow once serves it, Deny refuses it.
//! 4. [`tray_menu_lock_and_unlock_over_dbusmenu`]: the tray menu, read and clicked through a
//!    StatusNotifierWatcher the test owns: Lock makes `get` fail with the locked error,
//!    Unlock restores it.
//! 5. [`expiring_credentials_raise_desktop_notifications`]: an expiring credential reaches an
//!    `org.freedesktop.Notifications` server the test owns, with its name and time left.
//! 6. [`app_attaches_to_a_running_headless_agent`]: with `keyferry agent` already serving,
//!    the app attaches as a client, its menu drives that agent, and quitting the app leaves
//!    the agent serving. (Test 4 also checks that a second launch exits and leaves the first.)
//!
//! Every test ends with `World::finish`, which asserts with `ps` that nothing of that test
//! (app, WebKit helpers, WebKitWebDriver, tauri-driver, daemons) is left running.
//!
//! Run: `cargo test -p keyferry-tray --test e2e` (they also pass with `--test-threads 1`).
//! Needs the Debian packages in `src-tauri/DEPS.md` and `tauri-driver` 2.x.

#![cfg(target_os = "linux")]

mod support;

use std::time::{Duration, Instant};

use keyferry::credential::{fingerprint, mask};

use support::dbus_services::{MenuEntry, Panel, Watcher};
use support::webdriver::{Driver, Session};
use support::{output_dir, tray_binary, wait_for, World, START_TIMEOUT, UI_TIMEOUT};
use testkit::NotificationServer;

/// Tokens shaped like real setup-tokens; the window may show only their masks
/// (`sk-ant-oat01-…0042`) and fingerprints.
const TOKEN: &str = "sk-ant-oat01-E2EwindowWINDOWwindowWINDOW-0042";
const NEW_TOKEN: &str = "sk-ant-oat01-E2ErerollREROLLrerollREROLL-0003";

/// Exit code of a refused request (`agent_locked`, `denied`, …).
const EXIT_REFUSED: i32 = 6;

fn assert_png(path: &std::path::Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
        "{} is not a plausible screenshot ({} bytes)",
        path.display(),
        bytes.len()
    );
}

/// Waits until the window has the claude card in state `ok`, showing `mask` (the app is up,
/// its agent has resolved the keychain).
fn wait_claude_card(s: &Session<'_>, mask: &str) -> String {
    s.wait_text("#cred-claude[data-testid=credential]", START_TIMEOUT, |t| {
        t.contains(mask) && t.contains("keychain:cf-claude-token")
    })
}

/// `keyferry --require-agent get claude` over the socket: (exit code, stdout, stderr).
fn get_claude(world: &World) -> (Option<i32>, String, String) {
    let out = world.cli(&["--require-agent", "get", "claude"], None);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    )
}

#[test]
fn window_shows_the_keychain_credential() {
    let world = World::start("window");
    world.setup_token("claude", TOKEN);
    let driver = Driver::start(&world);
    let s = driver.session(&world, &tray_binary(), &["--show"]);

    let card = wait_claude_card(&s, &mask(TOKEN));
    assert!(
        card.contains(&fingerprint(TOKEN)),
        "card has no fingerprint:\n{card}"
    );
    assert!(
        card.contains("setup-token"),
        "card does not name the kind:\n{card}"
    );
    assert!(
        card.contains("expires in"),
        "card has no countdown:\n{card}"
    );
    assert!(
        !card.contains(TOKEN),
        "the window shows the whole token:\n{card}"
    );
    // (Read from the DOM: WebKitWebDriver's visibility check calls this ellipsised line hidden.)
    let agent_line = wait_for("the agent line", UI_TIMEOUT, || {
        let t = s.script("return document.getElementById('agent-line').textContent")?;
        let t = t.as_str().unwrap_or_default().to_owned();
        if t.contains("pid") {
            Ok(t)
        } else {
            Err(t)
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        agent_line.contains("this app"),
        "the app should serve in-process: {agent_line:?}"
    );

    let shot = output_dir().join("tray-window.png");
    s.screenshot(&shot);
    assert_png(&shot);

    assert!(s.close(), "the app did not quit on SIGTERM");
    assert!(
        !world.socket().exists(),
        "the app left its socket {} behind",
        world.socket().display()
    );
    driver.stop();
    world.finish();
}

#[test]
fn reroll_wizard_captures_setup_token_and_serves_it() {
    let world = World::start("reroll");
    world.setup_token("claude", TOKEN);
    // The stand-in for Claude Code, found on PATH like the real one.
    world.write_bin(
        "claude",
        &format!(
            "#!/bin/sh\n\
             [ \"$1\" = setup-token ] || {{ echo \"stand-in claude: unexpected args: $*\" >&2; exit 2; }}\n\
             echo 'Opening your browser to sign in...'\n\
             echo 'Your OAuth token: {NEW_TOKEN}'\n\
             echo 'Store this token securely.'\n"
        ),
    );
    let driver = Driver::start(&world);
    let s = driver.session(&world, &tray_binary(), &["--show"]);
    wait_claude_card(&s, &mask(TOKEN));
    // The dialog opens from the card's Reroll button.
    s.click_when_ready("#cred-claude [data-reroll]");

    // Step 2: run `claude setup-token` and capture what it prints.
    s.click_when_ready("#run-setup");
    let new_mask = mask(NEW_TOKEN);
    let candidate = s.wait_text("#candidate", UI_TIMEOUT, |t| t.contains(&new_mask));
    assert!(
        candidate.contains("setup-token"),
        "candidate line: {candidate:?}"
    );
    let output = s.wait_text("#setup-output", UI_TIMEOUT, |t| {
        t.contains("Your OAuth token")
    });
    assert!(
        output.contains(&new_mask) && !output.contains(NEW_TOKEN),
        "the captured output must show the token masked only:\n{output}"
    );
    // Until stored, the agent still serves the old token.
    assert_eq!(
        get_claude(&world).1,
        TOKEN,
        "the old token changed before Store"
    );

    // Step 3: store it.
    s.click_when_ready("#store");
    let stored = s.wait_text("#stored", UI_TIMEOUT, |t| t.contains(&new_mask));
    assert!(stored.contains("claude"), "stored summary: {stored:?}");
    assert!(
        stored.contains(&fingerprint(NEW_TOKEN)),
        "stored summary lacks the new token's fingerprint: {stored:?}"
    );

    // Served over the socket, and shown on the card.
    let (code, out, err) = wait_for("get to return the new token", UI_TIMEOUT, || {
        let r = get_claude(&world);
        if r.1 == NEW_TOKEN {
            Ok(r)
        } else {
            Err(format!("{r:?}"))
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(code, Some(0), "get: {err}");
    assert_eq!(out, NEW_TOKEN);
    wait_claude_card(&s, &mask(NEW_TOKEN));
    s.scroll_to("#stored").expect("scroll to the stored token");
    s.screenshot(&output_dir().join("tray-reroll.png"));

    assert!(s.close(), "the app did not quit on SIGTERM");
    driver.stop();
    world.finish();
}

/// Waits for the approval row of the client with `pid`; returns its text and element.
fn wait_approval(s: &Session<'_>, pid: u32) -> (String, support::webdriver::Element) {
    wait_for(
        &format!("the approval request of pid {pid}"),
        UI_TIMEOUT,
        || {
            let rows = s.find_all("[data-testid=approval]")?;
            let mut seen = Vec::new();
            for row in rows {
                let text = s.text(&s.find_in(&row, ".text")?)?;
                if text.contains(&format!("pid {pid},")) || text.contains(&format!("pid {pid})")) {
                    return Ok((text, row));
                }
                seen.push(text);
            }
            Err(format!("approval rows: {seen:?}"))
        },
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn approval_allow_once_and_deny_decide_a_waiting_get() {
    let world = World::start("approval");
    world.write_config("[policy.claude]\nmode = \"ask\"\n\n[agent]\napproval_timeout_secs = 60\n");
    world.setup_token("claude", TOKEN);
    let driver = Driver::start(&world);
    let s = driver.session(&world, &tray_binary(), &["--show"]);
    wait_claude_card(&s, &mask(TOKEN));

    // Allow once: the waiting client gets the token.
    let mut first = world.cli_spawn(&["--require-agent", "get", "claude"]);
    let (text, row) = wait_approval(&s, first.pid());
    assert!(text.contains("wants `claude`"), "approval text: {text:?}");
    assert!(
        text.contains("keyferry"),
        "approval text does not name the program: {text:?}"
    );
    assert!(
        first.proc.exited().is_none(),
        "the client did not wait for the answer: {:?}",
        first.finish(Duration::ZERO)
    );
    s.screenshot(&output_dir().join("tray-approval.png"));
    s.click(
        &s.find_in(&row, "button[data-decision=allow_once]")
            .expect("Allow once button"),
    )
    .expect("click Allow once");
    let (code, out, err) = first.finish(UI_TIMEOUT);
    assert_eq!(code, Some(0), "allowed get failed: {err}");
    assert_eq!(out.trim(), TOKEN);

    // Deny: the waiting client is refused.
    let mut second = world.cli_spawn(&["--require-agent", "get", "claude"]);
    let (_, row) = wait_approval(&s, second.pid());
    s.click(
        &s.find_in(&row, "button[data-decision=deny]")
            .expect("Deny button"),
    )
    .expect("click Deny");
    let (code, out, err) = second.finish(UI_TIMEOUT);
    assert_eq!(
        code,
        Some(EXIT_REFUSED),
        "denied get: stdout {out:?}, stderr {err:?}"
    );
    assert!(out.trim().is_empty(), "a denied get printed {out:?}");
    assert!(
        err.contains("denied"),
        "denied get's error does not say so: {err:?}"
    );

    // Both answered: no request left in the window.
    wait_for("the approvals list to empty", UI_TIMEOUT, || {
        let n = s.find_all("[data-testid=approval]")?.len();
        if n == 0 {
            Ok(())
        } else {
            Err(format!("{n} rows left"))
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));

    assert!(s.close(), "the app did not quit on SIGTERM");
    driver.stop();
    world.finish();
}

/// The tray's libayatana-appindicator, checked up front so a missing library fails clearly.
fn require_appindicator() {
    let found = ["/usr/lib", "/usr/lib64", "/lib"].iter().any(|root| {
        let root = std::path::Path::new(root);
        root.join("libayatana-appindicator3.so.1").exists()
            || std::fs::read_dir(root).is_ok_and(|dirs| {
                dirs.flatten()
                    .any(|d| d.path().join("libayatana-appindicator3.so.1").exists())
            })
    });
    assert!(
        found,
        "libayatana-appindicator3.so.1 not found: install the Debian package \
         libayatana-appindicator3-1 (pulled in by libayatana-appindicator3-dev)"
    );
}

/// Starts the app directly (no window) with a StatusNotifierWatcher the test owns; returns
/// the app and the panel's view of its tray item.
fn start_with_tray(world: &World) -> (support::Proc, Panel) {
    require_appindicator();
    let watcher = Watcher::start(&world.bus_address);
    let started = Instant::now();
    let app = world.start_app(&[]);
    let item = watcher
        .wait_item(START_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "tray item {}{} registered {} ms after exec",
        item.service,
        item.path,
        item.at.duration_since(started).as_millis()
    );
    let panel = Panel::open(&world.bus_address, item).unwrap_or_else(|e| panic!("{e}"));
    // The watcher's job is done once the item is known; a panel keeps only the menu.
    drop(watcher);
    (app, panel)
}

/// Polls `get` until `ok` accepts its (exit code, stdout, stderr).
fn wait_get(
    world: &World,
    what: &str,
    ok: impl Fn(&(Option<i32>, String, String)) -> bool,
) -> (Option<i32>, String, String) {
    wait_for(what, UI_TIMEOUT, || {
        let r = get_claude(world);
        if ok(&r) {
            Ok(r)
        } else {
            Err(format!("{r:?}"))
        }
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Lock serving from the tray menu refuses a client's `get` with the locked error; Unlock
/// serving serves it again.
fn lock_and_unlock_from_the_menu(world: &World, panel: &Panel) {
    assert_eq!(get_claude(world).1, TOKEN, "get before Lock");
    panel
        .click_label("Lock serving", UI_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let (code, _, err) = wait_get(world, "get to be refused after Lock", |r| r.0 != Some(0));
    assert_eq!(code, Some(EXIT_REFUSED), "locked get: {err}");
    assert!(
        err.contains("locked") && err.contains("keyferry unlock"),
        "the locked error should say how to unlock: {err:?}"
    );
    // The same entry, relabelled.
    panel
        .wait_for_entry("Unlock serving", UI_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    panel
        .click_label("Unlock serving", UI_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, out, _) = wait_get(world, "get to be served after Unlock", |r| r.0 == Some(0));
    assert_eq!(out, TOKEN, "get after Unlock");
    panel
        .wait_for_entry("Lock serving", UI_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn tray_menu_lock_and_unlock_over_dbusmenu() {
    let world = World::start("tray");
    world.setup_token("claude", TOKEN);
    let (mut app, panel) = start_with_tray(&world);

    // The menu as a panel reads it, once the agent's state is in.
    let menu = panel
        .wait_for_entry("keychain:cf-claude-token", UI_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let line = menu
        .flatten()
        .into_iter()
        .find(|e| e.text().starts_with("claude:"))
        .map(MenuEntry::text)
        .unwrap_or_default();
    assert!(
        line.contains("ok") && line.contains("expires in"),
        "claude's menu line: {line:?}\nmenu:\n{}",
        menu.labels()
    );
    for entry in [
        "Reroll",
        "Lock serving",
        "Open Keyferry",
        "Start at login",
        "Quit",
    ] {
        assert!(
            menu.flatten().iter().any(|e| e.text().starts_with(entry)),
            "no {entry:?} in the menu:\n{}",
            menu.labels()
        );
    }

    lock_and_unlock_from_the_menu(&world, &panel);

    // Single instance: a second launch hands over to the first and exits.
    let mut second = world.spawn(
        "second keyferry-tray",
        world.command(tray_binary()),
        "app-second.log",
    );
    let status = second.wait_exit(START_TIMEOUT);
    assert!(
        status.is_some_and(|s| s.success()),
        "a second launch should exit (0) and leave the first running: {status:?}\n{}",
        second.log_text()
    );
    assert!(
        app.exited().is_none(),
        "the first instance quit on a second launch"
    );
    assert_eq!(get_claude(&world).1, TOKEN, "get after a second launch");

    // Quits cleanly on SIGTERM and removes its socket.
    let status = app.stop(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "the app did not exit cleanly on SIGTERM: {status:?}"
    );
    assert!(!world.socket().exists(), "the app left its socket behind");
    drop((app, second));
    world.finish();
}

#[test]
fn app_attaches_to_a_running_headless_agent() {
    let world = World::start("attach");
    world.setup_token("claude", TOKEN);
    let mut agent = world.start_headless_agent();

    let (mut app, panel) = start_with_tray(&world);
    wait_for("the app to attach", UI_TIMEOUT, || {
        let log = app.log_text();
        if log.contains("attached to a running agent") {
            Ok(())
        } else {
            Err(log)
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    panel
        .wait_for_entry("keychain:cf-claude-token", UI_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    // The menu drives the headless agent.
    lock_and_unlock_from_the_menu(&world, &panel);

    // Quitting the app leaves the headless agent serving.
    let status = app.stop(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "app exit: {status:?}");
    assert!(
        agent.exited().is_none(),
        "the headless agent quit with the app"
    );
    let (code, out, err) = get_claude(&world);
    assert_eq!(
        (code, out.as_str()),
        (Some(0), TOKEN),
        "get after the app quit: {err}"
    );
    let status = agent.stop(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "agent exit: {status:?}"
    );
    drop((app, agent));
    world.finish();
}

#[test]
fn expiring_credentials_raise_desktop_notifications() {
    let world = World::start("notify");
    // A Gemini access token that expires in 30 min (inside the 1 h threshold) and has no
    // refresh token (a login that refreshes itself is only flagged once it stays expired) …
    let gemini = world.home.join(".gemini");
    std::fs::create_dir_all(&gemini).expect("create ~/.gemini");
    let expiry_ms = (std::time::SystemTime::now() + Duration::from_secs(30 * 60))
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis();
    std::fs::write(
        gemini.join("oauth_creds.json"),
        format!(
            "{{\"access_token\":\"ya29.e2e-gemini-access-token-0042\",\
             \"scope\":\"openid\",\"token_type\":\"Bearer\",\"expiry_date\":{expiry_ms}}}"
        ),
    )
    .expect("write oauth_creds.json");
    // The file sources skip token files others could read.
    std::fs::set_permissions(
        gemini.join("oauth_creds.json"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod oauth_creds.json");
    // … and a setup-token assumed to live one day from when it is stored (the 1 d threshold).
    world.write_config("[credentials.claude]\nsetup_token_lifetime_days = 1\n");
    world.setup_token("claude", TOKEN);

    let notifications = NotificationServer::start(&world.bus_address);
    let mut app = world.start_app(&[]);
    let expiring = |name: &'static str| {
        notifications
            .wait(
                &format!("an expiry notification for {name}"),
                START_TIMEOUT,
                move |n| n.summary.contains(name) && n.summary.contains("expires in"),
            )
            .unwrap_or_else(|e| panic!("{e}"))
    };
    for (name, left) in [("gemini", " min"), ("claude", " h")] {
        let n = expiring(name);
        eprintln!("notification: {n:?}");
        assert!(
            n.app_name.to_lowercase().contains("keyferry"),
            "not from Keyferry: {n:?}"
        );
        let after = n.summary.split("expires in ").nth(1).unwrap_or_default();
        assert!(
            after.starts_with(|c: char| c.is_ascii_digit()) && after.contains(left),
            "the {name} notification does not say how long is left: {n:?}"
        );
        assert!(
            n.body.contains(name),
            "the {name} notification's body: {n:?}"
        );
        assert!(
            !n.body.contains("ya29.e2e") && !n.body.contains(TOKEN),
            "a token in a notification: {n:?}"
        );
    }

    let status = app.stop(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "exit on SIGTERM: {status:?}"
    );
    drop(app);
    world.finish();
}
