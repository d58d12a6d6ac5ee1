//! Doctor checks of the desktop session: a notification service to show expiry warnings
//! and approvals, and whether the agent or the tray starts at login.

use std::path::PathBuf;

use super::{Check, Context};
use crate::paths;

const NOTIFICATIONS: &str = "notifications";
const AUTOSTART: &str = "autostart";
/// The tray's name as its autostart plugin writes it (`productName`).
const TRAY_NAME: &str = "Keyferry";

pub(super) fn checks(ctx: &Context<'_>) -> Vec<Check> {
    vec![notifications(ctx), autostart()]
}

fn notifications(ctx: &Context<'_>) -> Check {
    if !ctx.config.agent.notifications {
        return Check::skip(NOTIFICATIONS, "turned off ([agent] notifications = false)");
    }
    if crate::notification::available() {
        Check::ok(NOTIFICATIONS, "a notification service is running")
    } else if headless(ctx) {
        // No desktop to show a notification on: nothing is broken, the user only needs to
        // know where warnings go instead.
        Check::warn(
            NOTIFICATIONS,
            "a headless host (no session bus, no display): no notification service, so expiry \
             warnings and approval requests show only in `keyferry watch` and the agent's log",
            "set [agent] notifications = false in config.toml to say so, or run a \
             notification daemon in a desktop session",
        )
    } else {
        Check::fail(
            NOTIFICATIONS,
            "no notification service on the session bus (org.freedesktop.Notifications): \
             expiry warnings and approval requests would go unseen",
            "run a notification daemon (your desktop's, dunst or mako), or on a headless host \
             set [agent] notifications = false in config.toml",
        )
    }
}

/// No session bus and no X11 or Wayland display.
fn headless(ctx: &Context<'_>) -> bool {
    let set = |var: &str| (ctx.env)(var).is_some_and(|v| !v.is_empty());
    !set("DISPLAY") && !set("WAYLAND_DISPLAY") && !crate::notification::session_bus()
}

/// Where the tray's autostart entry goes (tauri-plugin-autostart: XDG autostart under
/// `~/.config`, a LaunchAgent on macOS).
fn tray_entries() -> Vec<PathBuf> {
    let home = paths::home();
    if cfg!(target_os = "macos") {
        return vec![home.join(format!("Library/LaunchAgents/{TRAY_NAME}.plist"))];
    }
    let mut dirs = vec![home.join(".config/autostart")];
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from) {
        if x.is_absolute() && !dirs.contains(&x.join("autostart")) {
            dirs.push(x.join("autostart"));
        }
    }
    dirs.into_iter()
        .map(|d| d.join(format!("{TRAY_NAME}.desktop")))
        .collect()
}

fn autostart() -> Check {
    let unit = crate::service::unit_path();
    let mut on = Vec::new();
    if unit.is_file() {
        on.push(format!("the agent ({})", paths::display(&unit)));
    }
    if let Some(entry) = tray_entries().into_iter().find(|p| p.is_file()) {
        on.push(format!("the tray ({})", paths::display(&entry)));
    }
    if on.is_empty() {
        Check::warn(
            AUTOSTART,
            "nothing starts at login: tokens are served only while you run the agent or the tray",
            format!(
                "`keyferry agent install`, then `{}`; or turn on Start at login in the tray's menu",
                crate::service::enable_hint()
            ),
        )
    } else {
        Check::ok(AUTOSTART, format!("starts at login: {}", on.join(", ")))
    }
}
