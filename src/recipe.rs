//! Ready-to-paste sandbox recipes for a grant (`keyferry grant NAME --recipe …`): Docker,
//! compose, bubblewrap, `keyferry ssh`, for whichever CLI the grant serves. Each keeps the
//! placeholder out of argv (`docker history`, `ps`): it is exported first and passed by
//! name (`-e VAR`, `--setenv VAR "$VAR"`), and each carries the boundary's safe defaults —
//! bubblewrap hides `$HOME`, `$XDG_RUNTIME_DIR` (the agent's socket, the session bus) and
//! `/proc`; containers get no host mounts but a grant's own home folder.

use std::fmt::Write as _;
use std::path::Path;

use zeroize::Zeroizing;

use crate::domain::ListenerInfo;
use crate::protocol::GrantIssued;
use crate::sandbox_home;

/// Where a recipe's sandbox runs.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Recipe {
    /// `docker run` on the bridge (reaching the host as host.docker.internal).
    Docker,
    /// A compose service and the `.env` lines it reads.
    Compose,
    /// bubblewrap on the shared network.
    Bwrap,
    /// `keyferry ssh` to a remote machine (it makes a grant of its own).
    Ssh,
}

/// Where a container on the bridge reaches the gateway: `host.docker.internal` at the port
/// of the first listener on an address that is not loopback (a bridge's, bound or still
/// waiting for it), else the grant's own port. The gateway must listen on the bridge
/// (README, Docker): a recipe on loopback only would hang at connect.
#[must_use]
pub fn bridge_url(issued: &GrantIssued, listeners: &[ListenerInfo]) -> String {
    let bridge = listeners.iter().find_map(|l| {
        let addr: std::net::SocketAddr = l.listen.parse().ok()?;
        (!addr.ip().is_loopback()).then(|| addr.port().to_string())
    });
    let own = || {
        issued
            .base_url
            .rsplit(':')
            .next()
            .filter(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
            .unwrap_or("7778")
            .to_owned()
    };
    format!("http://host.docker.internal:{}", bridge.unwrap_or_else(own))
}

fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', r"'\''"))
}

/// The recipe for `issued`, whose variables (see [`sandbox_home::variables`]) are `vars`
/// and whose home folder, if one was written, is `home`. The text holds the placeholder
/// once, in an `export` line (or the `.env` block): treat it as the placeholder itself.
#[must_use]
pub fn render(
    recipe: Recipe,
    issued: &GrantIssued,
    vars: &[(&'static str, Zeroizing<String>)],
    home: Option<&Path>,
) -> Zeroizing<String> {
    let provider = sandbox_home::provider_of(issued);
    let cli = provider.cli();
    let home_var = provider.sandbox_home_var();
    let mut out = Zeroizing::new(format!(
        "# grant {} on {} until {}; revoke with `keyferry revoke {}`\n",
        issued.grant.name, issued.grant.credential, issued.grant.expires, issued.grant.name
    ));
    // Inside a sandbox its home folder is mounted at /box/home.
    let inside = |k: &str, v: &str| -> String {
        if Some(k) == home_var {
            "/box/home".to_owned()
        } else {
            v.to_owned()
        }
    };
    match recipe {
        Recipe::Ssh => {
            let _ = writeln!(
                out,
                "keyferry ssh --cred {} user@host -- {cli}",
                issued.grant.credential
            );
            if provider.id() != "anthropic" {
                let _ = writeln!(
                    out,
                    "# keyferry ssh tunnels the gateway for Claude Code only today; for {cli}, forward the gateway's port (ssh -R) and pass these:"
                );
                for (k, v) in vars {
                    let _ = writeln!(out, "#   {k}={}", inside(k, v));
                }
            }
        }
        Recipe::Docker => {
            for (k, v) in vars {
                let _ = writeln!(out, "export {k}={}", quote(&inside(k, v)));
            }
            let _ = write!(
                out,
                "docker run --rm --add-host host.docker.internal:host-gateway"
            );
            if let Some(dir) = home {
                let _ = write!(
                    out,
                    " \\\n  -v {}:/box/home",
                    quote(&dir.display().to_string())
                );
            }
            for (k, _) in vars {
                let _ = write!(out, " \\\n  -e {k}");
            }
            let _ = writeln!(out, " \\\n  IMAGE {cli}");
        }
        Recipe::Compose => {
            let _ = writeln!(out, "# .env (keep it 0600; it holds the placeholder)");
            for (k, v) in vars {
                let _ = writeln!(out, "{k}={}", inside(k, v));
            }
            let _ = writeln!(
                out,
                "# compose.yaml\nservices:\n  agent:\n    image: IMAGE\n    command: [\"{cli}\"]\n    extra_hosts: [\"host.docker.internal:host-gateway\"]"
            );
            if let Some(dir) = home {
                let _ = writeln!(out, "    volumes: [\"{}:/box/home\"]", dir.display());
            }
            let _ = writeln!(out, "    environment:");
            for (k, _) in vars {
                let _ = writeln!(out, "      {k}: ${{{k}}}");
            }
        }
        Recipe::Bwrap => {
            for (k, v) in vars {
                let _ = writeln!(out, "export {k}={}", quote(&inside(k, v)));
            }
            let _ = write!(
                out,
                "bwrap --dev-bind / / --tmpfs \"$HOME\" --tmpfs \"$XDG_RUNTIME_DIR\" --unshare-pid --proc /proc \\\n  --unsetenv DBUS_SESSION_BUS_ADDRESS"
            );
            if let Some(dir) = home {
                let _ = write!(
                    out,
                    " --bind {} /box/home",
                    quote(&dir.display().to_string())
                );
            }
            for (k, _) in vars {
                let _ = write!(out, " \\\n  --setenv {k} \"${k}\"");
            }
            let _ = writeln!(out, " \\\n  {cli}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issued(provider: &str) -> GrantIssued {
        serde_json::from_value(serde_json::json!({
            "grant": {"name":"box","credential":"c","created":"t","expires":"2027-01-01T00:00:00Z",
                "requests":0,"input_tokens":0,"output_tokens":0,"cache_creation_input_tokens":0,
                "cache_read_input_tokens":0},
            "base_url": "http://127.0.0.1:7778",
            "placeholder": "kfg_00aa",
            "provider": provider,
        }))
        .unwrap()
    }

    #[test]
    fn the_placeholder_is_exported_never_in_argv() {
        let i = issued("anthropic");
        let mut j = i.clone();
        j.base_url = bridge_url(&i, &[]);
        let on_bridge: ListenerInfo = serde_json::from_value(
            serde_json::json!({"listen": "172.17.0.1:7779", "state": "closed"}),
        )
        .unwrap();
        assert_eq!(
            bridge_url(&i, &[on_bridge]),
            "http://host.docker.internal:7779"
        );
        let vars = sandbox_home::variables(&j, None, |_| None);
        let text = render(Recipe::Docker, &j, &vars, None);
        assert_eq!(text.matches("kfg_00aa").count(), 1, "{}", text.as_str());
        assert!(text.contains("export ANTHROPIC_AUTH_TOKEN='kfg_00aa'"));
        assert!(text.contains("-e ANTHROPIC_AUTH_TOKEN \\"));
        assert!(text.contains("ANTHROPIC_BASE_URL='http://host.docker.internal:7778'"));
        assert!(
            text.trim_end().ends_with("IMAGE claude"),
            "{}",
            text.as_str()
        );
        let bw = render(
            Recipe::Bwrap,
            &i,
            &sandbox_home::variables(&i, None, |_| None),
            None,
        );
        for flag in [
            "--tmpfs \"$HOME\"",
            "--tmpfs \"$XDG_RUNTIME_DIR\"",
            "--unshare-pid --proc /proc",
        ] {
            assert!(bw.contains(flag), "{}", bw.as_str());
        }
        assert!(bw.contains("--setenv ANTHROPIC_AUTH_TOKEN \"$ANTHROPIC_AUTH_TOKEN\""));
        assert_eq!(bw.matches("kfg_00aa").count(), 1);
    }

    #[test]
    fn codex_mounts_its_home_and_gemini_gets_its_variables() {
        let i = issued("openai");
        let dir = Path::new("/b/cx");
        let vars = sandbox_home::variables(&i, Some(dir), |_| None);
        let d = render(Recipe::Docker, &i, &vars, Some(dir));
        assert!(d.contains("-v '/b/cx':/box/home"), "{}", d.as_str());
        assert!(
            d.contains("export CODEX_HOME='/box/home'"),
            "{}",
            d.as_str()
        );
        assert!(d.trim_end().ends_with("IMAGE codex"));
        let c = render(Recipe::Compose, &i, &vars, Some(dir));
        assert!(
            c.contains("volumes: [\"/b/cx:/box/home\"]"),
            "{}",
            c.as_str()
        );
        assert!(c.contains("KEYFERRY_CODEX_TOKEN: ${KEYFERRY_CODEX_TOKEN}"));
        let g = issued("google");
        let vars = sandbox_home::variables(&g, None, |_| None);
        let c = render(Recipe::Compose, &g, &vars, None);
        assert!(
            c.contains("GOOGLE_CLOUD_ACCESS_TOKEN=kfg_00aa"),
            "{}",
            c.as_str()
        );
        assert!(c.contains("command: [\"gemini\"]"));
        let s = render(Recipe::Ssh, &g, &vars, None);
        assert!(
            s.contains("for gemini, forward the gateway's port"),
            "{}",
            s.as_str()
        );
    }
}
