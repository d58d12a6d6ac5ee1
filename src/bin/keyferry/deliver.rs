//! Delivery commands: `snapshot`, `exec` (with its pre-launch audit) and `provision`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::Args;
use keyferry::api::Api;
use keyferry::broker::Broker;
use keyferry::config::Config;
use keyferry::error::exit;
use keyferry::launch::{Injection, Mount, Plan, Reveal, FORWARD};
use keyferry::provision::{self, Block};
use keyferry::{Error, Secret};

use crate::tokens::{api, serve};
use crate::Cli;

#[derive(Args)]
#[command(
    override_usage = "keyferry snapshot [NAME] --out <PATH> [--mkdir] [--include-refresh-token]\n       \
                  keyferry snapshot --forget <PATH>"
)]
pub struct SnapshotArgs {
    /// Credential name.
    #[arg(default_value = "claude")]
    name: String,
    /// Where to write it (file-scoped mount source).
    #[arg(long, value_name = "PATH", required_unless_present = "forget")]
    out: Option<PathBuf>,
    /// Keep the refresh token in it (only for a single sandbox that must own the login).
    #[arg(long)]
    include_refresh_token: bool,
    /// Create the missing folders on the way to --out (0700); without it a missing folder
    /// is refused, naming it.
    #[arg(long, requires = "out")]
    mkdir: bool,
    /// Stop keeping the snapshot at PATH current.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["out", "include_refresh_token"])]
    forget: Option<PathBuf>,
}

#[derive(Args)]
pub struct ExecArgs {
    /// Credentials to inject (repeatable; default claude).
    #[arg(long = "cred", value_name = "NAME")]
    creds: Vec<String>,
    /// Extra variables for the command (repeatable).
    #[arg(long = "env", value_name = "K=V", value_parser = parse_kv)]
    extra: Vec<(String, String)>,
    /// Start from an empty environment plus PATH, HOME, USER, LANG, TERM…
    #[arg(long)]
    clean_env: bool,
    /// Write a snapshot of the first credential to PATH before launching (kept current by a running agent).
    #[arg(long, value_name = "PATH")]
    snapshot: Vec<PathBuf>,
    /// Give the command a gateway grant instead of the token: ANTHROPIC_BASE_URL and a
    /// placeholder ANTHROPIC_AUTH_TOKEN. Without --grant, the grant lasts as long as CMD.
    #[arg(long, conflicts_with = "snapshot")]
    gateway: bool,
    /// Create (or replace) this named grant and keep it after CMD exits.
    #[arg(long, value_name = "NAME", requires = "gateway")]
    grant: Option<String>,
    /// The grant's lifetime, 1s to 366d: 30m, 1h30m, 8h.
    #[arg(long, value_name = "DURATION", default_value = "8h", value_parser = crate::gateway_cmd::parse_ttl, requires = "gateway")]
    ttl: std::time::Duration,
    /// Print the audit and exit without running anything.
    #[arg(long)]
    dry_run: bool,
    /// Print the audit before running (default when stderr is a terminal).
    #[arg(long, conflicts_with = "quiet")]
    audit: bool,
    /// Never print the audit.
    #[arg(long)]
    quiet: bool,
    /// The command, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

#[derive(Args)]
pub struct ProvisionArgs {
    /// The transport that runs `sh` in the sandbox, e.g. 'ssh host sh' or 'docker exec -i CTR sh'.
    #[arg(long, value_name = "COMMAND")]
    via: String,
    /// Credentials to export (repeatable; default claude).
    #[arg(long = "cred", value_name = "NAME")]
    creds: Vec<String>,
    /// Marker name: `# NAME` … `# end-NAME` (use cf-claude-auth to adopt cf's block).
    #[arg(long, value_name = "NAME")]
    marker: Option<String>,
    /// The rc file in the sandbox.
    #[arg(long, value_name = "PATH", default_value = "~/.bashrc")]
    rc: String,
    /// Remove the block instead.
    #[arg(long)]
    remove: bool,
    /// Write a gateway grant (ANTHROPIC_BASE_URL and a placeholder) instead of the token.
    #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "")]
    gateway: Option<String>,
    /// The grant's lifetime (with --gateway), 1s to 366d.
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = crate::gateway_cmd::parse_ttl)]
    ttl: std::time::Duration,
    /// Show the transport and the (masked) block without running anything.
    #[arg(long)]
    dry_run: bool,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not K=V"))
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    })
}

pub fn snapshot(cli: &Cli, config: Config, args: &SnapshotArgs) -> anyhow::Result<i32> {
    let api = api(cli, &config)?;
    if let Some(path) = &args.forget {
        let path = absolute(path)?;
        let kept = keyferry::sink::owner(&config.sinks, &path);
        if api.forget(&path)? {
            match kept {
                // A registration from before the [[sink]] was added: the sink goes on.
                Some(t) => eprintln!(
                    "keyferry: forgot the snapshot registered at {}; the [[sink]] for {:?} in {} still keeps it current",
                    path.display(),
                    t.credential,
                    keyferry::paths::display(&config.path)
                ),
                None => eprintln!(
                    "keyferry: the agent no longer updates {} (the file is left as it is)",
                    path.display()
                ),
            }
        } else {
            eprintln!("keyferry: {} was not registered", path.display());
        }
        return Ok(exit::OK);
    }
    let path = absolute(args.out.as_deref().expect("clap requires --out"))?;
    if !args.mkdir {
        keyferry::safe_file::require_folder(&path, Some("--mkdir")).map_err(Error::from)?;
    }
    write_snapshot(&api, &args.name, &path, args.include_refresh_token)?;
    Ok(exit::OK)
}

fn write_snapshot(
    api: &Api,
    name: &str,
    path: &Path,
    include_refresh_token: bool,
) -> anyhow::Result<()> {
    if include_refresh_token {
        crate::term::warn(
            "the snapshot includes the refresh token: only one party may refresh a login, so the host's Claude Code and this sandbox will log each other out if both refresh",
        );
    }
    if api.snapshot(name, path, include_refresh_token)? {
        eprintln!("keyferry: wrote {} ({name}); the agent keeps it current until `keyferry snapshot --forget {}`", path.display(), path.display());
    } else {
        eprintln!(
            "keyferry: wrote {} ({name}); no agent is running, so it will not follow token changes",
            path.display()
        );
    }
    Ok(())
}

pub fn exec(cli: &Cli, config: Config, args: &ExecArgs) -> anyhow::Result<i32> {
    let creds = if args.creds.is_empty() {
        vec!["claude".to_owned()]
    } else {
        args.creds.clone()
    };
    let b = Broker::new(config);
    if args.gateway {
        return exec_gateway(cli, &b, args, &creds[0]);
    }
    let mut injections = Vec::new();
    for name in &creds {
        let s = serve(cli, &b, name)?;
        injections.push(Injection {
            name: name.clone(),
            var: s.env_var,
            token: s.token.0,
            origin: s.source,
            reveal: Reveal::Masked,
        });
    }
    let mut snapshots = Vec::new();
    for path in &args.snapshot {
        let path = absolute(path)?;
        // As `snapshot` without --mkdir: a typo in a mount path never grows folders.
        keyferry::safe_file::require_folder(&path, None).map_err(Error::from)?;
        if !args.dry_run {
            write_snapshot(&api(cli, &b.config)?, &creds[0], &path, false)?;
        }
        snapshots.push(Mount {
            source: path.display().to_string(),
            target: format!("(snapshot of {}, no refresh token)", creds[0]),
            mode: "kept current by the agent",
        });
    }
    let host: Vec<(String, String)> = std::env::vars().collect();
    let extra = args
        .extra
        .iter()
        .map(|(k, v)| (k.clone(), Secret::new(v.clone())))
        .collect();
    let plan = Plan::build(
        args.command.clone(),
        injections,
        extra,
        args.clean_env,
        &host,
        snapshots,
    );
    if print_audit(&plan, args, "nothing was started") {
        return Ok(exit::OK);
    }
    Err(Error::from(plan.exec()).into())
}

/// Prints the pre-launch audit when asked (or on a terminal); true for a dry run, which
/// then ends here.
fn print_audit(plan: &Plan, args: &ExecArgs, dry_run_note: &str) -> bool {
    let stderr_tty = std::io::stderr().is_terminal();
    let color = stderr_tty && std::env::var_os("NO_COLOR").is_none();
    if args.dry_run || args.audit || (stderr_tty && !args.quiet) {
        eprint!("{}", plan.audit(color));
    }
    if args.dry_run {
        eprintln!("\n(dry run: {dry_run_note})");
    }
    args.dry_run
}

/// `exec --gateway`: the command gets a grant's base URL and placeholder, never the token.
/// An ephemeral grant (no `--grant`) is revoked as soon as the command exits, so the
/// command is run as a child and waited for rather than exec'd.
fn exec_gateway(cli: &Cli, b: &Broker, args: &ExecArgs, cred: &str) -> anyhow::Result<i32> {
    let ephemeral = args.grant.is_none();
    let name = args
        .grant
        .clone()
        .unwrap_or_else(|| format!("exec-{}", std::process::id()));
    let spec = keyferry::gateway::NewGrant {
        name: name.clone(),
        credential: cred.to_owned(),
        ttl: args.ttl,
        max_concurrent: None,
        daily_token_budget: None,
    };
    let api = api(cli, &b.config)?;
    // A dry run makes no grant: both values are descriptions, shown as they are rather
    // than masked into something that looks like a cut token.
    let (base_url, placeholder, placeholder_reveal) = if args.dry_run {
        (
            "(the gateway's address, known at launch)".to_owned(),
            Secret::new("(a kfg_ placeholder, made at launch)".into()),
            Reveal::InFull,
        )
    } else {
        let issued = api.grant(&spec)?;
        (issued.base_url, issued.placeholder.0, Reveal::Masked)
    };
    let lifetime = if ephemeral {
        "revoked when the command exits"
    } else {
        "kept until it expires or is revoked"
    };
    let injections = vec![
        Injection {
            name: cred.to_owned(),
            var: "ANTHROPIC_AUTH_TOKEN".into(),
            token: placeholder,
            origin: format!(
                "gateway grant {name}, a placeholder ({lifetime}); the token stays on the host"
            ),
            reveal: placeholder_reveal,
        },
        // Not a secret, and the first thing to check when a sandbox cannot reach the API.
        Injection {
            name: cred.to_owned(),
            var: "ANTHROPIC_BASE_URL".into(),
            token: Secret::new(base_url),
            origin: format!("gateway grant {name}, the gateway's address"),
            reveal: Reveal::InFull,
        },
    ];
    let extra: Vec<(String, Secret)> = args
        .extra
        .iter()
        .map(|(k, v)| (k.clone(), Secret::new(v.clone())))
        .collect();
    let host: Vec<(String, String)> = std::env::vars().collect();
    let plan = Plan::build(
        args.command.clone(),
        injections,
        extra,
        args.clean_env,
        &host,
        Vec::new(),
    );
    if print_audit(&plan, args, "nothing was started and no grant was made") {
        return Ok(exit::OK);
    }
    if !ephemeral {
        return Err(Error::from(plan.exec()).into());
    }
    let status = plan.run();
    if let Err(e) = api.revoke(&name) {
        crate::term::warn(&format!("could not revoke grant {name}: {}", e.message));
    }
    let status = status.map_err(Error::from)?;
    Ok(status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        128 + status.signal().unwrap_or(0)
    }))
}

pub fn provision(cli: &Cli, config: Config, args: &ProvisionArgs) -> anyhow::Result<i32> {
    let creds = if args.creds.is_empty() {
        vec!["claude".to_owned()]
    } else {
        args.creds.clone()
    };
    let marker = args
        .marker
        .clone()
        .unwrap_or_else(|| match creds.as_slice() {
            [one] => format!("keyferry-{one}-auth"),
            _ => "keyferry-auth".to_owned(),
        });
    let transport = provision::transport(&args.via).map_err(Error::from)?;
    let mut exports = Vec::new();
    if let (Some(grant), false) = (&args.gateway, args.remove) {
        // The block holds the gateway's address and a placeholder, never the token.
        let name = if grant.is_empty() {
            marker.clone()
        } else {
            grant.clone()
        };
        let spec = keyferry::gateway::NewGrant {
            name,
            credential: creds[0].clone(),
            ttl: args.ttl,
            max_concurrent: None,
            daily_token_budget: None,
        };
        if args.dry_run {
            exports.push((
                "ANTHROPIC_BASE_URL".to_owned(),
                Secret::new("(the gateway's address)".into()),
            ));
            exports.push((
                "ANTHROPIC_AUTH_TOKEN".to_owned(),
                Secret::new("kfg_(made at run)".into()),
            ));
        } else {
            let issued = api(cli, &config)?.grant(&spec)?;
            exports.push((
                "ANTHROPIC_BASE_URL".to_owned(),
                Secret::new(issued.base_url.clone()),
            ));
            exports.push(("ANTHROPIC_AUTH_TOKEN".to_owned(), issued.placeholder.0));
            eprintln!(
                "keyferry: grant {} on {} until {}; the sandbox gets a placeholder, the token stays on the host",
                issued.grant.name, issued.grant.credential, issued.grant.expires
            );
        }
        if let Ok(v) = std::env::var("ANTHROPIC_CUSTOM_HEADERS") {
            exports.push(("ANTHROPIC_CUSTOM_HEADERS".to_owned(), Secret::new(v)));
        }
    } else if !args.remove {
        let b = Broker::new(config);
        for name in &creds {
            let s = serve(cli, &b, name)?;
            exports.push((s.env_var, s.token.0));
        }
        for k in FORWARD {
            if let Ok(v) = std::env::var(k) {
                exports.push((k.to_owned(), Secret::new(v)));
            }
        }
    }
    let block = Block { marker, exports };
    if args.dry_run {
        eprintln!("would run: {}", transport.join(" "));
        if args.remove {
            eprintln!("and remove the # {} block from {}", block.marker, args.rc);
        } else {
            eprintln!(
                "with this block in {} (values masked):\n{}",
                args.rc,
                block.preview()
            );
        }
        return Ok(exit::OK);
    }
    let script = provision::script(&args.rc, &block, args.remove);
    provision::run(&transport, &script).map_err(Error::from)?;
    Ok(exit::OK)
}
