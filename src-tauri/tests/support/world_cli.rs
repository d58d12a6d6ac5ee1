//! The `keyferry` CLI and the app, run inside a test's [`World`]: config and stand-in
//! programs written into it, bounded CLI calls, background clients, the app's pid.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::sync::atomic::Ordering;

use testkit::{isolate, run_bounded, wait_for, Proc};

use super::{agent_answers, cli_binary, tray_binary, Client, World, CLI_TIMEOUT, START_TIMEOUT};

impl World {
    /// Writes `~/.config/keyferry/config.toml`.
    pub fn write_config(&self, toml: &str) {
        let dir = self.home.join(".config/keyferry");
        std::fs::create_dir_all(&dir).expect("create the config directory");
        std::fs::write(dir.join("config.toml"), toml).expect("write config.toml");
    }

    /// Writes an executable script `name` into the directory prepended to `PATH`.
    pub fn write_bin(&self, name: &str, script: &str) -> PathBuf {
        let path = self.bin.join(name);
        std::fs::write(&path, script).expect("write a stand-in program");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("chmod a stand-in program");
        path
    }

    /// Runs the `keyferry` CLI to completion (bounded), `stdin` fed then closed.
    ///
    /// # Panics
    /// It does not finish within [`CLI_TIMEOUT`].
    #[must_use]
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = self.command(cli_binary());
        cmd.args(args);
        isolate(&mut cmd);
        run_bounded(&mut cmd, stdin.map(str::as_bytes), CLI_TIMEOUT)
            .unwrap_or_else(|e| panic!("keyferry {}: {e}", args.join(" ")))
    }

    /// Stores `token` for credential `name` in the keychain, as a user would:
    /// `keyferry setup NAME` with the token on stdin (no agent runs yet).
    ///
    /// # Panics
    /// The CLI fails.
    pub fn setup_token(&self, name: &str, token: &str) {
        let out = self.cli(&["--no-agent", "setup", name], Some(token));
        assert!(
            out.status.success(),
            "keyferry setup {name} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Writes Claude Code's own login (`~/.claude/.credentials.json`, 0600) expiring in
    /// `expires_in` seconds, with the scopes that give usage figures and a Max plan.
    pub fn write_claude_login(&self, access: &str, refresh: &str, expires_in: i64) {
        let expires = (time::OffsetDateTime::now_utc().unix_timestamp() + expires_in) * 1000;
        let dir = self.home.join(".claude");
        std::fs::create_dir_all(&dir).expect("create ~/.claude");
        let login = dir.join(".credentials.json");
        std::fs::write(
            &login,
            format!(
                r#"{{"claudeAiOauth":{{"accessToken":"{access}","refreshToken":"{refresh}","expiresAt":{expires},"scopes":["user:inference","user:profile"],"subscriptionType":"max"}}}}"#
            ),
        )
        .expect("write Claude Code's login");
        std::fs::set_permissions(&login, std::fs::Permissions::from_mode(0o600))
            .expect("chmod Claude Code's login");
    }

    /// Starts a headless `keyferry agent` in this world and waits until it answers.
    ///
    /// # Panics
    /// It does not answer within [`START_TIMEOUT`].
    #[must_use]
    pub fn start_headless_agent(&self) -> Proc {
        let mut cmd = self.command(cli_binary());
        cmd.arg("agent");
        let agent = self.spawn("keyferry agent", cmd, "agent.log");
        wait_for("the headless agent to answer", START_TIMEOUT, || {
            agent_answers(&self.socket())
        })
        .unwrap_or_else(|e| panic!("{e}"));
        agent
    }

    /// Starts `keyferry ARGS…` in the background (e.g. a `get` waiting on an approval).
    #[must_use]
    pub fn cli_spawn(&self, args: &[&str]) -> Client {
        let n = self.spawned.fetch_add(1, Ordering::Relaxed);
        self.spawn_client(args, n)
    }

    fn spawn_client(&self, args: &[&str], n: u64) -> Client {
        let stdout = self.dir.join(format!("client-{n}.out"));
        let stderr = self.dir.join(format!("client-{n}.err"));
        let mut cmd = self.command(cli_binary());
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("create a client stdout file"))
            .stderr(File::create(&stderr).expect("create a client stderr file"));
        isolate(&mut cmd);
        let child = cmd.spawn().expect("start the keyferry CLI");
        Client {
            proc: Proc::adopt(&format!("keyferry {}", args.join(" ")), child, stderr),
            stdout,
        }
    }

    /// Starts the app directly (no WebDriver), output to `app.log`.
    #[must_use]
    pub fn start_app(&self, args: &[&str]) -> Proc {
        let mut cmd = self.command(tray_binary());
        cmd.args(args);
        self.spawn("keyferry-tray", cmd, "app.log")
    }

    /// Pid of this test's running app (however it was started).
    #[must_use]
    pub fn app_pid(&self) -> Option<u32> {
        let tray = tray_binary();
        let name = tray
            .file_name()
            .and_then(OsStr::to_str)
            .unwrap_or("keyferry-tray");
        self.leftovers()
            .into_iter()
            .find(|(pid, _)| {
                std::fs::read_link(format!("/proc/{pid}/exe"))
                    .is_ok_and(|exe| exe.file_name().and_then(OsStr::to_str) == Some(name))
            })
            .map(|(pid, _)| pid)
    }
}
