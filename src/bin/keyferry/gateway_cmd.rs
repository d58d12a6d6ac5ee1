//! Gateway grants: `grant`, `grants`, `revoke`. The sandbox gets a base URL and a
//! placeholder; the token stays in the agent.

use std::io::Write as _;

use clap::{Args, ValueEnum};
use keyferry::config::Config;
use keyferry::domain::GrantInfo;
use keyferry::error::exit;
use keyferry::gateway::NewGrant;
use keyferry::protocol::GrantIssued;

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
}

#[derive(Args)]
pub struct GrantArgs {
    /// The grant's name (a sandbox, a VM): 1-64 of A-Z a-z 0-9 . _ -
    pub name: String,
    /// The credential it spends.
    #[arg(long, default_value = "claude")]
    pub cred: String,
    /// How long it lives: 30m, 8h, 7d.
    #[arg(long, default_value = "8h", value_parser = parse_ttl)]
    pub ttl: std::time::Duration,
    /// Requests of this grant allowed in flight at once.
    #[arg(long)]
    pub max_concurrent: Option<u32>,
    /// Tokens (input + output + cache) this grant may spend per UTC day.
    #[arg(long)]
    pub daily_token_budget: Option<u64>,
    #[arg(long, value_enum, default_value = "env")]
    pub format: Format,
}

/// Parses `30m`, `8h`, `7d` into a lifetime.
pub fn parse_ttl(s: &str) -> Result<std::time::Duration, String> {
    let d = keyferry::expiry::parse_duration(s)?;
    u64::try_from(d.whole_seconds())
        .ok()
        .filter(|s| *s > 0)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is not a positive lifetime"))
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

/// The two variables a sandbox gets.
pub fn variables(g: &GrantIssued) -> [(&'static str, &str); 2] {
    [
        ("ANTHROPIC_BASE_URL", g.base_url.as_str()),
        ("ANTHROPIC_AUTH_TOKEN", g.placeholder.0.expose()),
    ]
}

pub fn grant(cli: &Cli, config: &Config, args: &GrantArgs) -> anyhow::Result<i32> {
    let issued = api(cli, config)?.grant(&args.spec())?;
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Env => {
            for (k, v) in variables(&issued) {
                writeln!(out, "{k}={v}")?;
            }
        }
        Format::Export => {
            for (k, v) in variables(&issued) {
                writeln!(out, "export {k}='{}'", v.replace('\'', r"'\''"))?;
            }
        }
        Format::Json => {
            let doc = zeroize::Zeroizing::new(serde_json::to_string(&issued)?);
            writeln!(out, "{}", doc.as_str())?;
        }
    }
    eprintln!(
        "keyferry: grant {} on {} until {}; the token stays on the host (revoke with `keyferry revoke {}`)",
        issued.grant.name, issued.grant.credential, issued.grant.expires, issued.grant.name
    );
    if let Some(sock) = &issued.unix_socket {
        eprintln!("keyferry: without a network, mount {sock} and set ANTHROPIC_UNIX_SOCKET to it");
    }
    Ok(exit::OK)
}

fn line(g: &GrantInfo) -> String {
    format!(
        "{}  {}  expires {}  {} requests  in {} / out {} / cache {}+{} tokens  last use {}",
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
            println!("{}", line(g));
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
