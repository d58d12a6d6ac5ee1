//! End to end, the window's other panes (issues 10 and 12): a Claude Code login's
//! subscription usage from a loopback usage endpoint, the Doctor pane running every check,
//! the access log and the settings; the usage figures also as a line of the tray menu, read
//! over dbusmenu as a panel reads it. Each pane is saved as `test-output/tray-<pane>.png`
//! (with `tray-window.png`, `tray-reroll.png`, `tray-approval.png` and `tray-grants.png` from
//! the other end-to-end tests, that is every pane).
//!
//! Run: `cargo test -p keyferry-tray --test e2e_panes` (Xvfb, tauri-driver 2.x).

#![cfg(target_os = "linux")]

mod support;

use support::dbus_services::{Panel, Watcher};
use support::webdriver::{Driver, Session};
use support::{output_dir, tray_binary, World, START_TIMEOUT, UI_TIMEOUT};
use testkit::fake_oauth::{Answer, FakeOauth};

const ACCESS: &str = "sk-ant-oat01-E2EpanesACCESSpanesACCESSp-0055";
const REFRESH: &str = "sk-ant-ort01-E2EpanesREFRESHpanesREFRES-0056";

fn shot(s: &Session<'_>, tab: &str, name: &str) {
    s.tab(tab);
    s.settle();
    let path = output_dir().join(name);
    s.screenshot(&path);
    let bytes = std::fs::read(&path).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG"),
        "{} is not a PNG",
        path.display()
    );
}

#[test]
fn usage_doctor_access_log_and_settings_panes() {
    let fake = FakeOauth::plain();
    fake.set(Answer::Rotate);
    let world = World::start("panes");
    // Claude Code's own login, 7 hours from expiry: not refreshed, but it has usage figures.
    world.write_claude_login(ACCESS, REFRESH, 7 * 3600);
    world.write_config(&format!(
        "[oauth]\ntoken_url = \"{}\"\nusage_url = \"{}\"\n",
        fake.token_url(),
        fake.usage_url()
    ));
    // A panel's StatusNotifierWatcher, so the tray's menu can be read over dbusmenu.
    let watcher = Watcher::start(&world.bus_address);
    let driver = Driver::start(&world);
    let s = driver.session(&world, &tray_binary(), &["--show"]);
    let item = watcher
        .wait_item(START_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let panel = Panel::open(&world.bus_address, item).unwrap_or_else(|e| panic!("{e}"));

    // Usage: asked for when the window opened, shown on the login's card.
    let usage = s.wait_text("#cred-claude [data-testid=usage]", START_TIMEOUT, |t| {
        t.contains("37% used")
    });
    assert!(
        usage.contains("5-hour") && usage.contains("7-day") && usage.contains("12% used"),
        "{usage}"
    );
    let auth = fake.seen.lock().unwrap().usage_auth.clone();
    assert!(!auth.is_empty(), "the usage endpoint was never asked");
    assert!(
        auth.iter().all(
            |(a, beta)| a.as_deref() == Some(&format!("Bearer {ACCESS}")[..])
                && beta.as_deref() == Some("oauth-2025-04-20")
        ),
        "{auth:?}"
    );
    assert_eq!(fake.token_calls(), 0, "7 h from expiry: not refreshed");
    // The same figures as a line of the tray menu.
    panel
        .wait_for_entry("claude usage: 5-hour 37% · 7-day 12%", UI_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    drop(panel);
    drop(watcher);
    shot(&s, "overview", "tray-usage.png");

    // Doctor: every check, each with its state.
    s.tab("doctor");
    s.click_when_ready("#run-doctor");
    let summary = s.wait_text("#doctor-summary", UI_TIMEOUT, |t| t.contains("found"));
    let rows = s
        .script("return [...document.querySelectorAll('#doctor li')].map(li => li.className + ' ' + li.querySelector('.check').textContent)")
        .unwrap();
    let rows: Vec<String> = serde_json::from_value(rows).unwrap();
    for want in [
        "state-ok config",
        "state-ok keychain",
        "state-ok claude login",
        "state-ok agent",
    ] {
        assert!(rows.iter().any(|r| r == want), "no {want:?} in {rows:?}");
    }
    // This world has no notification service: the one failure, counted in the summary.
    assert!(
        rows.iter().any(|r| r == "state-fail notifications"),
        "{rows:?}"
    );
    assert!(summary.starts_with("1 problem(s) found"), "{summary}");
    shot(&s, "doctor", "tray-doctor.png");

    // The access log: a `keyferry get` through the app's agent appears.
    let out = world.cli(&["--require-agent", "get", "claude"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), ACCESS);
    s.tab("activity");
    s.wait_text("#recent", UI_TIMEOUT, |t| t.contains("claude"));
    shot(&s, "activity", "tray-recent.png");
    shot(&s, "settings", "tray-settings.png");
    s.assert_no_secret(&[ACCESS, REFRESH]);

    assert!(s.close(), "the app did not quit on SIGTERM");
    driver.stop();
    world.finish();
}
