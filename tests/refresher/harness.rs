//! A CLI login (Claude Code's, or Codex's / Gemini CLI's with [`Login::of`]) in a temporary
//! HOME wired to a refresher over the fake endpoints, a memory journal, a source that can
//! fail its write-back on demand, and a log capture at trace level.

#![allow(dead_code)]

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use keyferry::oauth::login::{codex::CODEX, gemini::GEMINI, LoginProvider};
use keyferry::oauth::writeback::{CredentialsFile, LoginSource, WritebackError};
use keyferry::oauth::{OauthConfig, Refresher};
use keyferry::secret::Secret;
use keyferry::store::{MemoryStore, Store};

use testkit::fake_oauth::{
    FakeOauth, ACCESS_PREFIX, CODEX_REFRESH_PREFIX, CODEX_SIG_PREFIX, GEMINI_ACCESS_PREFIX,
    REFRESH_PREFIX,
};

pub const OLD_ACCESS: &str = "sk-ant-oat01-OLDaccessAAAAbbbbCCCC-0000";
pub const OLD_REFRESH: &str = "sk-ant-ort01-OLDrefreshDDDDeeeeFFFF-0000";
/// The old Codex login's JWT signature part and refresh token.
pub const CODEX_OLD_SIG: &str = "OLDcodexSIGhhhhIIII-0000";
pub const CODEX_OLD_REFRESH: &str = "rt_OLDcodexREFRESHjjjj-0000";
pub const GEMINI_OLD_ACCESS: &str = "ya29.OLDgeminiACCESSkkkk-0000";
pub const GEMINI_OLD_REFRESH: &str = "1//OLDgeminiREFRESHllll-0000";

/// The CLI whose login a [`Login`] holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cli {
    Claude,
    Codex,
    Gemini,
}

impl Cli {
    /// The login file under HOME, as the CLI keeps it.
    pub fn file(self) -> &'static str {
        match self {
            Self::Claude => ".claude/.credentials.json",
            Self::Codex => ".codex/auth.json",
            Self::Gemini => ".gemini/oauth_creds.json",
        }
    }

    /// The credential name the built-in config gives it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Claude => "claude",
            Self::Codex => "codex",
            Self::Gemini => "gemini",
        }
    }

    pub fn old_refresh(self) -> &'static str {
        match self {
            Self::Claude => OLD_REFRESH,
            Self::Codex => CODEX_OLD_REFRESH,
            Self::Gemini => GEMINI_OLD_REFRESH,
        }
    }

    /// A login expiring `mins` from now, with fields Keyferry does not know (`keepMe`).
    pub fn doc(self, mins: i64) -> String {
        let at = time::OffsetDateTime::now_utc() + time::Duration::minutes(mins);
        let text = match self {
            Self::Claude => return doc(OLD_ACCESS, OLD_REFRESH, mins),
            Self::Codex => {
                testkit::logins::codex_auth_at(
                    "acct-old",
                    CODEX_OLD_SIG,
                    CODEX_OLD_REFRESH,
                    at.unix_timestamp(),
                    &(time::OffsetDateTime::now_utc() - time::Duration::days(1))
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap(),
                )
                .0
            }
            Self::Gemini => testkit::logins::gemini_creds_at(
                GEMINI_OLD_ACCESS,
                GEMINI_OLD_REFRESH,
                at.unix_timestamp() * 1000,
            ),
        };
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["keepMe"] = serde_json::json!({"nested": true});
        if let Some(t) = v.get_mut("tokens") {
            t["keepMeToo"] = 1.into();
        }
        v.to_string()
    }

    pub fn provider(self) -> &'static dyn LoginProvider {
        match self {
            Self::Claude => &keyferry::oauth::login::claude::CLAUDE,
            Self::Codex => &CODEX,
            Self::Gemini => &GEMINI,
        }
    }

    pub fn token_url(self, fake: &FakeOauth) -> String {
        match self {
            Self::Claude => fake.token_url(),
            Self::Codex => fake.codex_token_url(),
            Self::Gemini => fake.gemini_token_url(),
        }
    }
}

/// A login document expiring `mins` from now, with fields Keyferry does not know.
pub fn doc(access: &str, refresh: &str, mins: i64) -> String {
    let ms =
        (time::OffsetDateTime::now_utc() + time::Duration::minutes(mins)).unix_timestamp() * 1000;
    format!(
        r#"{{"claudeAiOauth":{{"accessToken":"{access}","refreshToken":"{refresh}","expiresAt":{ms},"scopes":["user:inference","user:profile"],"subscriptionType":"max","rateLimitTier":"default_claude_max_20x","futureField":{{"nested":true}}}},"mcpOAuth":{{"server":"kept"}}}}"#
    )
}

/// The real file source, with injectable faults.
pub struct Faulty {
    pub file: CredentialsFile,
    pub fail_writes: AtomicBool,
    pub vanish_before_write: AtomicBool,
}

impl LoginSource for Faulty {
    fn location(&self) -> String {
        self.file.location()
    }
    fn read(&self) -> Result<Option<Secret>, WritebackError> {
        self.file.read()
    }
    fn write(&self, document: &Secret) -> Result<(), WritebackError> {
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(WritebackError::Io {
                path: self.location(),
                reason: "simulated crash before the write-back".into(),
            });
        }
        if self.vanish_before_write.load(Ordering::SeqCst) {
            let _ = std::fs::remove_file(&self.file.path);
        }
        self.file.write(document)
    }
    fn cli_lock_dir(&self) -> Option<PathBuf> {
        self.file.cli_lock_dir()
    }
}

/// How long the refresher's token calls may take, unless a test says otherwise.
const TIMEOUT: Duration = Duration::from_secs(1);

pub struct Login {
    pub cli: Cli,
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub source: Arc<Faulty>,
    pub journal: Arc<dyn Store>,
    pub refresher: Refresher,
    logs: Arc<Mutex<Vec<u8>>>,
    log_start: usize,
}

impl Login {
    pub fn new(fake: &FakeOauth, mins: i64, mode: u32) -> Self {
        Self::with_ca(fake, mins, mode, None)
    }

    pub fn with_ca(fake: &FakeOauth, mins: i64, mode: u32, ca: Option<PathBuf>) -> Self {
        Self::build_for(Cli::Claude, fake, mins, mode, ca, TIMEOUT)
    }

    /// `cli`'s login expiring in `mins`, in its file with `mode`, registered as `cli.name()`.
    pub fn of(cli: Cli, fake: &FakeOauth, mins: i64, mode: u32) -> Self {
        Self::build_for(cli, fake, mins, mode, None, TIMEOUT)
    }

    /// [`Self::of`] (mode 0600) whose token calls may take up to `timeout`.
    pub fn of_within(cli: Cli, fake: &FakeOauth, mins: i64, timeout: Duration) -> Self {
        Self::build_for(cli, fake, mins, 0o600, None, timeout)
    }

    fn build_for(
        cli: Cli,
        fake: &FakeOauth,
        mins: i64,
        mode: u32,
        ca: Option<PathBuf>,
        timeout: Duration,
    ) -> Self {
        let logs = capture_logs();
        let log_start = logs.lock().unwrap().len();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(cli.file());
        std::fs::create_dir(path.parent().unwrap()).unwrap();
        std::fs::write(&path, cli.doc(mins)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let source = Arc::new(Faulty {
            file: CredentialsFile { path: path.clone() },
            fail_writes: AtomicBool::new(false),
            vanish_before_write: AtomicBool::new(false),
        });
        let journal: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let refresher = build(cli, fake, &journal, &source, ca, timeout);
        Self {
            cli,
            dir,
            path,
            source,
            journal,
            refresher,
            logs,
            log_start,
        }
    }

    /// A second refresher over the same file and journal, as after an agent restart.
    pub fn restart(&self, fake: &FakeOauth) -> Refresher {
        build(self.cli, fake, &self.journal, &self.source, None, TIMEOUT)
    }

    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.path).unwrap()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text()).unwrap()
    }

    pub fn mode(&self) -> u32 {
        std::fs::metadata(&self.path).unwrap().mode() & 0o777
    }

    /// Replaces the login as Claude Code does (temp file + rename).
    pub fn write(&self, text: &str) {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }

    /// The real `codex exec` (0.171) run on this Codex login now sends the access token it
    /// holds to a TLS fake of its backend, and neither refreshes on its own (`fake` sees no
    /// further token call) nor rewrites the login.
    pub async fn assert_real_codex_uses_it(&self, fake: &FakeOauth) {
        let text = self.text();
        let access = keyferry::credential::Credential::parse(&Secret::new(text.clone()), "login")
            .unwrap()
            .token
            .expose()
            .to_owned();
        let calls = fake.token_calls();
        let codex_home = self.path.parent().unwrap().to_path_buf();
        let token_url = fake.codex_token_url();
        let run = tokio::task::spawn_blocking(move || {
            let api = testkit::FakeApi::start_tls();
            testkit::codex::exec_on(&codex_home, &api, &token_url)
        })
        .await
        .unwrap();
        run.assert_sent_only(&access);
        let log = &run.log;
        assert_eq!(
            fake.token_calls(),
            calls,
            "codex refreshed on its own: {log}"
        );
        assert_eq!(self.text(), text, "codex rewrote its login: {log}");
    }

    /// No token of this test's login, old or new, in anything logged at any level.
    pub fn assert_no_secret_logged(&self) {
        let logs = self.logs.lock().unwrap();
        let text = String::from_utf8_lossy(&logs[self.log_start..]);
        assert!(!text.is_empty(), "trace logging is captured");
        for secret in [
            OLD_ACCESS,
            OLD_REFRESH,
            ACCESS_PREFIX,
            REFRESH_PREFIX,
            "sk-ant-ort01",
            "sk-ant-oat01",
            CODEX_OLD_SIG,
            CODEX_OLD_REFRESH,
            CODEX_SIG_PREFIX,
            CODEX_REFRESH_PREFIX,
            GEMINI_OLD_ACCESS,
            GEMINI_OLD_REFRESH,
            GEMINI_ACCESS_PREFIX,
            "ya29.",
        ] {
            assert!(!text.contains(secret), "{secret} logged:\n{text}");
        }
    }
}

fn build(
    cli: Cli,
    fake: &FakeOauth,
    journal: &Arc<dyn Store>,
    source: &Arc<Faulty>,
    ca: Option<PathBuf>,
    timeout: Duration,
) -> Refresher {
    let token_urls = [Cli::Codex, Cli::Gemini]
        .map(|c| (c.provider().provider_id().to_owned(), c.token_url(fake)))
        .into();
    let refresher = Refresher::new(
        OauthConfig {
            token_url: fake.token_url(),
            token_urls,
            usage_url: fake.usage_url(),
            extra_ca_file: ca,
            timeout,
            ..OauthConfig::default()
        },
        Arc::clone(journal),
    )
    .unwrap();
    let source = Arc::clone(source) as Arc<dyn LoginSource>;
    match cli {
        Cli::Claude => refresher.add("claude", source),
        _ => refresher.add_login(cli.name(), cli.provider(), source, None),
    }
    refresher
}

/// Every log record of this test binary, at trace level, in one buffer.
pub fn capture_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    Arc::clone(LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buf);
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Capture(Arc::clone(&sink)))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        buf
    }))
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
