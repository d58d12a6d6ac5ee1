//! `keyferry`: the CLI and the headless agent. Parsing, prompts and printing only; the work
//! is in the library.

mod agent_cmd;
mod cfauth;
mod deliver;
mod docs;
mod doctor;
mod gateway_cmd;
mod ssh_cmd;
mod term;
mod tokens;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use keyferry::client::ClientError;
use keyferry::config::Config;
use keyferry::error::exit;
use keyferry::Error;

#[derive(Parser)]
#[command(
    name = "keyferry",
    version,
    about = "Keeps AI CLI tokens in the OS keychain and ferries them into sandboxes"
)]
pub struct Cli {
    /// Config file (default: ~/.config/keyferry/config.toml; env KEYFERRY_CONFIG).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Agent socket (env KEYFERRY_SOCK).
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Never use a running agent; read the sources directly.
    #[arg(long, global = true, conflicts_with = "require_agent")]
    pub no_agent: bool,
    /// Fail (exit 5) unless a running agent answers.
    #[arg(long, global = true)]
    pub require_agent: bool,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Args, Clone)]
pub struct Name {
    /// Credential name.
    #[arg(default_value = "claude")]
    pub name: String,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Prompt for a token (hidden; stdin when piped) and store it in the keychain.
    Setup(Name),
    /// Replace a token: revoke the old one, get a new one, store it.
    Reroll(tokens::RerollArgs),
    /// Show which source is active for each credential, and when it expires.
    Status {
        /// Only this credential.
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove the stored token from the keychain.
    Clear(Name),
    /// Print only the token, for pipes.
    Get {
        #[command(flatten)]
        name: Name,
        #[arg(long)]
        json: bool,
    },
    /// Inspect a token: kind, masked value, expiry, plan, scopes, fingerprint.
    Show {
        #[command(flatten)]
        name: Name,
        #[arg(long)]
        json: bool,
    },
    /// Write the token for other tools: into a .env file (default), or print it.
    Export(tokens::ExportArgs),
    /// Write a credentials snapshot for a file-scoped mount (kept current by a running agent).
    Snapshot(deliver::SnapshotArgs),
    /// Run a command with the token in its environment (never in its argv).
    Exec(deliver::ExecArgs),
    /// Write an export block into a sandbox's ~/.bashrc over a transport's stdin.
    Provision(deliver::ProvisionArgs),
    /// Run the agent in the foreground, or install/uninstall it as a login service.
    Agent {
        #[command(subcommand)]
        action: Option<agent_cmd::AgentAction>,
    },
    /// Read the agent's audit log.
    Log {
        /// Keep printing new records.
        #[arg(short, long)]
        follow: bool,
        /// How many past records.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        #[arg(long)]
        json: bool,
    },
    /// Make the agent refuse every `get` until `keyferry unlock` (like `ssh-add -x`).
    Lock {
        /// Ask for a passphrase that `unlock` must repeat.
        #[arg(long)]
        passphrase: bool,
    },
    /// Serve tokens again after `lock`.
    Unlock,
    /// Create (or replace) a gateway grant: prints ANTHROPIC_BASE_URL and a placeholder
    /// ANTHROPIC_AUTH_TOKEN for a sandbox; the token stays on the host.
    Grant(gateway_cmd::GrantArgs),
    /// Refresh Claude Code's login now, through the agent's single refresher.
    Refresh {
        /// Credential name.
        #[arg(default_value = "claude")]
        name: String,
        /// Say what would happen, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// ssh to a remote machine with a gateway grant forwarded like `ssh -A`: Claude there
    /// reaches the API through this host; the token never leaves it.
    Ssh(ssh_cmd::SshArgs),
    /// Subscription usage of a Claude login: 5-hour and 7-day utilisation and when each resets.
    Usage {
        #[arg(default_value = "claude")]
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// List gateway grants with their usage.
    Grants {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a gateway grant now.
    Revoke {
        /// The grant's name.
        name: String,
    },
    /// Print the agent's events as they happen (no secrets).
    Watch {
        #[arg(long)]
        json: bool,
    },
    /// cf's token helper: setup, reroll, status, clear, get; `install [DIR]` links `cfauth`.
    Cfauth(cfauth::CfauthArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages into DIR (for packagers).
    #[command(hide = true)]
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Check everything that could be set up wrong and say how to fix it (exit 1 if broken).
    Doctor {
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    keyferry::panic::install_redacting_hook("keyferry");
    init_logging();
    // Run as `cfauth` (a link to this binary): the same as `keyferry cfauth …`.
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv
        .first()
        .is_some_and(|a| keyferry::cfauth::invoked_as_cfauth(a))
    {
        argv.insert(1, "cfauth".into());
    }
    let cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE as u8 } else { 0 });
        }
    };
    let code = match run(&cli) {
        Ok(code) => code,
        Err(e) => report(&e),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Prints an error once, with the warnings it carries; returns its exit status.
fn report(e: &anyhow::Error) -> i32 {
    if let Some(err) = e.downcast_ref::<Error>() {
        if let Error::NotFound { warnings, .. } = err {
            for w in warnings {
                term::warn(w);
            }
            eprintln!("keyferry: warning: {err}");
        } else {
            eprintln!("keyferry: {err}");
        }
        return err.exit_code();
    }
    if let Some(err) = e.downcast_ref::<ClientError>() {
        eprintln!("keyferry: {err}");
        return err.code().exit_status();
    }
    if let Some(err) = e.downcast_ref::<keyferry::ErrorBody>() {
        eprintln!("keyferry: {}", err.message);
        return err.code.exit_status();
    }
    eprintln!("keyferry: {e:#}");
    exit::ERROR
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

pub fn load_config(cli: &Cli) -> Result<Config, Error> {
    Ok(match &cli.config {
        Some(p) => Config::load_from(p)?,
        None => Config::load()?,
    })
}

fn run(cli: &Cli) -> anyhow::Result<i32> {
    // Documentation needs no config: a broken one must not break completions or packaging.
    match &cli.cmd {
        Cmd::Completions { shell } => {
            docs::completions(*shell, &mut std::io::stdout().lock());
            return Ok(0);
        }
        Cmd::Man { dir } => {
            docs::man_pages(dir)?;
            return Ok(0);
        }
        _ => {}
    }
    // The doctor reports a broken config itself and checks the rest on defaults.
    if let Cmd::Doctor { json } = &cli.cmd {
        return doctor::run(cli, *json);
    }
    let config = load_config(cli)?;
    match &cli.cmd {
        Cmd::Agent { action } => agent_cmd::agent(cli, config, action.as_ref()),
        Cmd::Log {
            follow,
            lines,
            json,
        } => agent_cmd::log(*follow, *lines, *json),
        Cmd::Lock { passphrase } => agent_cmd::lock(cli, &config, *passphrase),
        Cmd::Unlock => agent_cmd::unlock(cli, &config),
        Cmd::Watch { json } => agent_cmd::watch(cli, &config, *json),
        Cmd::Grant(args) => gateway_cmd::grant(cli, &config, args),
        Cmd::Refresh { name, dry_run } => agent_cmd::refresh(cli, &config, name, *dry_run),
        Cmd::Ssh(args) => ssh_cmd::run(cli, &config, args),
        Cmd::Usage { name, json } => agent_cmd::usage(cli, &config, name, *json),
        Cmd::Grants { json } => gateway_cmd::grants(cli, &config, *json),
        Cmd::Revoke { name } => gateway_cmd::revoke(cli, &config, name),
        Cmd::Snapshot(args) => deliver::snapshot(cli, config, args),
        Cmd::Exec(args) => deliver::exec(cli, config, args),
        Cmd::Provision(args) => deliver::provision(cli, config, args),
        Cmd::Cfauth(args) => cfauth::run(cli, config, args),
        _ => tokens::run(cli, config),
    }
}
