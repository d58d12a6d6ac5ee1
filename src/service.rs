//! Running the agent at login: a systemd user unit (Linux) or a launchd LaunchAgent (macOS).

use std::path::{Path, PathBuf};

use crate::paths;

pub const UNIT_NAME: &str = "keyferry-agent.service";
pub const LAUNCHD_LABEL: &str = "dev.keyferry.agent";

/// Where the service file goes on this OS.
#[must_use]
pub fn unit_path() -> PathBuf {
    if cfg!(target_os = "macos") {
        paths::home()
            .join("Library/LaunchAgents")
            .join(format!("{LAUNCHD_LABEL}.plist"))
    } else {
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .unwrap_or_else(|| paths::home().join(".config"));
        base.join("systemd/user").join(UNIT_NAME)
    }
}

/// The unit text for `exe`; nothing secret goes in it (the agent reads the keychain itself).
#[must_use]
pub fn unit_text(exe: &Path) -> String {
    let exe = exe.display();
    if cfg!(target_os = "macos") {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>Label</key><string>{LAUNCHD_LABEL}</string>
  <key>ProgramArguments</key><array><string>{exe}</string><string>agent</string></array>
  <key>RunAtLoad</key><true/>
  <key>KeepAlive</key><dict><key>SuccessfulExit</key><false/></dict>
  <key>ProcessType</key><string>Background</string>
  <key>SoftResourceLimits</key><dict><key>NumberOfFiles</key><integer>8192</integer></dict>
</dict>
</plist>
"#
        )
    } else {
        format!(
            "[Unit]\nDescription=Keyferry agent: serves AI CLI tokens to sandboxes\n\n\
             [Service]\nExecStart={exe} agent\nRestart=on-failure\n\
             LimitNOFILE=65536\n\n\
             [Install]\nWantedBy=default.target\n"
        )
    }
}

/// The command that starts it now, to print after installing.
#[must_use]
pub fn enable_hint() -> String {
    if cfg!(target_os = "macos") {
        format!("launchctl bootstrap gui/$(id -u) {}", unit_path().display())
    } else {
        format!("systemctl --user daemon-reload && systemctl --user enable --now {UNIT_NAME}")
    }
}

/// Writes the unit (0644: it holds no secret; launchd refuses group-writable plists).
///
/// # Errors
/// The file cannot be written.
pub fn install(exe: &Path) -> Result<PathBuf, crate::atomic::WriteError> {
    let path = unit_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| crate::atomic::WriteError {
            path: paths::display(dir),
            source,
        })?;
    }
    crate::atomic::write(&path, unit_text(exe).as_bytes(), 0o644)?;
    Ok(path)
}

/// Removes the unit; false when it was not installed.
///
/// # Errors
/// The file exists but cannot be removed.
pub fn uninstall() -> Result<bool, crate::atomic::WriteError> {
    let path = unit_path();
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(crate::atomic::WriteError {
            path: paths::display(&path),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_runs_the_agent() {
        let text = unit_text(Path::new("/usr/local/bin/keyferry"));
        assert!(text.contains("/usr/local/bin/keyferry"));
        assert!(text.contains("agent"));
    }
}
