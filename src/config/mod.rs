//! `config.toml`: keychain backend, and each credential's lookup chain, store item and sinks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::expiry::{Levels, Thresholds};
use crate::paths;
use crate::source::Source;
use crate::store::{Backend, ItemId};

mod error;
mod gateway;
mod providers;
use error::plain_types;
pub use error::{ConfigError, Excerpt, NamedBy};
pub use gateway::GatewayConfig;
pub use providers::ProviderConfig;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct KeychainConfig {
    #[serde(default)]
    pub backend: Backend,
    /// Seconds keyferry may wait on a keychain unlock prompt; 0 = fail fast with the fix.
    #[serde(default)]
    pub prompt_timeout_secs: u64,
    /// The `security` tool for `backend = "security-cli"` and macOS `auto`
    /// (default `/usr/bin/security`).
    #[serde(default)]
    pub security_path: Option<PathBuf>,
}

impl KeychainConfig {
    /// What `store::open_with` / `LazyStore::with_options` need.
    #[must_use]
    pub fn store_options(&self) -> crate::store::OpenOptions {
        crate::store::OpenOptions {
            backend: self.backend,
            prompt_timeout_secs: self.prompt_timeout_secs,
            security_path: self.security_path.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CredentialConfig {
    /// The whole chain, replacing the default.
    pub sources: Option<Vec<Source>>,
    /// `.env` files appended to the chain (`dotenv:PATH`), after the defaults.
    #[serde(default)]
    pub env_files: Vec<String>,
    /// Keychain service `setup`/`clear` act on; default: the chain's first keychain source.
    pub store: Option<String>,
    /// Variable name for `export`/`exec`; default by kind.
    pub env_var: Option<String>,
    /// Assumed lifetime of a setup-token, counted from when it was stored.
    pub setup_token_lifetime_days: Option<u32>,
    /// Whether the agent refreshes this credential's Claude Code login (`auto`, the default
    /// when the chain has `claude-login`) or leaves it to the host CLI (`off`).
    #[serde(default)]
    pub refresh: RefreshMode,
    /// How long before expiry the agent refreshes (default 60).
    pub refresh_ahead_mins: Option<u64>,
}

/// `refresh = "auto" | "off"`.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RefreshMode {
    #[default]
    Auto,
    Off,
}

/// `[oauth]`: where the refresher and the usage figures go (corporate proxies, tests).
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OauthSection {
    pub token_url: Option<String>,
    pub usage_url: Option<String>,
    pub extra_ca_file: Option<PathBuf>,
}

/// `[agent]`: the socket server, watching and expiry warnings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Socket path; default `$XDG_RUNTIME_DIR/keyferry/agent.sock` or `/tmp/keyferry-UID/agent.sock`.
    pub socket: Option<String>,
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed (not while watching).
    pub idle_timeout_secs: u64,
    /// How often keychain items' modification stamps are polled.
    pub poll_interval_secs: u64,
    /// A full re-resolve of every credential, catching what watchers cannot see.
    pub rescan_secs: u64,
    /// Warn this long before expiry: `14d`, `3d`, `1d`, `1h`, `30m`.
    pub expiry_thresholds: Levels,
    /// Claude Code refreshes its own OAuth login; warn only when it stayed expired this long.
    pub oauth_grace_mins: u64,
    /// Desktop notifications (when a notification service is running).
    pub notifications: bool,
    /// Notify on every served token, Secretive-style.
    pub notify_on_access: bool,
    /// How long an `ask` request waits for an approver before it is denied.
    pub approval_timeout_secs: u64,
    /// A second socket to forward to remote machines (`ssh -R`), serving only `get` and
    /// `status` of `restricted_credentials` (gpg-agent's extra socket).
    pub restricted_socket: Option<String>,
    pub restricted_credentials: Vec<String>,
}

impl AgentConfig {
    /// The expiry thresholds with the OAuth grace period.
    #[must_use]
    pub fn thresholds(&self) -> Thresholds {
        Thresholds::new(&self.expiry_thresholds, self.oauth_grace_mins)
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            socket: None,
            max_connections: 512,
            idle_timeout_secs: 30,
            poll_interval_secs: 2,
            rescan_secs: 30,
            expiry_thresholds: Levels::default(),
            oauth_grace_mins: 10,
            notifications: true,
            notify_on_access: false,
            approval_timeout_secs: 60,
            restricted_socket: None,
            restricted_credentials: Vec::new(),
        }
    }
}

/// `[policy.NAME]`: who may read a credential through the agent.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    #[serde(default)]
    pub mode: PolicyMode,
    /// Executables (absolute paths) that may read it; empty = any process of yours.
    #[serde(default)]
    pub allow_exe: Vec<String>,
    /// What a peer inside a sandbox may get of this credential; default: `[policy]`'s.
    #[serde(default)]
    pub sandboxed_peers: Option<SandboxRule>,
}

/// `sandboxed_peers`: `"refuse"` (the default), `"allow"`, or a list of sandbox kinds
/// (`bubblewrap`, `flatpak`, `toolbox`, `docker`, `podman`, `seatbelt`, `unknown`) and
/// absolute executable paths that are allowed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "RawSandboxRule")]
pub enum SandboxRule {
    #[default]
    Refuse,
    Allow,
    Only(Vec<SandboxAllow>),
}

/// One entry of a `sandboxed_peers` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxAllow {
    Kind(crate::domain::SandboxKind),
    /// An executable path as the kernel reports it (`~` expanded).
    Exe(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawSandboxRule {
    Word(String),
    List(Vec<String>),
}

impl TryFrom<RawSandboxRule> for SandboxRule {
    type Error = String;

    fn try_from(raw: RawSandboxRule) -> Result<Self, String> {
        let kinds = || {
            crate::domain::SandboxKind::ALL
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match raw {
            RawSandboxRule::Word(w) if w == "refuse" => Ok(Self::Refuse),
            RawSandboxRule::Word(w) if w == "allow" => Ok(Self::Allow),
            RawSandboxRule::Word(w) => Err(format!(
                "sandboxed_peers = {w:?}: expected \"refuse\", \"allow\", or a list of sandbox kinds ({}) and absolute executable paths",
                kinds()
            )),
            RawSandboxRule::List(items) => items
                .into_iter()
                .map(|item| {
                    if let Some(kind) = crate::domain::SandboxKind::parse(&item) {
                        Ok(SandboxAllow::Kind(kind))
                    } else if item.starts_with('/') || item.starts_with("~/") {
                        Ok(SandboxAllow::Exe(paths::expand(&item).display().to_string()))
                    } else {
                        Err(format!(
                            "sandboxed_peers: {item:?} is neither a sandbox kind ({}) nor an absolute executable path",
                            kinds()
                        ))
                    }
                })
                .collect::<Result<_, _>>()
                .map(Self::Only),
        }
    }
}

/// `[policy]`: `approvers` and one `[policy.NAME]` table per credential.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct PolicyTable {
    /// Executables that may answer approvals on a headless agent's socket; default: the
    /// `keyferry-tray` next to this `keyferry`.
    #[serde(default)]
    approvers: Option<Vec<String>>,
    /// What a peer inside a sandbox may do: the default for every credential and the rule
    /// for requests that name none (store, settings, approvals, lock).
    #[serde(default)]
    pub sandboxed_peers: SandboxRule,
    #[serde(flatten)]
    pub credentials: BTreeMap<String, PolicyConfig>,
}

impl PolicyTable {
    /// The approver executables, `~` expanded and canonicalized (the kernel reports the
    /// peer's resolved executable path).
    #[must_use]
    pub fn approvers(&self) -> Vec<String> {
        let listed: Vec<PathBuf> = match &self.approvers {
            Some(list) => list.iter().map(|p| paths::expand(p)).collect(),
            None => std::env::current_exe()
                .ok()
                .and_then(|me| Some(me.parent()?.join("keyferry-tray")))
                .into_iter()
                .collect(),
        };
        listed
            .into_iter()
            .flat_map(|p| {
                let canonical = std::fs::canonicalize(&p).ok();
                std::iter::once(p).chain(canonical)
            })
            .map(|p| p.display().to_string())
            .collect()
    }
}

fn sink_targets<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<crate::sink::Target>, D::Error> {
    let targets = Vec::<crate::sink::SinkConfig>::deserialize(d)?
        .iter()
        .map(|s| s.target().map_err(serde::de::Error::custom))
        .collect::<Result<Vec<_>, _>>()?;
    crate::sink::check_one_writer(&targets).map_err(serde::de::Error::custom)?;
    Ok(targets)
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    /// Serve (listed executables only, when `allow_exe` is set).
    #[default]
    Allow,
    /// Ask an approver (the tray) about executables not in `allow_exe`.
    Ask,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub keychain: KeychainConfig,
    #[serde(default)]
    pub agent: AgentConfig,
    #[serde(default)]
    pub policy: PolicyTable,
    /// `[[sink]]`: files the agent keeps current, checked and typed when the file is read.
    #[serde(default, rename = "sink", deserialize_with = "sink_targets")]
    pub sinks: Vec<crate::sink::Target>,
    #[serde(default)]
    pub credentials: BTreeMap<String, CredentialConfig>,
    /// `[oauth]`: the refresher's endpoints.
    #[serde(default)]
    pub oauth: OauthSection,
    /// `[gateway]`: where sandboxes reach the API through the agent.
    #[serde(default)]
    pub gateway: GatewayConfig,
    /// `[providers.ID]`: each API provider's upstream.
    #[serde(default, deserialize_with = "providers::tables")]
    pub providers: BTreeMap<String, ProviderConfig>,
    #[serde(skip)]
    pub path: PathBuf,
}

/// A credential as configured, with defaults applied.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub chain: Vec<Source>,
    pub store: Option<ItemId>,
    pub env_var: Option<String>,
    pub setup_token_lifetime: time::Duration,
}

fn s(v: &str) -> Source {
    v.parse().expect("built-in source is valid")
}

/// The built-in chains: cfauth's order for `claude`, the CLIs' own files for the others.
fn default_chain(name: &str) -> Option<Vec<Source>> {
    Some(match name {
        "claude" => vec![
            s("env:CF_CLAUDE_API_KEY"),
            s("keychain:cf-claude-token"),
            s("file:~/.config/cf/claude-token"),
            Source::ClaudeLogin,
        ],
        // Where Codex reads its login: auth.json, its keyring item, or both (`auto`).
        "codex" => crate::oauth::login::codex_store::default_chain(&|k| std::env::var(k).ok()),
        "gemini" => vec![s("file:~/.gemini/oauth_creds.json")],
        _ => return None,
    })
}

const BUILTIN: [&str; 3] = ["claude", "codex", "gemini"];

impl Config {
    /// Parses config text (the file's contents) into typed values.
    ///
    /// # Errors
    /// Invalid TOML or values, naming `path` and the line.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut cfg: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: paths::display(path),
            message: plain_types(e.message()),
            at: e.span().map(|r| Excerpt::of(text, r.start)),
        })?;
        cfg.path = path.to_path_buf();
        Ok(cfg)
    }

    /// Loads `KEYFERRY_CONFIG` (which must exist), else the default file, whose absence
    /// means all defaults.
    ///
    /// # Errors
    /// Unreadable or invalid TOML, naming the file and the problem; a missing
    /// `KEYFERRY_CONFIG` file.
    pub fn load() -> Result<Self, ConfigError> {
        match paths::config_override() {
            Some(p) => Self::load_named(&p, NamedBy::Env),
            None => Self::load_from(&paths::config_file()),
        }
    }

    /// Loads `path`; a missing file means all defaults.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn load_from(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&read_text(path)?, path)
    }

    /// Loads a file the user named (`--config`, `KEYFERRY_CONFIG`): it must exist.
    ///
    /// # Errors
    /// [`ConfigError::Missing`], or as [`Config::load`].
    pub fn load_named(path: &Path, named_by: NamedBy) -> Result<Self, ConfigError> {
        // `metadata` follows links: a dangling symlink is as missing as no file at all.
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ConfigError::Missing {
                path: paths::display(path),
                named_by,
            }),
            _ => Self::load_from(path),
        }
    }

    /// Every credential name, built-in and configured.
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = BUILTIN.iter().map(|s| (*s).to_owned()).collect();
        for n in self.credentials.keys() {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        names
    }

    /// The named credential with defaults applied.
    ///
    /// # Errors
    /// The name is neither built in nor configured.
    pub fn spec(&self, name: &str) -> Result<Spec, ConfigError> {
        let user = self.credentials.get(name);
        let base = user
            .and_then(|c| c.sources.clone())
            .or_else(|| default_chain(name))
            .or_else(|| user.map(|_| Vec::new()))
            .ok_or_else(|| {
                let names = self.names();
                ConfigError::Unknown {
                    name: name.to_owned(),
                    known: names.join(", "),
                    path: paths::display(&self.path),
                    suggestion: crate::suggest::did_you_mean(
                        name,
                        names.iter().map(String::as_str),
                    ),
                }
            })?;
        let mut chain = base;
        if let Some(c) = user {
            chain.extend(c.env_files.iter().map(|p| Source::Dotenv {
                path: p.clone(),
                key: crate::source::DEFAULT_DOTENV_KEY.to_owned(),
            }));
        }
        let store_service = user.and_then(|c| c.store.clone()).or_else(|| {
            chain.iter().find_map(|s| match s {
                Source::Keychain { service, .. } => Some(service.clone()),
                _ => None,
            })
        });
        let account = chain
            .iter()
            .find_map(|s| match s {
                Source::Keychain {
                    service,
                    account: Some(a),
                } if Some(service) == store_service.as_ref() => Some(a.clone()),
                _ => None,
            })
            .unwrap_or_else(paths::user);
        Ok(Spec {
            name: name.to_owned(),
            chain,
            store: store_service.map(|svc| ItemId::new(svc, account)),
            env_var: user.and_then(|c| c.env_var.clone()),
            setup_token_lifetime: time::Duration::days(i64::from(
                user.and_then(|c| c.setup_token_lifetime_days)
                    .unwrap_or(365),
            )),
        })
    }
}

/// A config file this large is not a config file.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The config file's text; a missing file is empty (all defaults). The file may be a
/// symlink (dotfiles repos), but must resolve to a regular file of bounded size.
fn read_text(path: &Path) -> Result<String, ConfigError> {
    let read_err = |reason: String| ConfigError::Read {
        path: paths::display(path),
        reason,
    };
    let target = match std::fs::canonicalize(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(read_err(e.to_string())),
    };
    // `--config /dev/null`: all defaults, the usual idiom.
    if target == Path::new("/dev/null") {
        return Ok(String::new());
    }
    match std::fs::metadata(&target) {
        Ok(m) if !m.is_file() => return Err(read_err("not a regular file".into())),
        Ok(m) if m.len() > MAX_CONFIG_BYTES => {
            return Err(read_err(format!(
                "{} bytes, over the {MAX_CONFIG_BYTES}-byte limit",
                m.len()
            )))
        }
        Ok(_) => {}
        Err(e) => return Err(read_err(e.to_string())),
    }
    crate::safe_file::read_to_string(&target, MAX_CONFIG_BYTES)
        .map(Option::unwrap_or_default)
        .map_err(|e| read_err(e.to_string()))
}

/// Saves run-time settings under `[agent]` in the config file, keeping every other line,
/// comment and key as it was (written atomically; the file's mode is kept, 0600 when new).
///
/// # Errors
/// A bad threshold, or the file cannot be parsed or written.
pub fn save_agent_settings(path: &Path, s: &crate::domain::Settings) -> Result<(), ConfigError> {
    let shown = paths::display(path);
    Levels::parse(&s.expiry_thresholds).map_err(|message| ConfigError::Parse {
        path: shown.clone(),
        message,
        at: None,
    })?;
    // A symlinked config (dotfiles repos) stays a symlink: write the file it points to.
    let path = &std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let text = read_text(path)?;
    let mut doc: toml_edit::DocumentMut =
        text.parse()
            .map_err(|e: toml_edit::TomlError| ConfigError::Parse {
                path: shown.clone(),
                message: e.message().to_owned(),
                at: e.span().map(|r| Excerpt::of(&text, r.start)),
            })?;
    if !doc.contains_key("agent") {
        doc["agent"] = toml_edit::table();
    }
    let agent = &mut doc["agent"];
    agent["notifications"] = toml_edit::value(s.notifications);
    agent["notify_on_access"] = toml_edit::value(s.notify_on_access);
    let mut list = toml_edit::Array::new();
    for t in &s.expiry_thresholds {
        list.push(t.as_str());
    }
    agent["expiry_thresholds"] = toml_edit::value(list);
    if let Some(dir) = path.parent() {
        crate::atomic::private_dir(dir).map_err(|e| ConfigError::Read {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
    }
    crate::atomic::write(path, doc.to_string().as_bytes(), 0o600).map_err(|e| ConfigError::Read {
        path: shown,
        reason: e.to_string(),
    })
}

impl Spec {
    /// The keychain item `setup`/`clear` act on.
    ///
    /// # Errors
    /// The chain has no keychain source and no `store` is configured.
    pub fn store_item(&self, cfg: &Config) -> Result<&ItemId, ConfigError> {
        self.store.as_ref().ok_or_else(|| ConfigError::NoStore {
            name: self.name.clone(),
            path: paths::display(&cfg.path),
        })
    }
}

#[cfg(test)]
mod tests;
