//! The window's commands: each a few lines calling the library. The capability file allows
//! exactly these (build.rs generates their `allow-*` permissions).

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};

use keyferry::domain::{Decision, Settings};
use keyferry::reroll;
use keyferry::secret::Secret;
use tauri::{AppHandle, Emitter, Manager, State};
use time::OffsetDateTime;

use crate::Shared;
use keyferry::recipe::Recipe;
use keyferry::tray::sandbox::{self, FormError, SandboxForm, SandboxMade};
use keyferry::tray::{self as tray_model, Candidate, RerollDone, WindowView};

#[tauri::command]
pub fn view(shared: State<'_, Shared>) -> WindowView {
    // Grants change with every request through the gateway: read them when the window asks.
    let grants = shared.backend.grants();
    let mut st = shared.state();
    st.grants = grants;
    st.view(OffsetDateTime::now_utc())
}

/// Revokes a gateway grant: its placeholder is refused from the next request on.
#[tauri::command]
pub fn revoke_grant(name: String, app: AppHandle, shared: State<'_, Shared>) -> Result<(), String> {
    shared.backend.revoke_grant(&name)?;
    crate::redraw(&app);
    Ok(())
}

/// The Doctor pane: every `keyferry doctor` check, off the main thread (it runs
/// `claude --version` and friends).
#[tauri::command]
pub async fn doctor() -> Result<keyferry::doctor::Report, String> {
    tauri::async_runtime::spawn_blocking(|| keyferry::doctor::check(None, None))
        .await
        .map_err(|e| e.to_string())
}

#[tauri::command]
pub fn set_locked(locked: bool, shared: State<'_, Shared>) -> Result<(), String> {
    shared.backend.set_locked(locked)
}

#[tauri::command]
pub fn approve(
    request: u64,
    decision: Decision,
    app: AppHandle,
    shared: State<'_, Shared>,
) -> Result<(), String> {
    let result = shared.backend.approve(request, decision);
    shared.state().answered(request);
    crate::redraw(&app);
    result
}

/// Step 1 of the reroll wizard: the page where the old token is revoked.
#[tauri::command]
pub fn open_revoke_page() -> Result<String, String> {
    open::that_detached(reroll::REVOKE_URL)
        .map(|()| reroll::REVOKE_URL.to_owned())
        .map_err(|e| {
            format!(
                "cannot open a browser ({e}); open {} yourself",
                reroll::REVOKE_URL
            )
        })
}

/// Step 2: runs `claude setup-token`, streaming its (masked) output to the window, and keeps
/// the token it printed for step 3.
#[tauri::command]
pub async fn run_setup_token(app: AppHandle) -> Result<Candidate, String> {
    let echo = app.clone();
    CANCEL.store(false, Ordering::SeqCst);
    let token = tauri::async_runtime::spawn_blocking(move || {
        // No terminal behind the app: the OAuth flow happens in the browser.
        reroll::run_setup_token_with(
            &reroll::claude_program(None),
            Stdio::null(),
            Some(&CANCEL),
            |line| {
                let _ = echo.emit("kf://reroll-output", line.to_owned());
            },
        )
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    keep(&app, token)
}

/// Cancels a running `claude setup-token` (the wizard's Cancel button).
#[tauri::command]
pub fn cancel_setup_token() {
    CANCEL.store(true, Ordering::SeqCst);
}

static CANCEL: AtomicBool = AtomicBool::new(false);

/// Step 2, by hand: a pasted token.
#[tauri::command]
pub fn paste_token(token: String, app: AppHandle) -> Result<Candidate, String> {
    keep(&app, Secret::from_trimmed(token))
}

fn keep(app: &AppHandle, token: Secret) -> Result<Candidate, String> {
    let candidate = tray_model::check_reroll_token(&token, OffsetDateTime::now_utc())?;
    *app.state::<Shared>()
        .pending
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(token);
    Ok(candidate)
}

/// Step 3: stores the kept token (the old one stays until this succeeds) and notifies.
#[tauri::command]
pub async fn store_token(name: String, app: AppHandle) -> Result<RerollDone, String> {
    let shared = app.state::<Shared>();
    let token = shared
        .pending
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
        .ok_or("no token to store; run `claude setup-token` or paste one first")?;
    let status = match shared.backend.store(&name, token.clone()).await {
        Ok(s) => s,
        Err(e) => {
            // Keep it for another try (the stored token is unchanged).
            *shared
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(token);
            return Err(e);
        }
    };
    let done = tray_model::reroll_done(&status, OffsetDateTime::now_utc());
    let (notifier, summary, body) = (app.clone(), done.summary.clone(), done.body.clone());
    tauri::async_runtime::spawn_blocking(move || crate::notify_or_note(&notifier, &summary, &body));
    Ok(done)
}

#[tauri::command]
pub fn discard_token(shared: State<'_, Shared>) {
    shared
        .pending
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
}

#[tauri::command]
pub fn set_autostart(enabled: bool, app: AppHandle) -> Result<bool, String> {
    crate::set_autostart(&app, enabled)
}

/// The Settings pane: applied by the agent now and saved in config.toml.
#[tauri::command]
pub fn save_settings(
    settings: Settings,
    app: AppHandle,
    shared: State<'_, Shared>,
) -> Result<(), String> {
    shared.backend.save_settings(&settings)?;
    {
        let mut st = shared.state();
        st.settings.notifications = settings.notifications;
        st.settings.notify_on_access = settings.notify_on_access;
        st.settings.expiry_thresholds = settings.expiry_thresholds;
    }
    crate::redraw(&app);
    Ok(())
}

/// The New sandbox dialog: makes the grant and every recipe for it. The window gets them
/// with the placeholder masked; the full texts stay in the app until copied.
#[tauri::command]
pub async fn new_sandbox(form: SandboxForm, app: AppHandle) -> Result<SandboxMade, FormError> {
    let api = app
        .state::<Shared>()
        .backend
        .own_api()
        .map_err(|message| FormError {
            field: "grant",
            message,
        })?;
    let (made, copyable) = tauri::async_runtime::spawn_blocking(move || {
        sandbox::make(&api, &form, &sandbox::homes_root(), |k| {
            std::env::var(k).ok()
        })
    })
    .await
    .map_err(|e| FormError {
        field: "grant",
        message: e.to_string(),
    })??;
    *app.state::<Shared>()
        .recipes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(copyable);
    crate::redraw(&app);
    Ok(made)
}

/// A recipe's Copy button: the full text onto the clipboard, from here (the page never
/// holds the placeholder).
#[tauri::command]
pub fn copy_recipe(recipe: Recipe, shared: State<'_, Shared>) -> Result<(), String> {
    let held = shared
        .recipes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let text = held
        .as_ref()
        .and_then(|c| c.text(recipe))
        .ok_or("that sandbox's recipes are gone (the dialog was closed); make the sandbox again")?;
    let unreachable = |e: arboard::Error| {
        format!(
            "cannot reach the clipboard ({e}); use `keyferry grant NAME --recipe` in a terminal"
        )
    };
    let mut clip = shared
        .clipboard
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let clip = match clip.as_mut() {
        Some(c) => c,
        None => clip.insert(arboard::Clipboard::new().map_err(unreachable)?),
    };
    clip.set_text(text.to_owned()).map_err(unreachable)
}

/// The dialog closed: the recipes' texts are dropped (zeroized).
#[tauri::command]
pub fn forget_recipes(shared: State<'_, Shared>) {
    shared
        .recipes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
}
