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

/// The heading global flags are listed under in every `--help`, apart from the command's own.
const GLOBAL: &str = "Global options";

#[derive(Parser)]
#[command(
    name = "keyferry",
    version,
    about = "Keeps AI CLI tokens in the OS keychain and ferries them into sandboxes"
)]
pub struct Cli {
    /// Config file (default: ~/.config/keyferry/config.toml; env KEYFERRY_CONFIG).
    #[arg(long, global = true, help_heading = GLOBAL, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Agent socket (env KEYFERRY_SOCK).
    #[arg(long, global = true, help_heading = GLOBAL, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Never use a running agent; read the sources directly (`keyferry lock` does not stop
    /// this: the lock is the agent's, the keychain stays open).
    #[arg(long, global = true, help_heading = GLOBAL, conflicts_with = "require_agent")]
    pub no_agent: bool,
    /// Fail (exit 5) unless a running agent answers.
    #[arg(long, global = true, help_heading = GLOBAL)]
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
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove the stored token from the keychain.
    Clear(Name),
    /// Print only the token, for pipes.
    Get {
        #[command(flatten)]
        name: Name,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Inspect a token: kind, masked value, expiry, plan, scopes, fingerprint.
    Show {
        #[command(flatten)]
        name: Name,
        /// Print JSON instead of text.
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
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Make the agent refuse tokens until `keyferry unlock`, like `ssh-add -x`: `get`,
    /// `snapshot`, `usage`, new grants and gateway requests. Not covered: sinks it already
    /// keeps current, and the keychain itself (`--no-agent` reads it directly).
    Lock {
        /// Ask for a passphrase that `unlock` must repeat.
        #[arg(long)]
        passphrase: bool,
    },
    /// Serve tokens again after `lock`.
    Unlock,
    /// Create (or replace) a gateway grant: prints what the credential's CLI needs in a
    /// sandbox (ANTHROPIC_BASE_URL and ANTHROPIC_AUTH_TOKEN for Claude Code; Codex and Gemini
    /// get theirs), a placeholder in place of the token, which stays on the host.
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
        /// Credential name.
        #[arg(default_value = "claude")]
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List gateway grants with their usage.
    Grants {
        /// Print JSON instead of text.
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
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// cf's token helper: setup, reroll, status, clear, get; `install [DIR]` links `cfauth`.
    Cfauth(cfauth::CfauthArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages into DIR (for packagers).
    #[command(hide = true)]
    Man {
        /// Where to write them (created if missing).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Check everything that could be set up wrong and say how to fix it (exit 1 if broken).
    Doctor {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    keyferry::panic::install_redacting_hook("keyferry");
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
    // The agent's log is a daemon's: what it listens on, what changed. Other commands
    // print only warnings.
    init_logging(if matches!(cli.cmd, Cmd::Agent { action: None }) {
        "info"
    } else {
        "warn"
    });
    let code = match run(&cli) {
        Ok(code) => code,
        Err(e) => report(&e),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Prints an error once, with the warnings it carries; returns its exit status.
fn report(e: &anyhow::Error) -> i32 {
    if let Some(err) = e.downcast_ref::<Error>() {
        for w in err.warnings() {
            term::warn(w);
        }
        if let Error::NotFound { .. } = err {
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

fn init_logging(default_level: &str) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colour codes only for a person at a terminal: a journal, a file or a pipe gets plain
    // text (and NO_COLOR is honoured, https://no-color.org).
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").map_or(true, |v| v.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_target(false)
        .try_init();
}

pub fn load_config(cli: &Cli) -> Result<Config, Error> {
    Ok(match &cli.config {
        Some(p) => Config::load_named(p, keyferry::config::NamedBy::Flag)?,
        None => Config::load()?,
    })
}

/// How a command uses the agent, which decides the global flags that mean something to it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AgentRole {
    /// Through a running agent, else the sources: every global flag applies.
    Either,
    /// Only ever through the agent: `--no-agent` cannot be honoured.
    Only,
    /// It is the agent: it is nobody's client.
    IsAgent,
    /// Reads a file the agent writes (the audit log), never asks the agent.
    ReadsFile,
    /// Prints documentation: no global flag means anything.
    Docs,
}

/// The global flags, to say which one is out of place.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Global {
    Config,
    Socket,
    NoAgent,
    RequireAgent,
}

impl Global {
    fn flag(self) -> &'static str {
        match self {
            Self::Config => "--config",
            Self::Socket => "--socket",
            Self::NoAgent => "--no-agent",
            Self::RequireAgent => "--require-agent",
        }
    }
}

impl AgentRole {
    /// Whether `flag` means something to a command of this role.
    fn takes(self, flag: Global) -> bool {
        match self {
            Self::Either => true,
            Self::Only => flag != Global::NoAgent,
            Self::IsAgent | Self::ReadsFile => {
                matches!(flag, Global::Config | Global::Socket)
            }
            Self::Docs => false,
        }
    }

    fn why_not(self) -> &'static str {
        match self {
            Self::Only => "it only ever talks to a running agent",
            Self::IsAgent => "it is the agent",
            Self::ReadsFile => "it reads the audit log file, not the agent",
            Self::Docs | Self::Either => "it reads no config and talks to no agent",
        }
    }
}

impl Cmd {
    /// Its name as typed, and how it uses the agent.
    fn agent_role(&self) -> (&'static str, AgentRole) {
        use AgentRole::{Docs, Either, IsAgent, Only, ReadsFile};
        match self {
            Self::Setup(_) => ("setup", Either),
            Self::Reroll(_) => ("reroll", Either),
            Self::Status { .. } => ("status", Either),
            Self::Clear(_) => ("clear", Either),
            Self::Get { .. } => ("get", Either),
            Self::Show { .. } => ("show", Either),
            Self::Export(_) => ("export", Either),
            Self::Snapshot(_) => ("snapshot", Either),
            Self::Exec(_) => ("exec", Either),
            Self::Provision(_) => ("provision", Either),
            Self::Grant(_) => ("grant", Either),
            Self::Grants { .. } => ("grants", Either),
            Self::Revoke { .. } => ("revoke", Either),
            Self::Ssh(_) => ("ssh", Either),
            Self::Cfauth(_) => ("cfauth", Either),
            Self::Doctor { .. } => ("doctor", Either),
            Self::Lock { .. } => ("lock", Only),
            Self::Unlock => ("unlock", Only),
            Self::Refresh { .. } => ("refresh", Only),
            Self::Usage { .. } => ("usage", Only),
            Self::Watch { .. } => ("watch", Only),
            Self::Agent { .. } => ("agent", IsAgent),
            Self::Log { .. } => ("log", ReadsFile),
            Self::Completions { .. } => ("completions", Docs),
            Self::Man { .. } => ("man", Docs),
        }
    }
}

/// The first global flag given that means nothing to the command, and why (a usage error:
/// a flag silently ignored reads as one obeyed).
fn pointless_global(cli: &Cli) -> Option<String> {
    let (name, role) = cli.cmd.agent_role();
    let given = [
        (Global::Config, cli.config.is_some()),
        (Global::Socket, cli.socket.is_some()),
        (Global::NoAgent, cli.no_agent),
        (Global::RequireAgent, cli.require_agent),
    ];
    let (flag, _) = given
        .into_iter()
        .find(|(flag, on)| *on && !role.takes(*flag))?;
    Some(format!(
        "{} means nothing to `keyferry {name}`: {}; leave it out",
        flag.flag(),
        role.why_not()
    ))
}

fn run(cli: &Cli) -> anyhow::Result<i32> {
    if let Some(msg) = pointless_global(cli) {
        <Cli as clap::CommandFactory>::command()
            .error(clap::error::ErrorKind::ArgumentConflict, msg)
            .exit();
    }
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Every subcommand and every argument of every subcommand (hidden ones too: a packager
    /// reads `man --help`), with an empty description named by its path.
    fn undescribed(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        let blank = |s: Option<&clap::builder::StyledStr>| {
            s.map_or(true, |s| s.to_string().trim().is_empty())
        };
        if blank(cmd.get_about()) {
            out.push(format!("{path}: no about"));
        }
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            if blank(arg.get_help()) && blank(arg.get_long_help()) {
                out.push(format!("{path} {id}: no help"));
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.get_name() == "help" {
                continue;
            }
            undescribed(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_subcommand_and_flag_is_described() {
        let mut missing = Vec::new();
        undescribed(&Cli::command(), "keyferry", &mut missing);
        assert!(missing.is_empty(), "undescribed:\n{}", missing.join("\n"));
    }

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    /// One value name per concept: a credential is `NAME` wherever `--cred` takes one.
    #[test]
    fn cred_takes_a_name_everywhere() {
        fn walk(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                if arg.get_long() == Some("cred") {
                    let names: Vec<&str> = arg
                        .get_value_names()
                        .map(|v| v.iter().map(|s| s.as_str()).collect())
                        .unwrap_or_default();
                    if names != ["NAME"] {
                        out.push(format!("{path} --cred <{}>", names.join(" ")));
                    }
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), out);
            }
        }
        let mut odd = Vec::new();
        walk(&Cli::command(), "keyferry", &mut odd);
        assert!(odd.is_empty(), "--cred without <NAME>:\n{}", odd.join("\n"));
    }
}
