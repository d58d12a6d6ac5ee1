//! Generates `allow-<command>` permissions for exactly the app's own commands, so the
//! capability in `capabilities/main.json` can grant them one by one.

const COMMANDS: &[&str] = &[
    "view",
    "set_locked",
    "approve",
    "open_revoke_page",
    "run_setup_token",
    "cancel_setup_token",
    "paste_token",
    "store_token",
    "discard_token",
    "set_autostart",
    "save_settings",
    "revoke_grant",
    "doctor",
    "new_sandbox",
    "copy_recipe",
    "forget_recipes",
];

fn main() {
    tauri_build::try_build(
        tauri_build::Attributes::new()
            .app_manifest(tauri_build::AppManifest::new().commands(COMMANDS)),
    )
    .expect("tauri-build");
}
