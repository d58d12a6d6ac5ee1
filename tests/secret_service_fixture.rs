//! Self-tests of the real-parts fixtures in `testkit`: they start what they claim,
//! a locked fixture is really locked, the bare bus never activates a Secret Service, and
//! dropping a fixture leaves no process behind.

// Real Secret Service, keyutils and /proc: these run on Linux only.
#![cfg(target_os = "linux")]

mod common;

use std::time::Duration;

use common::{group_alive, PrivateBus, SecretServiceFixture, SECRETS_NAME};

/// Drop reaps synchronously, but give the kernel a moment to empty the group.
fn assert_gone(what: &str, pgid: u32) {
    common::wait_until(
        Duration::from_secs(5),
        &format!("{what} (process group {pgid}) to have no process left after the drop"),
        || !group_alive(pgid),
    );
}

#[test]
fn fixture_serves_secret_tool_and_leaves_nothing_behind() {
    let home = tempfile::tempdir().expect("tempdir");
    let fx = SecretServiceFixture::start(home.path(), "fixture-self-test");
    assert!(fx.bus().has_owner(SECRETS_NAME));
    assert!(!fx.is_locked(), "a fresh login keyring should be unlocked");

    let stored = fx.secret_tool(
        &[
            "store",
            "--label=self-test",
            "service",
            "fx-self-test",
            "username",
            "u",
        ],
        Some("fixture ✓ value"),
    );
    assert!(
        stored.status.success(),
        "secret-tool store: {}",
        String::from_utf8_lossy(&stored.stderr)
    );
    let looked = fx.secret_tool(
        &["lookup", "service", "fx-self-test", "username", "u"],
        None,
    );
    assert_eq!(String::from_utf8_lossy(&looked.stdout), "fixture ✓ value");
    assert_eq!(fx.count_items(&["service", "fx-self-test"]), 1);
    assert!(
        home.path()
            .join(".local/share/keyrings/login.keyring")
            .is_file(),
        "the login keyring should live under the given HOME"
    );
    let env = fx.env();
    for var in [
        "DBUS_SESSION_BUS_ADDRESS",
        "HOME",
        "XDG_DATA_HOME",
        "XDG_RUNTIME_DIR",
    ] {
        assert!(env.iter().any(|(k, _)| k == var), "env() lacks {var}");
    }

    let bus_pid = fx.bus().pid();
    let keyring_pid = fx.keyring_pid().expect("keyring daemon running");
    assert!(group_alive(bus_pid) && group_alive(keyring_pid));
    drop(fx);
    assert_gone("gnome-keyring-daemon", keyring_pid);
    assert_gone("dbus-daemon", bus_pid);
}

#[test]
fn locked_fixture_is_locked_until_the_right_password() {
    let home = tempfile::tempdir().expect("tempdir");
    let mut fx = SecretServiceFixture::start_locked(home.path());
    assert!(fx.is_locked());
    let canary = [
        "lookup",
        "service",
        SecretServiceFixture::CANARY_SERVICE,
        "username",
        SecretServiceFixture::CANARY_ACCOUNT,
    ];
    // With no prompter on the bus, a locked lookup fails instead of waiting for one.
    let locked = common::run_bounded(
        fx.command("secret-tool").args(canary),
        None,
        Duration::from_secs(5),
    )
    .unwrap_or_else(|e| panic!("a locked lookup waited instead of failing: {e}"));
    assert!(
        !locked.status.success(),
        "lookup in a locked collection should fail"
    );
    // Locked items are still listed (attributes hashed), so the item is really there.
    assert_eq!(
        fx.count_items(&["service", SecretServiceFixture::CANARY_SERVICE]),
        1
    );

    let old_pid = fx.keyring_pid().expect("keyring daemon running");
    fx.restart_keyring(SecretServiceFixture::RIGHT_PASSWORD);
    assert_gone("the replaced gnome-keyring-daemon", old_pid);
    assert!(
        !fx.is_locked(),
        "the right password should unlock the login keyring"
    );
    let unlocked = fx.secret_tool(&canary, None);
    assert_eq!(
        String::from_utf8_lossy(&unlocked.stdout),
        SecretServiceFixture::CANARY_SECRET
    );
}

#[test]
fn bare_bus_never_activates_a_secret_service() {
    let bus = PrivateBus::start();
    let out = common::run_with_timeout(
        std::process::Command::new("secret-tool")
            .args(["lookup", "service", "x", "username", "y"])
            .env("DBUS_SESSION_BUS_ADDRESS", bus.address()),
        None,
        common::COMMAND_TIMEOUT,
    );
    assert!(
        !out.status.success(),
        "secret-tool found a Secret Service on the bare bus"
    );
    assert!(
        !bus.has_owner(SECRETS_NAME),
        "the bare bus auto-started a Secret Service"
    );
    let pid = bus.pid();
    drop(bus);
    assert_gone("dbus-daemon", pid);
}
