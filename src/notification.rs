//! Desktop notifications for the headless agent: freedesktop D-Bus on Linux, Notification
//! Center via `osascript` on macOS. Detects a missing notification service instead of
//! dropping messages silently, so callers can fall back to the log.

/// What became of a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Shown,
    /// No notification service on this desktop (or no session bus).
    NoService,
    Failed(String),
}

/// Whether a desktop notification service is there to show anything.
#[must_use]
pub fn available() -> bool {
    imp::available()
}

/// Whether there is a session bus at all; without one (and without a display) the host is
/// headless, and a missing notification service is expected rather than broken.
#[must_use]
pub fn session_bus() -> bool {
    imp::session_bus()
}

/// Shows a notification. Summary and body never contain secrets (names and times only).
#[must_use]
pub fn send(summary: &str, body: &str) -> Delivery {
    imp::send(summary, body)
}

#[cfg(target_os = "linux")]
mod imp {
    use std::collections::HashMap;
    use std::time::Duration;

    use dbus::arg::{RefArg, Variant};
    use dbus::blocking::Connection;

    use super::Delivery;

    const NAME: &str = "org.freedesktop.Notifications";

    fn service_present(conn: &Connection) -> bool {
        let bus = conn.with_proxy(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            Duration::from_secs(2),
        );
        let owned: Result<(bool,), _> =
            bus.method_call("org.freedesktop.DBus", "NameHasOwner", (NAME,));
        if matches!(owned, Ok((true,))) {
            return true;
        }
        let activatable: Result<(Vec<String>,), _> =
            bus.method_call("org.freedesktop.DBus", "ListActivatableNames", ());
        activatable.is_ok_and(|(names,)| names.iter().any(|n| n == NAME))
    }

    pub fn available() -> bool {
        Connection::new_session().is_ok_and(|c| service_present(&c))
    }

    pub fn session_bus() -> bool {
        Connection::new_session().is_ok()
    }

    pub fn send(summary: &str, body: &str) -> Delivery {
        let Ok(conn) = Connection::new_session() else {
            return Delivery::NoService;
        };
        if !service_present(&conn) {
            return Delivery::NoService;
        }
        let proxy = conn.with_proxy(
            NAME,
            "/org/freedesktop/Notifications",
            Duration::from_secs(5),
        );
        let hints: HashMap<&str, Variant<Box<dyn RefArg>>> = HashMap::new();
        let result: Result<(u32,), dbus::Error> = proxy.method_call(
            NAME,
            "Notify",
            (
                "Keyferry",
                0u32,
                "dialog-password",
                summary,
                body,
                Vec::<&str>::new(),
                hints,
                -1i32,
            ),
        );
        match result {
            Ok(_) => Delivery::Shown,
            Err(e) => Delivery::Failed(e.message().unwrap_or("unknown D-Bus error").to_owned()),
        }
    }
}

#[cfg(target_os = "macos")]
mod imp {
    use super::Delivery;

    fn quote(s: &str) -> String {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }

    pub fn available() -> bool {
        true
    }

    pub fn session_bus() -> bool {
        true
    }

    pub fn send(summary: &str, body: &str) -> Delivery {
        let script = format!(
            "display notification {} with title \"Keyferry\" subtitle {}",
            quote(body),
            quote(summary)
        );
        match std::process::Command::new("osascript")
            .arg("-e")
            .arg(script)
            .status()
        {
            Ok(s) if s.success() => Delivery::Shown,
            Ok(s) => Delivery::Failed(format!("osascript exited with {s}")),
            Err(_) => Delivery::NoService,
        }
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
mod imp {
    pub fn available() -> bool {
        false
    }

    pub fn session_bus() -> bool {
        false
    }

    pub fn send(_: &str, _: &str) -> super::Delivery {
        super::Delivery::NoService
    }
}
