//! The window's lifetime end to end (issue 12), with no WebDriver in between: no WebKit
//! process runs before the window is first opened; opened by a second launch; closed as a
//! window manager closes it (WM_DELETE_WINDOW), every WebKit process is gone (the app stops
//! the network process WebKitGTK would keep); opened again, WebKit serves the page anew.
//!
//! Run: `cargo test -p keyferry-tray --test e2e_window` (Xvfb, python3-xlib).

#![cfg(target_os = "linux")]

mod support;

use std::time::Duration;

use support::{
    agent_answers, run_bounded, tray_binary, wait_for, workspace, World, CLI_TIMEOUT,
    START_TIMEOUT, UI_TIMEOUT,
};

const TOKEN: &str = "sk-ant-oat01-E2ElifetimeLIFETIMElifetimeL-0066";

/// The `comm` of every child of `pid` whose name starts with "WebKit".
fn webkit_children(pid: u32) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let comm = head.split_once(" (").map_or("", |(_, c)| c);
        let ppid: u32 = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if ppid == pid && comm.starts_with("WebKit") {
            found.push(comm.to_owned());
        }
    }
    found.sort();
    found
}

fn open_again(world: &World) {
    // Single instance: a second launch asks the first to show its window, then exits.
    let out = run_bounded(&mut world.command(tray_binary()), None, CLI_TIMEOUT)
        .unwrap_or_else(|e| panic!("the second launch: {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn wait_webkit(pid: u32, what: &str, ok: impl Fn(&[String]) -> bool) -> Vec<String> {
    wait_for(what, UI_TIMEOUT, || {
        let now = webkit_children(pid);
        if ok(&now) {
            Ok(now)
        } else {
            Err(format!("{now:?}"))
        }
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_window_costs_nothing_until_opened_and_again_after_closing() {
    let world = World::start("window-life");
    world.setup_token("claude", TOKEN);
    let mut app = world.start_app(&[]);
    let pid = app.pid();
    wait_for("the embedded agent", START_TIMEOUT, || {
        agent_answers(&world.socket())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", app.log_text()));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        webkit_children(pid),
        Vec::<String>::new(),
        "WebKit before any window"
    );

    open_again(&world);
    let open = wait_webkit(pid, "the window's web process", |c| {
        c.iter().any(|n| n.starts_with("WebKitWebProces"))
    });
    assert!(
        open.iter().any(|n| n.starts_with("WebKitNetworkPr")),
        "{open:?}"
    );

    // As a title bar's close button does; retried until the window is mapped.
    wait_for("the window to close", UI_TIMEOUT, || {
        let mut close = world.command("/usr/bin/python3");
        close
            .arg(workspace().join("src-tauri/close-window.py"))
            .arg("Keyferry");
        let out = run_bounded(&mut close, None, CLI_TIMEOUT)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    wait_webkit(pid, "every WebKit process to exit", <[String]>::is_empty);
    wait_for("the app to say what it gave back", UI_TIMEOUT, || {
        if app.log_text().contains("window closed; memory given back") {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));

    // Reopened: a new network process, and the page stays up.
    open_again(&world);
    wait_webkit(pid, "a new web and network process", |c| {
        c.iter().any(|n| n.starts_with("WebKitWebProces"))
            && c.iter().any(|n| n.starts_with("WebKitNetworkPr"))
    });
    std::thread::sleep(Duration::from_secs(3));
    let still = webkit_children(pid);
    assert_eq!(
        still.len(),
        2,
        "a WebKit process died after reopening: {still:?}\n{}",
        app.log_text()
    );
    assert!(app.exited().is_none(), "the app quit:\n{}", app.log_text());
    app.stop(Duration::from_secs(10));
    drop(app);
    world.finish();
}
