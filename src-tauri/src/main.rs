//! Keyferry's menu-bar app: the agent (in-process, or a client of a headless one), a tray
//! that shows it, notifications, and a small window. Tauri glue only: the menu model, icon
//! state and texts come from the library (`keyferry::tray`).

#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod backend;
mod commands;
mod tray;
mod window;

use std::sync::Mutex;
use std::time::Duration;

use keyferry::audit::Audit;
use keyferry::config::Config;
use keyferry::domain::{ErrorCode, UsageState};
use keyferry::protocol::Event;
use keyferry::secret::Secret;
use tauri::{AppHandle, Emitter, Manager, RunEvent};
use tauri_plugin_autostart::{MacosLauncher, ManagerExt as _};
use time::OffsetDateTime;

use backend::Backend;
use keyferry::notification::Delivery;
use keyferry::tray::{AgentLink, Applied, MenuAction, Settings, TrayState, RECENT_MAX};
use tray::{Tray, TrayCell};

/// Everything the app shares between the tray, the commands and the event pump.
pub struct Shared {
    pub backend: Backend,
    pub state: Mutex<TrayState>,
    /// The reroll wizard's captured or pasted token, until it is stored or discarded.
    pub pending: Mutex<Option<Secret>>,
    /// Wakes the countdown timer early (after an event changed what it waits for).
    pub wake: tokio::sync::Notify,
    /// Asks for subscription usage now (the window was opened).
    pub usage_wake: tokio::sync::Notify,
    /// The recipes of the sandbox the window just made, until copied and the dialog closes.
    pub recipes: Mutex<Option<keyferry::tray::sandbox::Copyable>>,
    /// The clipboard, opened on the first Copy: on X11 an open one is a connection and a
    /// thread serving it, which an app that may never copy should not carry (idle memory).
    /// Written from Rust only; the page has no clipboard permission.
    pub clipboard: Mutex<Option<arboard::Clipboard>>,
}

impl Shared {
    pub fn state(&self) -> std::sync::MutexGuard<'_, TrayState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Redraws the tray from the state and tells the window to re-read its view.
pub fn redraw(app: &AppHandle) {
    let shared = app.state::<Shared>();
    let (model, icon, tooltip) = {
        let s = shared.state();
        (s.menu(now()), s.icon(), s.tooltip(now()))
    };
    // Menu calls from other threads block on the main thread; doing the whole update there
    // means the tray's lock is only ever taken on one thread.
    let main = app.clone();
    let _ = app.run_on_main_thread(move || {
        let cell = main.state::<TrayCell>();
        let mut guard = cell
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(tray) = guard.as_mut() {
            if let Err(e) = tray.update(&main, model, icon, &tooltip) {
                tracing::warn!(error = %e, "cannot update the tray");
            }
        }
    });
    let _ = app.emit("kf://changed", ());
    shared.wake.notify_one();
}

fn resync(app: &AppHandle) {
    let shared = app.state::<Shared>();
    match shared.backend.status() {
        Ok(status) => shared.state().reset(&status),
        Err(e) => shared.state().notice = Some(e),
    }
}

fn on_event(app: &AppHandle, event: &Event) {
    let shared = app.state::<Shared>();
    if matches!(
        event,
        Event::Changed { .. } | Event::Refreshed { .. } | Event::Locked | Event::Unlocked
    ) {
        // A new login (or the first resolution at start) may have figures now; a locked
        // agent has none.
        shared.usage_wake.notify_one();
    }
    let applied = shared.state().apply(event, now());
    match applied {
        Applied::Nothing => return,
        Applied::Resync => resync(app),
        Applied::Changed => {}
    }
    redraw(app);
    if let Event::Approval { approval } = event {
        // Someone waits on an answer: bring the window up and say so.
        show_window(app, Some("approvals"));
        let (summary, body) = keyferry::tray::approval_notification(approval);
        let app = app.clone();
        // The approval line in the menu and the window already stand in when there is no
        // notification service.
        tauri::async_runtime::spawn_blocking(move || notify(&app, &summary, &body));
    }
}

/// Shows a desktop notification through the app (so it carries the app's identity on macOS)
/// and says whether anything showed it. On Linux the plugin drops notifications silently
/// without a service, so the library checks the bus first.
pub fn delivery(app: &AppHandle, summary: &str, body: &str) -> Delivery {
    if !keyferry::notification::available() {
        return Delivery::NoService;
    }
    use tauri_plugin_notification::NotificationExt as _;
    match app
        .notification()
        .builder()
        .title(summary)
        .body(body)
        .show()
    {
        Ok(()) => Delivery::Shown,
        Err(e) => Delivery::Failed(e.to_string()),
    }
}

/// [`delivery`] as a yes/no, logging what was not shown.
pub fn notify(app: &AppHandle, summary: &str, body: &str) -> bool {
    match delivery(app, summary, body) {
        Delivery::Shown => true,
        other => {
            tracing::info!(%summary, %body, delivery = ?other, "notification not shown");
            false
        }
    }
}

/// [`notify`], falling back to the tray's notice line (and the log).
pub fn notify_or_note(app: &AppHandle, summary: &str, body: &str) {
    if !notify(app, summary, body) {
        app.state::<Shared>().state().notice = Some(format!("{summary}: {body}"));
        redraw(app);
    }
}

/// Opens the window (built on demand, see `window`) at `section`.
pub fn show_window(app: &AppHandle, section: Option<&str>) {
    app.state::<Shared>().usage_wake.notify_one();
    window::show(app, section);
}

fn set_autostart(app: &AppHandle, enabled: bool) -> Result<bool, String> {
    let auto = app.autolaunch();
    if enabled {
        auto.enable()
    } else {
        auto.disable()
    }
    .map_err(|e| e.to_string())?;
    let now_enabled = auto.is_enabled().unwrap_or(enabled);
    app.state::<Shared>().state().autostart = now_enabled;
    redraw(app);
    Ok(now_enabled)
}

fn on_menu(app: &AppHandle, id: &str) {
    let Some(action) = MenuAction::from_id(id) else {
        return;
    };
    let shared = app.state::<Shared>();
    match action {
        MenuAction::Credential(name) => show_window(app, Some(&format!("cred:{name}"))),
        MenuAction::Approvals => show_window(app, Some("approvals")),
        MenuAction::Reroll => show_window(app, Some("reroll")),
        MenuAction::NewSandbox => show_window(app, Some("new-sandbox")),
        MenuAction::Alert => {
            let target = shared.state().alert_action();
            if let Some(target) = target {
                on_menu(app, &target.id());
            }
        }
        MenuAction::Open => show_window(app, None),
        MenuAction::ToggleLock => {
            let locked = shared.state().locked;
            if let Err(e) = shared.backend.set_locked(!locked) {
                shared.state().notice = Some(e);
                redraw(app);
            }
        }
        MenuAction::ToggleAutostart => {
            let enabled = shared.state().autostart;
            if let Err(e) = set_autostart(app, !enabled) {
                shared.state().notice = Some(format!("Start at login: {e}"));
                redraw(app);
            }
            if let Some(t) = app
                .state::<TrayCell>()
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_ref()
            {
                t.resync_check(id);
            }
        }
        MenuAction::Quit => app.exit(0),
    }
}

/// Keeps countdowns and "ago" texts current: sleeps until the next text change (or an event).
fn spawn_ticker(app: AppHandle) {
    tauri::async_runtime::spawn(async move {
        loop {
            let wait = app.state::<Shared>().state().next_refresh(now());
            let wait = wait.map_or(Duration::from_secs(3600), |d| {
                Duration::from_secs(d.whole_seconds().clamp(1, 3600).unsigned_abs())
            });
            let shared = app.state::<Shared>();
            tokio::select! {
                () = tokio::time::sleep(wait) => {
                    shared.state().expire_approvals(now());
                    redraw(&app);
                }
                () = shared.wake.notified() => {}
            }
        }
    });
}

/// How soon to ask again when the usage endpoint had not answered yet.
const USAGE_RETRY: Duration = Duration::from_secs(30);

/// Subscription usage for the menu and the window: asked for every 5 minutes while the app
/// runs (the agent's cache makes that at most one endpoint call per login) and at once when
/// the window opens. A headless agent never polls by itself.
fn spawn_usage_poll(app: AppHandle) {
    tauri::async_runtime::spawn(async move {
        loop {
            let shared = app.state::<Shared>();
            let mut next = keyferry::oauth::usage::MIN_INTERVAL;
            match shared.backend.usage().await {
                Ok(usage) => {
                    // The endpoint had not answered within the agent's wait; its answer is
                    // cached moments later, so ask again soon rather than in 5 minutes.
                    if usage.iter().any(|u| {
                        matches!(&u.state, UsageState::Unavailable(e) if e.code == ErrorCode::UsageUnavailable)
                    }) {
                        next = USAGE_RETRY;
                    }
                    if shared.state().set_usage(usage) {
                        redraw(&app);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "no usage figures"),
            }
            tokio::select! {
                () = tokio::time::sleep(next) => {}
                () = shared.usage_wake.notified() => {}
            }
        }
    });
}

/// Start-up (GTK, the tray, the agent's first resolve) touches pages an idle tray never needs
/// again: once it has settled, give them back as a closed window does.
#[cfg(target_os = "linux")]
fn give_back_after_start(app: AppHandle) {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(15));
        if app.get_webview_window(window::LABEL).is_none() {
            window::give_back("started");
        }
    });
}

/// SIGTERM/SIGINT quit cleanly, so the embedded agent removes its socket.
fn spawn_signals(app: AppHandle) {
    tauri::async_runtime::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        app.exit(0);
    });
}

fn setup(app: &mut tauri::App) -> Result<(), Box<dyn std::error::Error>> {
    #[cfg(target_os = "macos")]
    app.set_activation_policy(tauri::ActivationPolicy::Accessory);

    let handle = app.handle().clone();
    let (backend, link, settings) = match Config::load() {
        Ok(config) => {
            let settings = Settings {
                expiry_thresholds: config.agent.expiry_thresholds.labels(),
                notifications: config.agent.notifications,
                notify_on_access: config.agent.notify_on_access,
                approval_timeout_secs: config.agent.approval_timeout_secs,
                config_path: keyferry::paths::display(&keyferry::paths::config_file()),
            };
            let (backend, link) = Backend::start(config);
            (backend, link, settings)
        }
        Err(e) => (
            Backend::Down,
            AgentLink::Down {
                reason: e.to_string(),
            },
            Settings::default(),
        ),
    };
    let mut state = TrayState::new(link);
    state.settings = settings;
    state.autostart = app.autolaunch().is_enabled().unwrap_or(false);
    state.seed_recent(Audit::tail(&Audit::default_path(), RECENT_MAX).unwrap_or_default());
    app.manage(Shared {
        backend,
        state: Mutex::new(state),
        pending: Mutex::new(None),
        wake: tokio::sync::Notify::new(),
        usage_wake: tokio::sync::Notify::new(),
        recipes: Mutex::new(None),
        clipboard: Mutex::new(None),
    });
    app.manage(TrayCell(Mutex::new(None)));

    if let Backend::Embedded(e) = &app.state::<Shared>().backend {
        // The embedded agent's expiry and refusal notices go out as the app's own.
        let app_for_notices = handle.clone();
        e.agent
            .set_notifier(std::sync::Arc::new(move |summary: &str, body: &str| {
                delivery(&app_for_notices, summary, body)
            }));
    }
    let pump = handle.clone();
    app.state::<Shared>()
        .backend
        .pump(move |event| on_event(&pump, &event));
    resync(&handle);

    let (model, icon, tooltip) = {
        let shared = app.state::<Shared>();
        let s = shared.state();
        (s.menu(now()), s.icon(), s.tooltip(now()))
    };
    let tray: Tray = tray::create(&handle, model, icon, &tooltip, on_menu)?;
    *app.state::<TrayCell>()
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tray);
    tracing::info!(link = ?app.state::<Shared>().state().link, "tray ready");

    spawn_ticker(handle.clone());
    spawn_usage_poll(handle.clone());
    spawn_signals(handle.clone());
    if std::env::args().any(|a| a == "--show") {
        show_window(&handle, None);
    }
    #[cfg(target_os = "linux")]
    give_back_after_start(handle);
    Ok(())
}

/// Panic payloads could carry data; print where, not what.
/// GTK initialises OpenGL for the X11 screen at start (to pick GL-capable visuals), which maps
/// the Mesa driver — and with it LLVM — into a tray app that draws nothing with GL: about
/// 30 MiB PSS of the idle app (93 → 61 MiB under Xvfb, `src-tauri/measure.sh`). The window's
/// page then renders without GPU compositing, which a settings window does not need. A
/// `GDK_GL` the user set wins.
#[cfg(target_os = "linux")]
fn no_gl_unless_asked() {
    if std::env::var_os("GDK_GL").is_none() {
        // Called first in `main`, before any thread exists to read the environment.
        std::env::set_var("GDK_GL", "disable");
    }
}

fn main() {
    keyferry::panic::install_redacting_hook("keyferry-tray");
    #[cfg(target_os = "linux")]
    no_gl_unless_asked();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let app = tauri::Builder::default()
        // First, so a second launch only focuses the first one's window.
        .plugin(tauri_plugin_single_instance::init(|app, _argv, _cwd| {
            show_window(app, None)
        }))
        .plugin(tauri_plugin_notification::init())
        .plugin(tauri_plugin_autostart::init(
            MacosLauncher::LaunchAgent,
            None,
        ))
        .invoke_handler(tauri::generate_handler![
            commands::view,
            commands::set_locked,
            commands::approve,
            commands::open_revoke_page,
            commands::run_setup_token,
            commands::cancel_setup_token,
            commands::save_settings,
            commands::paste_token,
            commands::store_token,
            commands::discard_token,
            commands::set_autostart,
            commands::revoke_grant,
            commands::doctor,
            commands::new_sandbox,
            commands::copy_recipe,
            commands::forget_recipes,
        ])
        // Closing the window destroys it (and WebKit's processes with it); the app lives in
        // the tray until Quit, see `ExitRequested` below.
        .setup(setup)
        .build(tauri::generate_context!())
        .expect("building the Keyferry app");

    app.run(|app, event| match event {
        RunEvent::ExitRequested {
            api, code: None, ..
        } => api.prevent_exit(),
        RunEvent::Exit => {
            if let Some(shared) = app.try_state::<Shared>() {
                // Dropped before exit, so X11 hands what was copied to a clipboard manager.
                shared
                    .clipboard
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                shared.backend.shutdown();
            }
        }
        _ => {}
    });
}
