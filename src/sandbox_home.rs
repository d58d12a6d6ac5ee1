//! A grant's files in the home folder a sandbox's CLI reads (Codex's `CODEX_HOME`): only
//! what the provider lists, never a secret (the placeholder goes in a variable), each
//! written atomically (0600) beneath a folder reached without following any link, since
//! that folder is typically mounted into the sandbox, which may have rewritten it.
//!
//! A folder that is a real login's home (it holds the CLI's login file) is refused, and so
//! is a file of the same name that `keyferry grant` did not write: `--codex-home ~/.codex`
//! must not turn the host's own Codex over to the gateway.

use std::path::{Path, PathBuf};

use crate::atomic;
use crate::paths;
use zeroize::Zeroizing;

use crate::protocol::GrantIssued;
use crate::provider::{GatewayProvider, SandboxValue};
use crate::safe_file::{self, Access, FileError};
use crate::sink_path::SinkPath;

pub use crate::provider::SANDBOX_MARK as MARK;

#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error("a grant of {provider} writes no files; leave out the home folder")]
    NoFiles { provider: &'static str },
    #[error("{dir} holds a login ({file}): it is a real {provider} home, and the grant's config would take it over; give the sandbox a folder of its own")]
    LiveLogin {
        dir: String,
        file: &'static str,
        provider: &'static str,
    },
    #[error("{path} exists and `keyferry grant` did not write it; move it away or give the sandbox a folder of its own")]
    Foreign { path: String },
    #[error(transparent)]
    File(#[from] FileError),
}

/// Whether `provider`'s files may be written into `dir`: it writes some, `dir` is not a
/// real login's home, and every file of that name is one a grant wrote. Called before the
/// grant is made, so a refusal leaves a live grant of that name alone; [`write`] checks
/// again.
///
/// # Errors
/// As [`write`], short of the write itself.
pub fn check(dir: &Path, provider: &dyn GatewayProvider) -> Result<(), HomeError> {
    let files = provider.sandbox_files("http://127.0.0.1");
    if files.is_empty() {
        return Err(HomeError::NoFiles {
            provider: provider.name(),
        });
    }
    if let Some(login) = provider.sandbox_home_login() {
        let at = SinkPath::resolve(&dir.join(login), true)?;
        if std::fs::symlink_metadata(at.path()).is_ok() {
            return Err(HomeError::LiveLogin {
                dir: paths::display(dir),
                file: login,
                provider: provider.name(),
            });
        }
    }
    for (name, _) in files {
        let shown = dir.join(name);
        // The held folder must outlive `at`: the path goes through its descriptor.
        let sink = SinkPath::resolve(&shown, true)?;
        let at = sink.path();
        if let Some(mut f) = safe_file::open(&at, Access::Read, safe_file::MAX_FILE_BYTES)
            .map_err(|e| e.shown_as(&paths::display(&shown)))?
        {
            let old = safe_file::read_all(&mut f, &shown, safe_file::MAX_FILE_BYTES)?;
            if !old.starts_with(MARK.as_bytes()) {
                return Err(HomeError::Foreign {
                    path: paths::display(&shown),
                });
            }
        }
    }
    Ok(())
}

/// Writes `provider`'s files for a sandbox reaching the gateway at `base_url` into `dir`
/// (made 0700 if missing), after [`check`]; returns the paths written. Each is replaced
/// atomically (0600) beneath its folder, reached without following a link.
///
/// # Errors
/// A folder on the way is a link or not the user's, the folder is a live home, a file is
/// someone else's, or an I/O failure.
pub fn write(
    dir: &Path,
    provider: &dyn GatewayProvider,
    base_url: &str,
) -> Result<Vec<PathBuf>, HomeError> {
    check(dir, provider)?;
    let mut written = Vec::new();
    for (name, text) in provider.sandbox_files(base_url) {
        let shown = dir.join(name);
        let sink = SinkPath::resolve(&shown, true)?;
        let at = sink.path();
        atomic::write(&at, text.as_bytes(), 0o600).map_err(FileError::from)?;
        written.push(shown);
    }
    Ok(written)
}

/// What a sandbox is given for `issued`, in the order printed: the provider's variables
/// (the placeholder filled in), the home folder's variable when files were written there,
/// and the host variables the provider passes on (read through `host`, when set).
#[must_use]
pub fn variables(
    issued: &GrantIssued,
    home: Option<&Path>,
    host: impl Fn(&str) -> Option<String>,
) -> Vec<(&'static str, Zeroizing<String>)> {
    let provider = provider_of(issued);
    let mut out: Vec<(&'static str, Zeroizing<String>)> = provider
        .sandbox_env(&issued.base_url)
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                SandboxValue::Text(t) => t,
                SandboxValue::Placeholder => issued.placeholder.0.expose().to_owned(),
            };
            (k, Zeroizing::new(v))
        })
        .collect();
    if let (Some(var), Some(dir)) = (provider.sandbox_home_var(), home) {
        out.push((var, Zeroizing::new(dir.display().to_string())));
    }
    for var in provider.sandbox_passthrough() {
        if let Some(v) = host(var).filter(|v| !v.is_empty()) {
            out.push((var, Zeroizing::new(v)));
        }
    }
    out
}

/// The provider a grant's reply names (Anthropic's for an unknown name: an older agent).
#[must_use]
pub fn provider_of(issued: &GrantIssued) -> &'static dyn GatewayProvider {
    crate::provider::by_id(&issued.provider).unwrap_or_else(crate::provider::default_provider)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{anthropic::ANTHROPIC, openai::OPENAI};
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn writes_ours_and_rewrites_ours_only() {
        let t = tempfile::tempdir().unwrap();
        let home = t.path().join("codex-home");
        let out = write(&home, &OPENAI, "http://127.0.0.1:1").unwrap();
        assert_eq!(out, vec![home.join("config.toml")]);
        let meta = std::fs::metadata(&out[0]).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&out[0]).unwrap();
        assert!(text.starts_with(MARK), "{text}");
        assert!(!text.contains("kfg_"), "{text}");
        // Again (a renewed grant): ours, so replaced.
        write(&home, &OPENAI, "http://127.0.0.1:2").unwrap();
        assert!(std::fs::read_to_string(&out[0]).unwrap().contains(":2/"));
        // The user's own config is never replaced.
        std::fs::write(&out[0], "model = \"o3\"\n").unwrap();
        let e = write(&home, &OPENAI, "http://127.0.0.1:3").unwrap_err();
        assert!(matches!(e, HomeError::Foreign { .. }), "{e}");
        assert_eq!(
            std::fs::read_to_string(&out[0]).unwrap(),
            "model = \"o3\"\n"
        );
        assert!(matches!(
            write(&home, &ANTHROPIC, "x").unwrap_err(),
            HomeError::NoFiles { .. }
        ));
    }

    fn issued(provider: &str) -> GrantIssued {
        serde_json::from_value(serde_json::json!({
            "grant": {"name":"box","credential":"c","created":"t","expires":"t","requests":0,
                "input_tokens":0,"output_tokens":0,"cache_creation_input_tokens":0,
                "cache_read_input_tokens":0},
            "base_url": "http://127.0.0.1:7778",
            "placeholder": "kfg_00",
            "provider": provider,
        }))
        .unwrap()
    }

    #[test]
    fn each_provider_gets_its_own_variables() {
        let none = |_: &str| None;
        let names = |v: Vec<(&'static str, Zeroizing<String>)>| {
            v.into_iter()
                .map(|(k, v)| format!("{k}={}", v.as_str()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(variables(&issued("anthropic"), None, none)),
            [
                "ANTHROPIC_BASE_URL=http://127.0.0.1:7778",
                "ANTHROPIC_AUTH_TOKEN=kfg_00"
            ]
        );
        assert_eq!(
            names(variables(
                &issued("openai"),
                Some(Path::new("/b/codex")),
                none
            )),
            ["KEYFERRY_CODEX_TOKEN=kfg_00", "CODEX_HOME=/b/codex"]
        );
        let project = |k: &str| (k == "GOOGLE_CLOUD_PROJECT").then(|| "p-1".to_owned());
        assert_eq!(
            names(variables(&issued("google"), None, project)),
            [
                "GOOGLE_GENAI_USE_GCA=true",
                "GOOGLE_CLOUD_ACCESS_TOKEN=kfg_00",
                "CODE_ASSIST_ENDPOINT=http://127.0.0.1:7778",
                "GOOGLE_CLOUD_PROJECT=p-1"
            ]
        );
        assert_eq!(provider_of(&issued("later")).id(), "anthropic");
    }

    #[test]
    fn a_real_login_home_and_links_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("dot-codex");
        std::fs::create_dir(&real).unwrap();
        std::fs::write(real.join("auth.json"), "{}").unwrap();
        let e = write(&real, &OPENAI, "http://127.0.0.1:1").unwrap_err();
        assert!(matches!(e, HomeError::LiveLogin { .. }), "{e}");
        assert!(!real.join("config.toml").exists());
        // A sandbox that replaced its home with a link to the real one redirects nothing.
        let link = t.path().join("box-home");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        std::fs::remove_file(real.join("auth.json")).unwrap();
        assert!(write(&link, &OPENAI, "http://127.0.0.1:1").is_err());
        assert!(!real.join("config.toml").exists());
    }
}
