//! Token commands: get, show, status, setup, reroll, clear, export — through a running
//! agent when there is one, directly against the sources otherwise.

use std::io::Write as _;
use std::path::PathBuf;

use clap::Args;
use keyferry::agent::socket;
use keyferry::broker::{Broker, Found};
use keyferry::client::{Client, ClientError};
use keyferry::config::Config;
use keyferry::credential::Inspection;
use keyferry::error::exit;
use keyferry::expiry::Thresholds;
use keyferry::protocol::{self, CredentialStatus, Request, WireSecret};
use keyferry::report::{secret_json, status_line, Shown};
use keyferry::{reroll, Error, Secret};
use time::OffsetDateTime;

use crate::{term, Cli, Cmd, Name};

#[derive(Args)]
pub struct RerollArgs {
    #[command(flatten)]
    name: Name,
    /// Open the revoke page without asking.
    #[arg(long, conflicts_with = "no_open")]
    open: bool,
    /// Do not open the revoke page.
    #[arg(long)]
    no_open: bool,
    /// Run `claude setup-token` and capture the token it prints.
    #[arg(long, conflicts_with = "paste")]
    run_setup_token: bool,
    /// Paste the new token (hidden; stdin when piped).
    #[arg(long)]
    paste: bool,
    /// The claude program for --run-setup-token (default: $KEYFERRY_CLAUDE or `claude` on PATH).
    #[arg(long, value_name = "PATH")]
    claude: Option<PathBuf>,
}

#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    name: Name,
    /// Print only the token.
    #[arg(long, group = "mode")]
    token_only: bool,
    /// Print `export VAR='token'` for eval.
    #[arg(long, group = "mode")]
    export: bool,
    /// Print a JSON document with the token.
    #[arg(long, group = "mode")]
    json: bool,
    /// The .env file to update (default ./.env).
    #[arg(long, value_name = "PATH", conflicts_with = "mode")]
    env_file: Option<PathBuf>,
    /// Variable name (default by kind, e.g. CLAUDE_CODE_OAUTH_TOKEN).
    #[arg(long, value_name = "NAME")]
    var: Option<String>,
}

/// A running agent, or `None` to read the sources directly.
pub fn connect(cli: &Cli, config: &Config) -> anyhow::Result<Option<Client>> {
    if cli.no_agent {
        return Ok(None);
    }
    let path = socket::path(cli.socket.as_deref(), config.agent.socket.as_deref());
    match Client::connect(&path) {
        Ok(c) => Ok(Some(c)),
        Err(ClientError::NotRunning { .. }) if !cli.require_agent => Ok(None),
        Err(ClientError::Refused(e)) if e.code == "version_mismatch" && !cli.require_agent => {
            term::warn(&format!("{}; reading the sources directly", e.message));
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// What `get` and `export` serve: name, origin, kind, variable and the token.
pub struct Served {
    pub origin: String,
    pub env_var: String,
    pub token: Secret,
    pub json: serde_json::Value,
}

fn served_direct(b: &Broker, found: &Found) -> Result<Served, Error> {
    let env_var = b
        .spec(&found.name)?
        .env_var
        .unwrap_or_else(|| found.resolved.credential.kind.env_var().to_owned());
    Ok(Served {
        origin: found.resolved.origin.clone(),
        json: secret_json(found, &env_var),
        env_var,
        token: found.resolved.credential.token.clone(),
    })
}

pub fn serve(cli: &Cli, b: &Broker, name: &str) -> anyhow::Result<Served> {
    // An explicit environment override wins even over a running agent.
    if let Some(found) = b.env_override(name)? {
        return Ok(served_direct(b, &found)?);
    }
    if let Some(mut client) = connect(cli, &b.config)? {
        let t: protocol::Token = client.call(Request::Get {
            name: name.to_owned(),
        })?;
        let json = serde_json::to_value(&t)?;
        return Ok(Served {
            origin: t.source,
            env_var: t.env_var,
            token: t.token.0,
            json,
        });
    }
    let found = resolve(b, name)?;
    Ok(served_direct(b, &found)?)
}

fn resolve(b: &Broker, name: &str) -> Result<Found, Error> {
    let found = b.resolve(name)?;
    for w in &found.warnings {
        term::warn(w);
    }
    Ok(found)
}

pub fn run(cli: &Cli, config: Config) -> anyhow::Result<i32> {
    let thresholds = Thresholds::from_config(&config.agent);
    let b = Broker::new(config);
    let now = OffsetDateTime::now_utc();
    match &cli.cmd {
        Cmd::Get { name, json } => {
            let s = serve(cli, &b, &name.name)?;
            let mut out = std::io::stdout().lock();
            if *json {
                writeln!(out, "{}", s.json)?;
            } else {
                writeln!(out, "{}", s.token.expose())?;
            }
        }
        Cmd::Show { name, json } => {
            let shown = show(cli, &b, &name.name, now)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&shown)?);
            } else {
                print!("{}", shown.text());
            }
        }
        Cmd::Status { name, json } => {
            return status(cli, &b, name.as_deref(), *json, now, &thresholds)
        }
        Cmd::Setup(name) => {
            let token = term::read_secret(&format!(
                "Paste the token for '{}' (input hidden): ",
                name.name
            ))?;
            store(cli, &b, &name.name, token, now)?;
        }
        Cmd::Reroll(args) => reroll(cli, &b, args, now)?,
        Cmd::Clear(name) => {
            let cleared = match connect(cli, &b.config)? {
                Some(mut c) => {
                    let v: serde_json::Value = c.call(Request::Clear {
                        name: name.name.clone(),
                    })?;
                    v["cleared"].as_bool().unwrap_or(false)
                }
                None => b.clear(&name.name)?.is_some(),
            };
            if cleared {
                eprintln!("{}: keychain token cleared", name.name);
            } else {
                eprintln!(
                    "{}: no token stored in the keychain; nothing to clear",
                    name.name
                );
            }
        }
        Cmd::Export(args) => export(cli, &b, args)?,
        _ => unreachable!("dispatched in main"),
    }
    Ok(exit::OK)
}

fn show(cli: &Cli, b: &Broker, name: &str, now: OffsetDateTime) -> anyhow::Result<Shown> {
    if b.env_override(name)?.is_none() {
        if let Some(mut client) = connect(cli, &b.config)? {
            let st: protocol::Status = client.call(Request::Status {})?;
            let cs = st
                .credentials
                .into_iter()
                .find(|c| c.name == name)
                .ok_or_else(|| {
                    Error::Invalid(format!("the agent has no credential named {name:?}"))
                })?;
            return match (cs.source, cs.inspection) {
                (Some(source), Some(inspection)) => Ok(Shown {
                    name: name.to_owned(),
                    source,
                    inspection,
                }),
                _ => Err(
                    ClientError::Refused(cs.error.unwrap_or(keyferry::ErrorBody {
                        code: "not_found".into(),
                        message: format!("no token found for {name:?}"),
                    }))
                    .into(),
                ),
            };
        }
    }
    Ok(Shown::of(&resolve(b, name)?, now))
}

fn status(
    cli: &Cli,
    b: &Broker,
    only: Option<&str>,
    json: bool,
    now: OffsetDateTime,
    thresholds: &Thresholds,
) -> anyhow::Result<i32> {
    let all: Vec<CredentialStatus> = match connect(cli, &b.config)? {
        Some(mut client) => {
            let st: protocol::Status = client.call(Request::Status {})?;
            if st.locked && !json {
                eprintln!("keyferry: the agent is locked (run `keyferry unlock`)");
            }
            st.credentials
        }
        None => b
            .config
            .names()
            .into_iter()
            .filter(|n| only.map_or(true, |o| o == n))
            .map(|n| {
                let r = b.resolve(&n);
                keyferry::report::status_of(&n, &r, now, thresholds)
            })
            .collect(),
    };
    let selected: Vec<CredentialStatus> = all
        .into_iter()
        .filter(|c| only.map_or(true, |o| o == c.name))
        .collect();
    if let Some(o) = only {
        if selected.is_empty() {
            b.spec(o)?;
        }
    }
    let mut code = exit::OK;
    for c in &selected {
        for w in &c.warnings {
            term::warn(w);
        }
        if let (Some(e), Some(_)) = (&c.error, only) {
            code = exit::for_code(&e.code);
        }
        if !json {
            println!("{}", status_line(c));
            if let Some(e) = &c.error {
                eprintln!("keyferry: warning: {}", e.message);
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&selected)?);
    }
    Ok(code)
}

fn store(
    cli: &Cli,
    b: &Broker,
    name: &str,
    token: Secret,
    now: OffsetDateTime,
) -> anyhow::Result<()> {
    if token.is_empty() {
        anyhow::bail!("no token given; nothing was changed");
    }
    let inspection: Inspection = match connect(cli, &b.config)? {
        Some(mut c) => {
            let st: CredentialStatus = c.call(Request::Store {
                name: name.to_owned(),
                token: WireSecret(token),
            })?;
            eprintln!("{name}: stored through the agent (pid {})", c.hello.pid);
            st.inspection.ok_or_else(|| {
                Error::Invalid("the agent stored the token but cannot read it back".into())
            })?
        }
        None => {
            let s = b.store_token(name, token)?;
            eprintln!("{name}: stored in {} {}", s.backend, s.item);
            s.credential.inspect(now)
        }
    };
    eprintln!(
        "{name}: {} {} ({})",
        inspection.kind, inspection.masked, inspection.fingerprint
    );
    if let (Some(at), Some(rel)) = (&inspection.expires_at, &inspection.expires_in) {
        eprintln!("{name}: expires {at} ({rel})");
    }
    // Say so when a higher-priority source will shadow what was just stored.
    if let Ok(found) = b.resolve(name) {
        let fp = keyferry::credential::fingerprint(found.resolved.credential.token.expose());
        if fp != inspection.fingerprint {
            term::warn(&format!(
                "{} takes precedence over the stored token; unset or remove it to use the new one",
                found.resolved.origin
            ));
        }
    }
    Ok(())
}

fn reroll(cli: &Cli, b: &Broker, args: &RerollArgs, now: OffsetDateTime) -> anyhow::Result<()> {
    let name = &args.name.name;
    eprintln!(
        "Rerolling '{name}'. Revoke the old token first, so a leaked copy stops working:\n  {}\n\
         The old token stays stored until the new one is saved.",
        reroll::REVOKE_URL
    );
    let interactive = term::interactive();
    if args.open
        || (!args.no_open && interactive && term::confirm("Open the revoke page in your browser?")?)
    {
        if let Err(e) = open::that_detached(reroll::REVOKE_URL) {
            eprintln!("keyferry: could not open a browser ({e}); open the address above yourself");
        }
    }
    let run_it = args.run_setup_token
        || (!args.paste
            && interactive
            && term::confirm("Run `claude setup-token` now to get the new token?")?);
    let token = if run_it {
        let program = reroll::claude_program(args.claude.as_deref());
        reroll::run_setup_token(&program, |line| eprintln!("{line}")).map_err(Error::from)?
    } else {
        term::read_secret(&format!(
            "Paste the new token for '{name}' (input hidden): "
        ))?
    };
    store(cli, b, name, token, now)
}

fn export(cli: &Cli, b: &Broker, args: &ExportArgs) -> anyhow::Result<()> {
    let s = serve(cli, b, &args.name.name)?;
    let var = args.var.clone().unwrap_or_else(|| s.env_var.clone());
    let mut out = std::io::stdout().lock();
    if args.token_only {
        writeln!(out, "{}", s.token.expose())?;
    } else if args.export {
        writeln!(
            out,
            "export {var}='{}'",
            s.token.expose().replace('\'', r"'\''")
        )?;
    } else if args.json {
        let mut doc = s.json.clone();
        doc["env_var"] = serde_json::Value::String(var);
        writeln!(out, "{doc}")?;
    } else {
        let path = args
            .env_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(".env"));
        keyferry::dotenv::write_key(&path, &var, &s.token)?;
        eprintln!(
            "updated {}: {var}={} (from {})",
            path.display(),
            keyferry::credential::mask(s.token.expose()),
            s.origin
        );
    }
    Ok(())
}
