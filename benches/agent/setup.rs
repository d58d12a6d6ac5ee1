//! The bench's environment: private directories, a clean environment for every child, the
//! Secret Service (testkit's fixture) and the agents under test.

use super::*;

pub struct Dirs {
    pub root: PathBuf,
}

impl Dirs {
    pub fn private(&self, rel: &str) -> PathBuf {
        let p = self.root.join(rel);
        fs::create_dir_all(&p).expect("create a bench directory");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o700)).expect("chmod 700");
        p
    }
}

/// The environment of every child: nothing inherited but PATH and a locale.
pub fn isolated_env(cmd: &mut Command, home: &Path, bus: Option<&str>) {
    cmd.env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .env("LANG", "C.UTF-8")
        .env("USER", SS_USER)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("XDG_STATE_HOME", home.join(".local/state"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env("XDG_RUNTIME_DIR", home.join("run"));
    if let Some(addr) = bus {
        cmd.env("DBUS_SESSION_BUS_ADDRESS", addr);
    }
}

pub fn make_home(dirs: &Dirs, name: &str) -> PathBuf {
    let home = dirs.private(name);
    for sub in [
        ".config/keyferry",
        ".local/share",
        ".local/state",
        ".cache",
        "run",
    ] {
        dirs.private(&format!("{name}/{sub}"));
    }
    home
}

pub fn find_binary() -> Option<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let candidates = [
        std::env::var_os("KF_BENCH_BIN").map(PathBuf::from),
        Some(manifest.join("target/release/keyferry")),
        option_env!("CARGO_BIN_EXE_keyferry").map(PathBuf::from),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

pub struct SecretService {
    pub address: String,
    /// Kept for its `Drop`: the keyring daemon and its bus stop with it.
    _fixture: SecretServiceFixture,
}

/// A private bus and gnome-keyring (testkit's fixture, every daemon in the bench's clean
/// environment) holding `token` under `SS_SERVICE`/`SS_USER`.
pub fn start_secret_service(dirs: &Dirs, token: &str) -> SecretService {
    let dir = dirs.private("ss");
    let home = make_home(dirs, "ss/home");
    let env_home = home.clone();
    let launcher: Launcher = Arc::new(move |program| {
        let mut cmd = Command::new(program);
        isolated_env(&mut cmd, &env_home, None);
        cmd
    });
    let fixture = SecretServiceFixture::start_on(
        PrivateBus::start_in(&dir, launcher),
        &home,
        KEYRING_PASSWORD,
    );
    let out = fixture.secret_tool(
        &[
            "store",
            "--label=keyferry bench",
            "service",
            SS_SERVICE,
            "username",
            SS_USER,
        ],
        Some(token),
    );
    assert!(
        out.status.success(),
        "secret-tool store failed: {}\ngnome-keyring log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        fixture.keyring_log()
    );
    SecretService {
        address: fixture.address().to_owned(),
        _fixture: fixture,
    }
}

pub struct AgentSetup {
    pub proc: Proc,
    pub home: PathBuf,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub bus: Option<String>,
    pub source: String,
}

pub fn start_agent(
    bin: &Path,
    dirs: &Dirs,
    name: &str,
    config_text: &str,
    bus: Option<&str>,
) -> AgentSetup {
    let home = make_home(dirs, name);
    let config = home.join(".config/keyferry/config.toml");
    fs::write(&config, config_text).expect("write the agent config");
    let socket = dirs.private(&format!("{name}/sock")).join("agent.sock");
    let mut cmd = Command::new(bin);
    isolated_env(&mut cmd, &home, bus);
    if let Ok(n) = std::env::var("KF_BENCH_TOKIO_WORKERS") {
        cmd.env("TOKIO_WORKER_THREADS", n);
    }
    cmd.arg("--config")
        .arg(&config)
        .arg("--socket")
        .arg(&socket)
        .arg("agent");
    let mut proc = Proc::spawn(
        &format!("keyferry agent ({name})"),
        cmd,
        home.join("agent.log"),
        None,
    );
    let first = wait_for_agent(&mut proc, &socket);
    AgentSetup {
        proc,
        home,
        config,
        socket,
        bus: bus.map(str::to_owned),
        source: first["source"].as_str().unwrap_or_default().to_owned(),
    }
}
