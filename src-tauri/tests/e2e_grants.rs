//! End to end, the window's gateway grants (issue 9): a grant made with `keyferry grant`
//! shows in the window with its usage, its Revoke button revokes it in the agent, and the
//! pane is saved as `test-output/tray-grants.png`.
//!
//! Run: `cargo test -p keyferry-tray --test e2e_grants` (Xvfb, tauri-driver 2.x).

#![cfg(target_os = "linux")]

mod support;

use support::webdriver::Driver;
use support::{output_dir, tray_binary, wait_for, World, UI_TIMEOUT};

const TOKEN: &str = "sk-ant-oat01-E2EgrantGRANTgrantGRANTgr-0077";

#[test]
fn grants_show_with_their_usage_and_revoke_from_the_window() {
    let world = World::start("grants");
    world.write_config("[gateway]\nlisten = [\"127.0.0.1:0\"]\nunix_socket = false\n");
    world.setup_token("claude", TOKEN);
    let driver = Driver::start(&world);
    let s = driver.session(&world, &tray_binary(), &["--show"]);
    wait_for("the embedded agent", UI_TIMEOUT, || {
        let out = world.cli(&["--require-agent", "status"], None);
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let out = world.cli(&["grant", "sandbox-7", "--ttl", "2h"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let placeholder = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("ANTHROPIC_AUTH_TOKEN=").map(str::to_owned))
        .expect("a placeholder");
    s.tab("sandboxes");
    let line = s.wait_text("#grants", UI_TIMEOUT, |t| t.contains("sandbox-7 on claude"));
    assert!(
        line.contains("0 requests") && line.contains("expires in"),
        "{line}"
    );
    s.assert_no_secret(&[&placeholder, TOKEN]);
    let shot = output_dir().join("tray-grants.png");
    s.screenshot(&shot);
    s.click_when_ready("button[data-grant='sandbox-7']");
    wait_for("the grant to be revoked", UI_TIMEOUT, || {
        let out = world.cli(&["grants", "--json"], None);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.trim() == "[]" {
            Ok(())
        } else {
            Err(text)
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(s.close(), "the app did not quit on SIGTERM");
    driver.stop();
    world.finish();
}
