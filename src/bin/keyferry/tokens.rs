//! Token commands: get, show, status, setup, reroll, clear, export — through a running
//! agent when there is one, directly against the sources otherwise.

use std::io::Write as _;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use keyferry::agent::socket;
use keyferry::api::{AgentUse, Api};
use keyferry::broker::{Broker, Found};
use keyferry::config::Config;
use keyferry::credential::Inspection;
use keyferry::domain::{CredentialStatus, ErrorBody, ErrorCode, Previous, UsageState};
use keyferry::error::exit;
use keyferry::escape::escape;
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

/// What `export` writes: the one output switch (`--format`); the old `--token-only`,
/// `--export` and `--json` are hidden aliases of three of its values.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// Update one key in a .env file (./.env, or --env-file), keeping every other line.
    Dotenv,
    /// Print `VAR=token` (a compose `env_file`, `docker --env-file`).
    Env,
    /// Print `export VAR='token'`, for `eval`.
    Export,
    /// Print one JSON document with the token.
    Json,
    /// Print only the token.
    Token,
}

#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    name: Name,
    /// What to write (default dotenv: update ./.env).
    #[arg(long, value_enum, group = "mode")]
    format: Option<ExportFormat>,
    /// Alias of --format token.
    #[arg(long, group = "mode", hide = true)]
    token_only: bool,
    /// Alias of --format export.
    #[arg(long, group = "mode", hide = true)]
    export: bool,
    /// Alias of --format json.
    #[arg(long, group = "mode", hide = true)]
    json: bool,
    /// The .env file to update (default ./.env); implies --format dotenv.
    #[arg(long, value_name = "PATH")]
    env_file: Option<PathBuf>,
    /// Variable name (default by kind, e.g. CLAUDE_CODE_OAUTH_TOKEN).
    #[arg(long, value_name = "NAME")]
    var: Option<String>,
}

impl ExportArgs {
    /// The format asked for, through `--format` or an alias.
    fn format(&self) -> ExportFormat {
        match (self.format, self.token_only, self.export, self.json) {
            (Some(f), ..) => f,
            (None, true, ..) => ExportFormat::Token,
            (None, _, true, _) => ExportFormat::Export,
            (None, .., true) => ExportFormat::Json,
            (None, ..) => ExportFormat::Dotenv,
        }
    }
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
    match api.get(name) {
        Err(body) if matches!(body.code, ErrorCode::NotFound | ErrorCode::UnsafeFile) => {
            // The agent's answer carries no warnings; its status does (a 644 token file
            // and its fix).
            let st = api.status();
            for c in st.iter().flat_map(|s| &s.credentials) {
                if c.name == name {
                    c.warnings.iter().for_each(|w| term::warn(w));
                }
            }
            Err(body.into())
        }
        other => Ok(other?),
    }
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
    /// The sinks the agent keeps current from this credential, a refused write's reason
    /// included.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    sinks: Vec<&'a keyferry::domain::SinkStatus>,
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
        // What the user set up and has no token (missing, its file skipped or malformed)
        // sets the exit status, the first such credential deciding; one still served
        // despite an error (a write-back pending) only warns. Asked about by name, its
        // error is the status either way.
        if let (Some(e), exit::OK) = (&c.error, code) {
            if only.is_some() || c.source.is_none() {
                code = e.code.exit_status();
            }
        }
        if !json {
            println!("{}", status_line(c));
            match usage_of(&c.name) {
                Some(UsageState::Known(u)) => {
                    for l in u.lines() {
                        println!("  usage {l}");
                    }
                }
                Some(UsageState::Unavailable(e)) => {
                    println!("  usage: no figures: {}", escape(&e.message));
                }
                None => {}
            }
            if let Some(e) = &c.error {
                eprintln!("keyferry: warning: {}", escape(&e.message));
            }
            // A refused sink write is as much the credential's state as its expiry.
            for sink in st.sinks.iter().filter(|s| s.credential == c.name) {
                if let Some(e) = &sink.error {
                    println!(
                        "  sink {} {}: refused — {}",
                        sink.kind,
                        keyferry::escape::escape(&sink.path),
                        keyferry::escape::escape(&e.message)
                    );
                }
            }
        }
    }
    if !json && only.is_none() {
        for l in &st.listeners {
            println!("gateway {}", l.to_string().escape_default());
        }
    }
    if json {
        let rows: Vec<StatusRow<'_>> = selected
            .iter()
            .map(|c| StatusRow {
                status: c,
                usage: usage_of(&c.name),
                sinks: st.sinks.iter().filter(|s| s.credential == c.name).collect(),
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
    let (outcome, place) = api.store_outcome(name, token)?;
    if matches!(api, Api::Direct(_)) {
        eprintln!("{name}: stored in {place}");
    } else {
        eprintln!("{name}: stored through {place}");
    }
    let inspection: Inspection = outcome
        .status
        .inspection
        .ok_or_else(|| Error::Invalid("the token was stored but cannot be read back".into()))?;
    eprintln!(
        "{name}: {} {} ({})",
        inspection.kind, inspection.masked, inspection.fingerprint
    );
    match &outcome.previous {
        Some(Previous::Replaced { fingerprint }) => eprintln!(
            "{name}: replaced {fingerprint} with {}",
            inspection.fingerprint
        ),
        Some(Previous::Same) => eprintln!(
            "{name}: this token was already stored; it keeps the time it was first seen, so its expiry does not move"
        ),
        Some(Previous::Empty) | None => {}
    }
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
    let format = args.format();
    if args.env_file.is_some() && format != ExportFormat::Dotenv {
        // A value-dependent conflict clap cannot declare; refused as a usage error.
        <Cli as clap::CommandFactory>::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "--env-file writes a .env file; it cannot be combined with another --format",
            )
            .exit();
    }
    let s = serve(cli, b, &args.name.name)?;
    let var = args.var.clone().unwrap_or_else(|| s.env_var.clone());
    let token = &s.token.0;
    let mut out = std::io::stdout().lock();
    match format {
        ExportFormat::Token => writeln!(out, "{}", token.expose())?,
        ExportFormat::Env => writeln!(out, "{var}={}", token.expose())?,
        ExportFormat::Export => writeln!(
            out,
            "export {var}='{}'",
            token.expose().replace('\'', r"'\''")
        )?,
        ExportFormat::Json => {
            let t = Token { env_var: var, ..s };
            let doc = zeroize::Zeroizing::new(serde_json::to_string(&t)?);
            writeln!(out, "{}", doc.as_str())?;
        }
        ExportFormat::Dotenv => {
            let path = args
                .env_file
                .clone()
                .unwrap_or_else(|| PathBuf::from(".env"));
            keyferry::dotenv::write_key(&path, &var, token).map_err(Error::from)?;
            eprintln!(
                "updated {}: {var}={} (from {})",
                path.display(),
                keyferry::credential::mask(token.expose()),
                s.source
            );
        }
    }
    Ok(())
}
