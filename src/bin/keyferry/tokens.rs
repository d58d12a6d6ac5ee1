//! Token commands: get, show, status, setup, reroll, clear, export — through a running
//! agent when there is one, directly against the sources otherwise.

use std::io::Write as _;
use std::path::PathBuf;

use clap::Args;
use keyferry::agent::socket;
use keyferry::api::{AgentUse, Api};
use keyferry::broker::{Broker, Found};
use keyferry::config::Config;
use keyferry::credential::Inspection;
use keyferry::domain::{CredentialStatus, ErrorBody, ErrorCode, UsageState};
use keyferry::error::exit;
use keyferry::protocol::Token;
use keyferry::report::{never_set_up, not_set_up_line, status_line, Shown};
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

/// The agent (or, without one, the sources), as `--no-agent`/`--require-agent` say.
pub fn api(cli: &Cli, config: &Config) -> anyhow::Result<Api> {
    let path = socket::path(cli.socket.as_deref(), config.agent.socket.as_deref());
    let agent = if cli.no_agent {
        AgentUse::Never
    } else if cli.require_agent {
        AgentUse::Required
    } else {
        AgentUse::Auto
    };
    let name = concat!("keyferry-cli/", env!("CARGO_PKG_VERSION"));
    Ok(Api::open(
        &path,
        name,
        agent,
        Broker::new(config.clone()),
        term::warn,
    )?)
}

/// What `get` and `export` serve.
pub fn serve(cli: &Cli, b: &Broker, name: &str) -> anyhow::Result<Token> {
    // An explicit environment override wins even over a running agent.
    let api = if b.env_override(name)?.is_some() {
        Api::Direct(Box::new(Broker::new(b.config.clone())))
    } else {
        api(cli, &b.config)?
    };
    if let Api::Direct(_) = api {
        // Direct reads print the chain's warnings (a 644 token file), like cfauth.
        resolve(b, name)?;
    }
    Ok(api.get(name)?)
}

fn resolve(b: &Broker, name: &str) -> Result<Found, Error> {
    let found = b.resolve(name)?;
    for w in &found.warnings {
        term::warn(w);
    }
    Ok(found)
}

pub fn run(cli: &Cli, config: Config) -> anyhow::Result<i32> {
    let b = Broker::new(config);
    let now = OffsetDateTime::now_utc();
    match &cli.cmd {
        Cmd::Get { name, json } => {
            let t = serve(cli, &b, &name.name)?;
            let mut out = std::io::stdout().lock();
            if *json {
                let doc = zeroize::Zeroizing::new(serde_json::to_string(&t)?);
                writeln!(out, "{}", doc.as_str())?;
            } else {
                writeln!(out, "{}", t.token.0.expose())?;
            }
        }
        Cmd::Show { name, json } => {
            let (shown, usage) = show(cli, &b, &name.name, now)?;
            if *json {
                let row = ShowRow {
                    shown: &shown,
                    usage: usage.as_ref(),
                };
                println!("{}", serde_json::to_string_pretty(&row)?);
            } else {
                print!("{}", shown.text());
                match &usage {
                    Some(UsageState::Known(u)) => {
                        for l in u.lines() {
                            println!("usage       {l}");
                        }
                    }
                    Some(UsageState::Unavailable(e)) => println!("usage       none: {e}"),
                    None => {}
                }
            }
        }
        Cmd::Status { name, json } => return status(cli, &b, name.as_deref(), *json),
        Cmd::Setup(name) => {
            let token = term::read_secret(&format!(
                "Paste the token for '{}' (input hidden): ",
                name.name
            ))?;
            store(cli, &b, &name.name, token)?;
        }
        Cmd::Reroll(args) => reroll(cli, &b, args)?,
        Cmd::Clear(name) => {
            let cleared = api(cli, &b.config)?.clear(&name.name)?;
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

/// `show --json`: the credential, plus its subscription usage when an agent can tell.
#[derive(serde::Serialize)]
struct ShowRow<'a> {
    #[serde(flatten)]
    shown: &'a Shown,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<&'a UsageState>,
}

/// What `show` prints; with an agent, as the agent sees it, with its usage figures (or why
/// there are none).
fn show(
    cli: &Cli,
    b: &Broker,
    name: &str,
    now: OffsetDateTime,
) -> anyhow::Result<(Shown, Option<UsageState>)> {
    if b.env_override(name)?.is_none() {
        let api = api(cli, &b.config)?;
        if !matches!(api, Api::Direct(_)) {
            let st = api.status_with_usage(Some(name))?;
            let usage = st
                .usage
                .into_iter()
                .find(|u| u.name == name)
                .map(|u| u.state);
            let cs = st
                .credentials
                .into_iter()
                .find(|c| c.name == name)
                .ok_or_else(|| {
                    Error::Invalid(format!("the agent has no credential named {name:?}"))
                })?;
            return match (cs.source, cs.inspection) {
                (Some(source), Some(inspection)) => Ok((
                    Shown {
                        name: name.to_owned(),
                        source,
                        inspection,
                    },
                    usage,
                )),
                _ => Err(cs
                    .error
                    .unwrap_or(ErrorBody::new(
                        ErrorCode::NotFound,
                        format!("no token found for {name:?}"),
                    ))
                    .into()),
            };
        }
    }
    Ok((Shown::of(&resolve(b, name)?, now), None))
}

/// `status --json`: each credential as the agent reports it, plus its subscription usage.
#[derive(serde::Serialize)]
struct StatusRow<'a> {
    #[serde(flatten)]
    status: &'a CredentialStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<&'a UsageState>,
}

fn status(cli: &Cli, b: &Broker, only: Option<&str>, json: bool) -> anyhow::Result<i32> {
    if let Some(o) = only {
        b.spec(o)?;
    }
    let st = api(cli, &b.config)?.status_with_usage(only)?;
    if st.locked && !json {
        eprintln!("keyferry: the agent is locked (run `keyferry unlock`)");
    }
    let usage_of = |name: &str| st.usage.iter().find(|u| u.name == name).map(|u| &u.state);
    let selected: Vec<&CredentialStatus> = st
        .credentials
        .iter()
        .filter(|c| only.map_or(true, |o| o == c.name))
        .collect();
    let mut code = exit::OK;
    for c in &selected {
        // Listing everything, a CLI the user never set up is one quiet line; asked about
        // by name, it gets the full warning and exit status.
        if only.is_none() && never_set_up(c, &b.config) {
            if !json {
                println!("{}", not_set_up_line(c));
            }
            continue;
        }
        for w in &c.warnings {
            term::warn(w);
        }
        if let (Some(e), Some(_)) = (&c.error, only) {
            code = e.code.exit_status();
        }
        if !json {
            println!("{}", status_line(c));
            match usage_of(&c.name) {
                Some(UsageState::Known(u)) => {
                    for l in u.lines() {
                        println!("  usage {l}");
                    }
                }
                Some(UsageState::Unavailable(e)) => println!("  usage: none ({})", e.message),
                None => {}
            }
            if let Some(e) = &c.error {
                eprintln!("keyferry: warning: {}", e.message);
            }
        }
    }
    if json {
        let rows: Vec<StatusRow<'_>> = selected
            .iter()
            .map(|c| StatusRow {
                status: c,
                usage: usage_of(&c.name),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(code)
}

fn store(cli: &Cli, b: &Broker, name: &str, token: Secret) -> anyhow::Result<()> {
    if token.is_empty() {
        anyhow::bail!("no token given; nothing was changed");
    }
    let api = api(cli, &b.config)?;
    let (st, place) = api.store(name, token)?;
    if matches!(api, Api::Direct(_)) {
        eprintln!("{name}: stored in {place}");
    } else {
        eprintln!("{name}: stored through {place}");
    }
    let inspection: Inspection = st
        .inspection
        .ok_or_else(|| Error::Invalid("the token was stored but cannot be read back".into()))?;
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

fn reroll(cli: &Cli, b: &Broker, args: &RerollArgs) -> anyhow::Result<()> {
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
    store(cli, b, name, token)
}

fn export(cli: &Cli, b: &Broker, args: &ExportArgs) -> anyhow::Result<()> {
    let s = serve(cli, b, &args.name.name)?;
    let var = args.var.clone().unwrap_or_else(|| s.env_var.clone());
    let token = &s.token.0;
    let mut out = std::io::stdout().lock();
    if args.token_only {
        writeln!(out, "{}", token.expose())?;
    } else if args.export {
        writeln!(
            out,
            "export {var}='{}'",
            token.expose().replace('\'', r"'\''")
        )?;
    } else if args.json {
        let t = Token { env_var: var, ..s };
        let doc = zeroize::Zeroizing::new(serde_json::to_string(&t)?);
        writeln!(out, "{}", doc.as_str())?;
    } else {
        let path = args
            .env_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(".env"));
        keyferry::dotenv::write_key(&path, &var, token)?;
        eprintln!(
            "updated {}: {var}={} (from {})",
            path.display(),
            keyferry::credential::mask(token.expose()),
            s.source
        );
    }
    Ok(())
}
