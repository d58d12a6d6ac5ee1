//! Gateway grants: `grant`, `grants`, `revoke`. The sandbox gets a base URL and a
//! placeholder; the token stays in the agent.

use std::io::Write as _;

use clap::{Args, ValueEnum};
use keyferry::config::Config;
use keyferry::domain::GrantInfo;
use keyferry::error::exit;
use keyferry::escape::escape;
use keyferry::gateway::NewGrant;
use keyferry::recipe::{self, Recipe};
use keyferry::sandbox_home;

use crate::tokens::api;
use crate::Cli;

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    /// `KEY=value` lines (a compose `env_file`, `--env-file`).
    Env,
    /// `export KEY='value'` lines, for `eval`.
    Export,
    /// One JSON document.
    Json,
    /// A Claude Code `.credentials.json` logged in with the placeholder: the login's plan
    /// and scopes, no token, no refresh token (a Claude login only; set ANTHROPIC_BASE_URL).
    ClaudeCredentials,
}

#[derive(Args)]
pub struct GrantArgs {
    /// The grant's name (a sandbox, a VM): 1-64 of A-Z a-z 0-9 . _ -
    pub name: String,
    /// The credential it spends.
    #[arg(long, value_name = "NAME", default_value = "claude")]
    pub cred: String,
    /// How long it lives, 1s to 366d: 30m, 1h30m, 8h, 7d.
    #[arg(long, value_name = "DURATION", default_value = "8h", value_parser = parse_ttl)]
    pub ttl: std::time::Duration,
    /// Requests of this grant allowed in flight at once, 1 or more (default: no cap).
    #[arg(long, value_name = "N", value_parser = at_least_one::<u32>)]
    pub max_concurrent: Option<u32>,
    /// Tokens (input + output + cache) this grant may spend per UTC day, 1 or more (default:
    /// no budget).
    #[arg(long, value_name = "N", value_parser = at_least_one::<u64>)]
    pub daily_token_budget: Option<u64>,
    /// How to print the variables.
    #[arg(long, value_enum, default_value = "env")]
    pub format: Format,
    /// For a Codex login: write the sandbox's CODEX_HOME here (its config.toml, pointing
    /// Codex at the gateway; no login in it) and print CODEX_HOME too.
    #[arg(long, value_name = "DIR")]
    pub codex_home: Option<std::path::PathBuf>,
    /// Where the sandbox reaches the gateway, when not at its first listener's address (a
    /// container on a bridge: http://host.docker.internal:7778).
    #[arg(long, value_name = "URL", value_parser = parse_base_url)]
    pub base_url: Option<String>,
    /// Print a ready-to-paste recipe for the grant instead of the variables (docker and
    /// compose reach the gateway at host.docker.internal unless --base-url says otherwise).
    #[arg(long, value_enum, value_name = "WHERE", conflicts_with = "format")]
    pub recipe: Option<Recipe>,
}

/// `http(s)://host[:port]`, nothing after it: the CLIs append their own paths.
fn parse_base_url(s: &str) -> Result<String, String> {
    let uri: http::Uri = s.parse().map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    let plain = matches!(uri.scheme_str(), Some("http" | "https"))
        && uri.authority().is_some_and(|a| !a.as_str().contains('@'))
        && uri.path() == "/"
        && uri.query().is_none();
    if !plain {
        return Err(format!(
            "{s:?}: give scheme, host and port only, as http://host.docker.internal:7778"
        ));
    }
    Ok(s.trim_end_matches('/').to_owned())
}

/// A cap of 0 would refuse every request: a typo, not a setting. Leaving the flag out is
/// how to say "no cap".
fn at_least_one<T>(s: &str) -> Result<T, String>
where
    T: std::str::FromStr + From<u8> + PartialOrd + std::fmt::Display,
{
    let n: T = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number (1 or more)"))?;
    if n < T::from(1) {
        return Err(format!(
            "{n} would refuse every request; give 1 or more, or leave the flag out for no limit"
        ));
    }
    Ok(n)
}

/// The credential's inspection, when it is a Claude login (for a credentials file).
fn claude_login(
    api: &keyferry::api::Api,
    name: &str,
) -> anyhow::Result<keyferry::credential::Inspection> {
    let status = api.status()?;
    let row = status.credentials.into_iter().find(|c| c.name == name);
    let Some(inspection) = row.and_then(|c| c.inspection) else {
        anyhow::bail!("credential {name:?} has no token right now; a Claude credentials file needs its login (see `keyferry status`)");
    };
    if !matches!(
        inspection.kind,
        keyferry::credential::Kind::ClaudeOauth | keyferry::credential::Kind::SetupToken
    ) {
        return Err(keyferry::snapshot::SnapshotError::NotClaude {
            name: name.to_owned(),
            kind: inspection.kind,
        }
        .into());
    }
    Ok(inspection)
}

/// Parses `30m`, `1h30m`, `7d` into a grant's lifetime, within the gateway's limits.
pub fn parse_ttl(s: &str) -> Result<std::time::Duration, keyferry::expiry::DurationError> {
    use keyferry::expiry::{parse_lifetime, GRANT_TTL_MAX, GRANT_TTL_MIN};
    parse_lifetime(s, GRANT_TTL_MIN, GRANT_TTL_MAX)
}

impl GrantArgs {
    pub fn spec(&self) -> NewGrant {
        NewGrant {
            name: self.name.clone(),
            credential: self.cred.clone(),
            ttl: self.ttl,
            max_concurrent: self.max_concurrent,
            daily_token_budget: self.daily_token_budget,
        }
    }
}

pub fn grant(cli: &Cli, config: &Config, args: &GrantArgs) -> anyhow::Result<i32> {
    let api = api(cli, config)?;
    // Checked before the grant exists: a refusal must not replace a live grant of the name.
    let login = match args.format {
        Format::ClaudeCredentials => Some(claude_login(&api, &args.cred)?),
        _ => None,
    };
    if let Some(dir) = &args.codex_home {
        // The credential's current provider decides the files; a credential with no token
        // is refused by the grant itself.
        let kind = api
            .status()?
            .credentials
            .into_iter()
            .find(|c| c.name == args.cred)
            .and_then(|c| c.inspection)
            .map(|i| i.kind);
        if let Some(p) = kind.and_then(keyferry::provider::for_kind) {
            sandbox_home::check(dir, p)?;
        }
    }
    let mut issued = api.grant(&args.spec())?;
    if let Some(url) = &args.base_url {
        issued.base_url.clone_from(url);
    } else if matches!(args.recipe, Some(Recipe::Docker | Recipe::Compose)) {
        let listeners = api.status().map(|s| s.listeners).unwrap_or_default();
        issued.base_url = recipe::bridge_url(&issued, &listeners);
    }
    let provider = sandbox_home::provider_of(&issued);
    if let Some(dir) = &args.codex_home {
        for path in sandbox_home::write(dir, provider, &issued.base_url)? {
            eprintln!("keyferry: wrote {}", keyferry::paths::display(&path));
        }
    } else if provider.sandbox_home_var().is_some() {
        eprintln!(
            "keyferry: {} needs its config too: add --codex-home DIR (a folder for the sandbox, mounted as its CODEX_HOME)",
            provider.name()
        );
    }
    let vars = sandbox_home::variables(&issued, args.codex_home.as_deref(), |k| {
        std::env::var(k).ok()
    });
    let mut out = std::io::stdout().lock();
    if let Some(r) = args.recipe {
        let text = recipe::render(r, &issued, &vars, args.codex_home.as_deref());
        write!(out, "{}", text.as_str())?;
        return finish(&issued, args, provider);
    }
    match args.format {
        Format::Env => {
            for (k, v) in &vars {
                writeln!(out, "{k}={}", v.as_str())?;
            }
        }
        Format::Export => {
            for (k, v) in &vars {
                writeln!(out, "export {k}='{}'", v.replace('\'', r"'\''"))?;
            }
        }
        Format::Json => {
            let doc = zeroize::Zeroizing::new(serde_json::to_string(&issued)?);
            writeln!(out, "{}", doc.as_str())?;
        }
        Format::ClaudeCredentials => {
            let login = login.as_ref().expect("looked up above");
            let doc =
                keyferry::snapshot::placeholder_login(&args.cred, login, &issued.placeholder.0)?;
            write!(out, "{}", doc.expose())?;
            eprintln!(
                "keyferry: a credentials file for the sandbox's ~/.claude/.credentials.json (write it with umask 077); point its Claude Code at ANTHROPIC_BASE_URL={}",
                issued.base_url
            );
        }
    }
    finish(&issued, args, provider)
}

/// What `grant` says on stderr after the variables or recipe: a replaced grant, the
/// grant's lifetime, the socket for sandboxes without a network.
fn finish(
    issued: &keyferry::protocol::GrantIssued,
    args: &GrantArgs,
    provider: &dyn keyferry::provider::GatewayProvider,
) -> anyhow::Result<i32> {
    if issued.replaced {
        eprintln!(
            "keyferry: replaced grant {}: its old placeholder is refused now (401 \"replaced by a newer grant\")",
            issued.grant.name
        );
    }
    eprintln!(
        "keyferry: grant {} on {} until {} (in {}); the token stays on the host (revoke with `keyferry revoke {}`)",
        issued.grant.name,
        issued.grant.credential,
        issued.grant.expires,
        keyferry::credential::human_duration(i64::try_from(args.ttl.as_secs()).unwrap_or(i64::MAX)),
        issued.grant.name
    );
    if let (Some(sock), "anthropic") = (&issued.unix_socket, provider.id()) {
        eprintln!("keyferry: without a network, mount {sock} and set ANTHROPIC_UNIX_SOCKET to it");
    }
    Ok(exit::OK)
}

fn line(g: &GrantInfo) -> String {
    let spark =
        keyferry::gateway::history::sparkline_of(&g.history, 24, time::OffsetDateTime::now_utc());
    format!(
        "{}  {}  expires {}  {} requests  in {} / out {} / cache {}+{} tokens  last use {}  24 h [{spark}]",
        g.name,
        g.credential,
        g.expires,
        g.requests,
        g.input_tokens,
        g.output_tokens,
        g.cache_creation_input_tokens,
        g.cache_read_input_tokens,
        g.last_use.as_deref().unwrap_or("never")
    )
}

pub fn grants(cli: &Cli, config: &Config, json: bool) -> anyhow::Result<i32> {
    let list = api(cli, config)?.grants()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else if list.is_empty() {
        eprintln!("keyferry: no grants");
    } else {
        for g in &list {
            println!("{}", escape(&line(g)));
        }
    }
    Ok(exit::OK)
}

pub fn revoke(cli: &Cli, config: &Config, name: &str) -> anyhow::Result<i32> {
    if api(cli, config)?.revoke(name)? {
        eprintln!("keyferry: grant {name} revoked; its placeholder is refused from now on");
        Ok(exit::OK)
    } else {
        eprintln!("keyferry: no grant named {name}");
        Ok(exit::ERROR)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_base_url;

    #[test]
    fn a_base_url_is_scheme_host_and_port_only() {
        assert_eq!(
            parse_base_url("http://host.docker.internal:7778/").unwrap(),
            "http://host.docker.internal:7778"
        );
        assert!(parse_base_url("https://gw.example").is_ok());
        for bad in [
            "host:7778",
            "ftp://h:1",
            "http://h:1/v1",
            "http://u:p@h:1",
            "http://h:1?x=1",
        ] {
            let e = parse_base_url(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }
}
