//! Which binaries the end-to-end tests run: the app under test, the `keyferry` CLI (built
//! once per run with the same Cargo, target directory and profile), and where output goes.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use testkit::run_bounded;

/// The workspace root (the directory holding the workspace `Cargo.toml`).
#[must_use]
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("src-tauri has a parent")
        .to_path_buf()
}

/// `<workspace>/test-output`, created.
#[must_use]
pub fn output_dir() -> PathBuf {
    let dir = workspace().join("test-output");
    std::fs::create_dir_all(&dir).expect("create test-output/");
    dir
}

/// The app binary under test: `KF_E2E_TRAY` if set (e.g. a release build, for measuring),
/// else the one Cargo built for this test.
#[must_use]
pub fn tray_binary() -> PathBuf {
    let path = std::env::var_os("KF_E2E_TRAY").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_keyferry-tray")),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "the keyferry-tray binary {} does not exist",
        path.display()
    );
    path
}

/// The `keyferry` CLI: `KF_E2E_CLI` if set, else built (once per test run) with the same
/// Cargo, target directory and profile as the app under test:
/// `cargo build -p keyferry --bin keyferry`. Building only that package never relinks the
/// app binary the tests run.
#[must_use]
pub fn cli_binary() -> PathBuf {
    static CLI: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    CLI.get_or_init(build_cli)
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn build_cli() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("KF_E2E_CLI") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("KF_E2E_CLI={} does not exist", p.display()))
        };
    }
    // target/<profile>/keyferry-tray, or target/<triple>/<profile>/keyferry-tray.
    let tray = PathBuf::from(env!("CARGO_BIN_EXE_keyferry-tray"));
    let profile_dir = tray.parent().ok_or("the app binary has no directory")?;
    let profile = profile_dir
        .file_name()
        .and_then(OsStr::to_str)
        .ok_or("the app binary's directory has no name")?;
    let mut target_dir = profile_dir.parent().ok_or("no target directory")?;
    let mut triple = None;
    if !target_dir.join("CACHEDIR.TAG").exists()
        && target_dir
            .parent()
            .is_some_and(|p| p.join("CACHEDIR.TAG").exists())
    {
        triple = target_dir.file_name().and_then(OsStr::to_str);
        target_dir = target_dir.parent().ok_or("no target directory")?;
    }
    let cargo = std::env::var_os("CARGO").map_or_else(
        || PathBuf::from(option_env!("CARGO").unwrap_or("cargo")),
        PathBuf::from,
    );
    let mut cmd = Command::new(&cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(workspace().join("Cargo.toml"))
        .args(["-p", "keyferry", "--bin", "keyferry"])
        .env("CARGO_TARGET_DIR", target_dir);
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    if let Some(t) = triple {
        cmd.args(["--target", t]);
    }
    let shown = format!("{cmd:?}");
    let out = run_bounded(&mut cmd, None, Duration::from_secs(30 * 60))
        .map_err(|e| format!("building the keyferry CLI ({shown}): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building the keyferry CLI failed ({shown}):\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let cli = profile_dir.join("keyferry");
    if cli.is_file() {
        Ok(cli)
    } else {
        Err(format!(
            "{shown} succeeded but {} does not exist",
            cli.display()
        ))
    }
}
