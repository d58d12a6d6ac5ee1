//! The window's lifetime: built on first open, destroyed on close. A hidden window keeps
//! WebKit's web and network processes alive (about 130 MiB PSS while nobody looks), so the
//! app holds none until someone opens it, and lets it go again when it is closed (on Linux
//! also the network process and the pages the window made resident, `keyferry::trim`).

use tauri::{AppHandle, Emitter, Manager, WebviewUrl, WebviewWindow, WebviewWindowBuilder};

/// The window's label; `capabilities/main.json` grants its permissions by this name.
pub const LABEL: &str = "main";

/// Brings the window up (building it if it is not open) and opens `section`.
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

/// The panel's size: a menu-bar panel's width (CodexBar, Tailscale: 420–480 px).
const WIDTH: f64 = 460.0;
const HEIGHT: f64 = 640.0;

/// The icon's left click (macOS): the panel opens, or closes if it is open.
pub fn toggle(app: &AppHandle) {
    match app.get_webview_window(LABEL) {
        Some(w) => {
            let _ = w.close();
        }
        None => show(app, None),
    }
}

fn build(app: &AppHandle, section: Option<&str>) -> tauri::Result<WebviewWindow> {
    let mut builder = WebviewWindowBuilder::new(app, LABEL, WebviewUrl::default())
        .title("Keyferry")
        .inner_size(WIDTH, HEIGHT)
        .min_inner_size(400.0, 420.0)
        .visible(true);
    builder = panel::place(app, builder);
    if let Some(section) = section {
        // A fresh page has no `kf://show` listener yet when it loads; open the tab from
        // inside it once the page runs (the cards appear after the first `view`).
        let script = show_script(section);
        builder = builder.on_page_load(move |w, payload| {
            if matches!(payload.event(), tauri::webview::PageLoadEvent::Finished) {
                let _ = w.eval(&script);
            }
        });
    }
    let w = builder.build()?;
    let handle = app.clone();
    w.on_window_event(move |e| match e {
        tauri::WindowEvent::Destroyed => {
            // A New sandbox dialog left open goes with its window: drop its recipes.
            handle
                .state::<crate::Shared>()
                .recipes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            release_after_close(handle.clone());
        }
        tauri::WindowEvent::Focused(false) => panel::lost_focus(&handle),
        _ => {}
    });
    Ok(w)
}

/// Where the panel opens. macOS: under the menu-bar icon (where it was last clicked), as a
/// borderless panel that goes away when it loses focus, like the menu it stands beside.
/// Linux: the tray (an AppIndicator StatusNotifierItem) shows its menu itself and never
/// tells the app where its icon is, so the window opens centred as a normal small window.
mod panel {
    use super::AppHandle;
    use tauri::{WebviewWindowBuilder, Wry};

    #[cfg(target_os = "macos")]
    pub fn place<'a>(
        _app: &AppHandle,
        builder: WebviewWindowBuilder<'a, Wry, AppHandle>,
    ) -> WebviewWindowBuilder<'a, Wry, AppHandle> {
        let builder = builder
            .decorations(false)
            .always_on_top(true)
            .skip_taskbar(true)
            .resizable(false);
        match crate::tray::last_click() {
            Some((x, y)) => builder.position(x - super::WIDTH / 2.0, y),
            None => builder.center(),
        }
    }

    #[cfg(not(target_os = "macos"))]
    pub fn place<'a>(
        _app: &AppHandle,
        builder: WebviewWindowBuilder<'a, Wry, AppHandle>,
    ) -> WebviewWindowBuilder<'a, Wry, AppHandle> {
        builder.center()
    }

    /// A macOS panel closes when the user clicks elsewhere (destroyed, as on close).
    #[cfg(target_os = "macos")]
    pub fn lost_focus(app: &AppHandle) {
        use tauri::Manager as _;
        if let Some(w) = app.get_webview_window(super::LABEL) {
            let _ = w.close();
        }
    }

    #[cfg(not(target_os = "macos"))]
    pub fn lost_focus(_app: &AppHandle) {}
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

/// JavaScript that opens `section` (the same names as `kf://show`: a tab, `reroll`,
/// `cred:NAME`, `approvals`) once the page's `kfShow` exists.
fn show_script(section: &str) -> String {
    // JSON string syntax is valid JavaScript: the name cannot break out of its literal.
    let name = serde_json::to_string(section).unwrap_or_else(|_| "\"\"".to_owned());
    format!(
        "(function go(n) {{ if (window.kfShow) window.kfShow({name}); \
         else if (n > 0) setTimeout(() => go(n - 1), 100); }})(50);"
    )
}

#[cfg(test)]
mod tests {
    use super::show_script;

    #[test]
    fn show_script_names_the_section() {
        assert!(show_script("cred:claude").contains("kfShow(\"cred:claude\")"));
        assert!(show_script("reroll").contains("kfShow(\"reroll\")"));
    }

    #[test]
    fn show_script_quotes_hostile_names() {
        let s = show_script("x\"); alert(1); (\"");
        assert!(s.contains(r#"kfShow("x\"); alert(1); (\"")"#), "{s}");
    }
}
