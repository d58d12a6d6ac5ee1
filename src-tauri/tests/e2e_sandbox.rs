//! End to end, a sandbox made from the panel (issue 18): "New sandbox…" on the Sandboxes
//! tab makes the grant (it is in `keyferry grants`), shows each recipe with the placeholder
//! masked, and Copy puts the whole docker recipe on the X clipboard (read back with
//! `xclip`). Pasted into a shell with only `IMAGE` filled in, it runs the real `claude` in a
//! container of a real Docker engine (testkit's private `dockerd`) against a loopback fake
//! API: the upstream gets the stored token, the container's environment only the
//! placeholder, and the page never held it. Saved as `test-output/panel-new-sandbox.png`.
//!
//! Run: `cargo test -p keyferry-tray --test e2e_sandbox` (root, Xvfb, tauri-driver 2.x,
//! docker.io, xclip).

#![cfg(target_os = "linux")]

mod support;

use std::time::Duration;

use serde_json::Value;
use support::webdriver::Driver;
use support::{output_dir, tray_binary, wait_for, workspace, World, UI_TIMEOUT};
use testkit::docker::Docker;
use testkit::fake_api::{FakeApi, REPLY};

const TOKEN: &str = "sk-ant-oat01-E2EsandboxSANDBOXsandboxSA-0071";
const PORT: u16 = 7778;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_sandbox_made_in_the_panel_runs_its_copied_docker_recipe() {
    support::require(&[("xclip", "xclip")]);
    let mut docker = Docker::start();
    let api = FakeApi::start();
    let world = World::start("sandbox");
    world.write_config(&format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\", \"{}:{PORT}\"]\nunix_socket = false\n\
         listen_retry_ms = 200\nupstream = \"{}\"\n",
        docker.host_address(),
        api.url
    ));
    world.setup_token("claude", TOKEN);
    let driver = Driver::start(&world);
    let s = driver.session(&world, &tray_binary(), &["--show"]);

    s.tab("sandboxes");
    s.click_when_ready("#new-sandbox");
    s.wait_text("#sb-credential", UI_TIMEOUT, |t| t.contains("claude"));
    s.type_into("#sb-name", "win-1", true).unwrap();
    s.type_into("#sb-lifetime", "1h", true).unwrap();
    // A zero budget is refused on its field, with the fix, and makes nothing.
    s.type_into("#sb-budget", "0", true).unwrap();
    s.click_when_ready("#sb-create");
    let refused = s.wait_text("#sb-error", UI_TIMEOUT, |t| !t.is_empty());
    assert!(refused.contains("leave it empty"), "{refused}");
    let invalid = s
        .script("return document.querySelector('#sb-budget').getAttribute('aria-invalid')")
        .unwrap();
    assert_eq!(invalid, Value::String("true".into()));
    let none = world.cli(&["grants", "--json"], None);
    assert_eq!(
        text(&none.stdout).trim(),
        "[]",
        "a refused form made a grant"
    );

    s.type_into("#sb-budget", "50000", true).unwrap();
    s.click_when_ready("#sb-create");
    let made = s.wait_text("[data-testid=sandbox-made]", UI_TIMEOUT, |t| !t.is_empty());
    assert!(made.starts_with("Made sandbox win-1 on claude"), "{made}");
    let shown = s.wait_text("[data-testid=recipe-docker] pre", UI_TIMEOUT, |t| {
        t.contains("IMAGE claude")
    });
    assert!(
        shown.contains("export ANTHROPIC_AUTH_TOKEN='kfg_…"),
        "masked: {shown}"
    );
    for r in ["compose", "bwrap", "ssh"] {
        let t = s
            .text(&s.find(&format!("[data-testid=recipe-{r}] pre")).unwrap())
            .unwrap();
        assert!(t.contains("win-1"), "{r}: {t}");
    }
    s.screenshot(&output_dir().join("panel-new-sandbox.png"));

    // The grant exists, with the form's limits.
    let listed = world.cli(&["grants", "--json"], None);
    let grants: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(grants[0]["name"], "win-1", "{grants}");
    assert_eq!(grants[0]["daily_token_budget"], 50000, "{grants}");

    // Copy: the whole recipe, placeholder included, onto the clipboard.
    s.click_when_ready("[data-copy=docker]");
    s.wait_text("[data-testid=recipe-docker] .copied", UI_TIMEOUT, |t| {
        t == "Copied."
    });
    let mut xclip = world.command("xclip");
    xclip.args(["-o", "-selection", "clipboard"]);
    let clip = testkit::run_bounded(&mut xclip, None, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("xclip: {e}"));
    let recipe = text(&clip.stdout);
    let placeholder = recipe
        .lines()
        .find_map(|l| l.strip_prefix("export ANTHROPIC_AUTH_TOKEN='"))
        .and_then(|l| l.strip_suffix('\''))
        .unwrap_or_else(|| panic!("no placeholder on the clipboard: {recipe}"))
        .to_owned();
    assert!(
        placeholder.starts_with("kfg_") && placeholder.len() > 20,
        "{placeholder}"
    );
    assert!(!recipe.contains(TOKEN));
    s.assert_no_secret(&[&placeholder, TOKEN]);

    // Pasted into a shell (stdin, as into a terminal), `IMAGE` filled in.
    let net = docker.bridge();
    let want = format!("http://{}:{PORT}", docker.host_address());
    wait_for("the late bridge listener", Duration::from_secs(15), || {
        let out = world.cli(&["status"], None);
        let t = text(&out.stdout);
        if t.contains(&want) {
            Ok(())
        } else {
            Err(t)
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let (all, env) = docker.paste_claude_recipe(&recipe, &net, &workspace().join("target/npm"));
    assert!(all.contains(REPLY), "{all}");
    assert!(
        env.contains(&format!("ANTHROPIC_AUTH_TOKEN={placeholder}")),
        "{env}"
    );
    assert!(!all.contains(TOKEN), "{all}");
    let bearers = api.wait_bearers(1, Duration::from_secs(10));
    assert!(
        !bearers.is_empty() && bearers.iter().all(|b| b == TOKEN),
        "{bearers:?}"
    );

    // Escape closes the dialog and the app drops the recipes' texts.
    s.type_into("#sb-recipes [data-copy=docker]", "\u{E00C}", false)
        .unwrap();
    wait_for("Escape to close the dialog", UI_TIMEOUT, || {
        let open = s
            .script("return document.querySelector('#sandbox-dialog').open")
            .unwrap();
        if open == Value::Bool(false) {
            Ok(())
        } else {
            Err("still open".into())
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    s.wait_text("#grants", UI_TIMEOUT, |t| {
        t.contains("win-1 on claude: 1 request,")
    });
    assert!(s.close(), "the app did not quit on SIGTERM");
    driver.stop();
    world.finish();
}
