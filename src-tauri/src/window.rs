//! The window's lifetime: built on first open, destroyed on close. A hidden window keeps
//! WebKit's web and network processes alive (about 130 MiB PSS while nobody looks), so the
//! app holds none until someone opens it, and lets it go again when it is closed (on Linux
//! also the network process and the pages the window made resident, `keyferry::trim`).

use tauri::{AppHandle, Emitter, Manager, WebviewUrl, WebviewWindow, WebviewWindowBuilder};

/// The window's label; `capabilities/main.json` grants its permissions by this name.
pub const LABEL: &str = "main";

/// Brings the window up (building it if it is not open) and scrolls to `section`.
pub fn show(app: &AppHandle, section: Option<&str>) {
    if let Some(w) = app.get_webview_window(LABEL) {
        let _ = w.show();
        let _ = w.unminimize();
        let _ = w.set_focus();
        if let Some(section) = section {
            let _ = app.emit("kf://show", section);
        }
        return;
    }
    match build(app, section) {
        Ok(w) => {
            let _ = w.set_focus();
            // The page reads its view from the app's state on load; refresh that state from
            // the agent first, so a window reopened after a while starts current.
            let app = app.clone();
            tauri::async_runtime::spawn_blocking(move || {
                crate::resync(&app);
                crate::redraw(&app);
            });
        }
        // Two opens racing: the other one built it.
        Err(e) if app.get_webview_window(LABEL).is_some() => {
            tracing::debug!(error = %e, "window built concurrently");
        }
        Err(e) => tracing::warn!(error = %e, "cannot open the window"),
    }
}

fn build(app: &AppHandle, section: Option<&str>) -> tauri::Result<WebviewWindow> {
    let mut builder = WebviewWindowBuilder::new(app, LABEL, WebviewUrl::default())
        .title("Keyferry")
        .inner_size(820.0, 700.0)
        .min_inner_size(560.0, 420.0)
        .center()
        .visible(true);
    if let Some(section) = section {
        // A fresh page has no `kf://show` listener yet when it loads; scroll from inside it
        // once the section exists (cards appear after the first `view`), for at most 5 s.
        let script = scroll_script(section);
        builder = builder.on_page_load(move |w, payload| {
            if matches!(payload.event(), tauri::webview::PageLoadEvent::Finished) {
                let _ = w.eval(&script);
            }
        });
    }
    let w = builder.build()?;
    let handle = app.clone();
    w.on_window_event(move |e| {
        if matches!(e, tauri::WindowEvent::Destroyed) {
            release_after_close(handle.clone());
        }
    });
    Ok(w)
}

/// How long after closing the web process has surely exited (it goes within a second).
#[cfg(target_os = "linux")]
const SETTLE: std::time::Duration = std::time::Duration::from_secs(3);

/// Once the window is gone, gives back what it left behind (`keyferry::trim`): WebKitGTK's
/// network process, freed heap, resident library pages. Skipped if it was reopened meanwhile.
#[cfg(target_os = "linux")]
fn release_after_close(app: AppHandle) {
    std::thread::spawn(move || {
        std::thread::sleep(SETTLE);
        if app.get_webview_window(LABEL).is_some() {
            return;
        }
        give_back("window closed");
    });
}

#[cfg(not(target_os = "linux"))]
fn release_after_close(_app: AppHandle) {}

/// [`keyferry::trim::give_back`], stopping WebKit's network process, logged as `when`.
#[cfg(target_os = "linux")]
pub fn give_back(when: &str) {
    // The names as `comm` shows them (15 characters). A web process means a window is open
    // after all (reopened meanwhile): its network process stays.
    let r = keyferry::trim::give_back("WebKitNetworkPr", "WebKitWebProces");
    tracing::info!(
        stopped = r.stopped,
        advised_mib = r.advised >> 20,
        "{when}; memory given back"
    );
}

/// JavaScript that scrolls to `section` (the same names as `kf://show`) once it exists.
fn scroll_script(section: &str) -> String {
    let id = if let Some(name) = section.strip_prefix("cred:") {
        format!("cred-{name}")
    } else if section == "approvals" {
        "approvals-section".to_owned()
    } else {
        section.to_owned()
    };
    // JSON string syntax is valid JavaScript: the id cannot break out of its literal.
    let id = serde_json::to_string(&id).unwrap_or_else(|_| "\"\"".to_owned());
    format!(
        "(function go(n) {{ const t = document.getElementById({id}); \
         if (t) t.scrollIntoView({{ block: 'start' }}); \
         else if (n > 0) setTimeout(() => go(n - 1), 100); }})(50);"
    )
}

#[cfg(test)]
mod tests {
    use super::scroll_script;

    #[test]
    fn scroll_script_targets_the_ui_ids() {
        assert!(scroll_script("cred:claude").contains("getElementById(\"cred-claude\")"));
        assert!(scroll_script("approvals").contains("getElementById(\"approvals-section\")"));
        assert!(scroll_script("reroll").contains("getElementById(\"reroll\")"));
    }

    #[test]
    fn scroll_script_quotes_hostile_names() {
        let s = scroll_script("cred:x\"); alert(1); (\"");
        assert!(
            s.contains(r#"getElementById("cred-x\"); alert(1); (\"")"#),
            "{s}"
        );
    }
}
