//! `keyferry ssh`: Claude on a remote machine, the token on the host — a grant for the
//! session, a reverse forward of the gateway, the two variables in a 0600 file sourced and
//! deleted on the remote, and the grant revoked when ssh exits.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use clap::Args;
use keyferry::config::Config;
use keyferry::gateway::NewGrant;
use keyferry::remote::{self, RemoteEnd};
use keyferry::{Error, Secret};

use crate::tokens::api;
use crate::Cli;

#[derive(Args)]
pub struct SshArgs {
    /// The credential the session spends.
    #[arg(long, value_name = "NAME", default_value = "claude")]
    cred: String,
    /// Name the grant (kept after the session); default: one per session, revoked at exit.
    #[arg(long, value_name = "NAME")]
    grant: Option<String>,
    /// The grant's lifetime, 1s to 366d (a session killed with -9 leaves it until then).
    #[arg(long, value_name = "DURATION", default_value = "12h", value_parser = crate::gateway_cmd::parse_ttl)]
    ttl: std::time::Duration,
    /// End the tunnel at this port of the remote's 127.0.0.1 (for clients that cannot use a
    /// Unix socket); default: a 0600 socket of the session's own, which no other Keyferry
    /// or user on the remote can hold.
    #[arg(long, value_name = "PORT")]
    remote_port: Option<u16>,
    /// The ssh program.
    #[arg(long, default_value = "ssh", value_name = "PATH")]
    ssh: String,
    /// DESTINATION and any ssh options, then `--` and the remote command (default: a login shell).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "DESTINATION [SSH_ARGS…] [-- COMMAND…]"
    )]
    rest: Vec<String>,
}

pub fn run(cli: &Cli, config: &Config, args: &SshArgs) -> anyhow::Result<i32> {
    let (ssh_args, command) = match args.rest.iter().position(|a| a == "--") {
        Some(i) => (&args.rest[..i], args.rest[i + 1..].to_vec()),
        None => (&args.rest[..], Vec::new()),
    };
    let session = format!("{}-{}", std::process::id(), keyferry::random::json_id()?);
    let ephemeral = args.grant.is_none();
    let name = args
        .grant
        .clone()
        .unwrap_or_else(|| format!("ssh-{session}"));
    let api = api(cli, config)?;
    let issued = api.grant(&NewGrant {
        name: name.clone(),
        credential: args.cred.clone(),
        ttl: args.ttl,
        max_concurrent: None,
        daily_token_budget: None,
    })?;
    let result = session_run(args, ssh_args, &command, &session, &issued);
    if ephemeral {
        if let Err(e) = api.revoke(&name) {
            crate::term::warn(&format!("could not revoke grant {name}: {}", e.message));
        }
    }
    result
}

fn session_run(
    args: &SshArgs,
    ssh_args: &[String],
    command: &[String],
    session: &str,
    issued: &keyferry::protocol::GrantIssued,
) -> anyhow::Result<i32> {
    let gateway = issued
        .base_url
        .strip_prefix("http://")
        .filter(|a| !a.starts_with("localhost"))
        .ok_or_else(|| {
            Error::Invalid(
                "the gateway listens on no TCP address to forward; add one to [gateway] listen"
                    .into(),
            )
        })?;
    let end = args
        .remote_port
        .map_or_else(|| RemoteEnd::socket_for(session), RemoteEnd::Port);
    let vars: Vec<(&str, Secret)> = end
        .variables()
        .into_iter()
        .map(|(k, v)| (k, Secret::new(v)))
        .collect();
    let mut block_vars: Vec<(&str, &Secret)> = vars.iter().map(|(k, v)| (*k, v)).collect();
    block_vars.push(("ANTHROPIC_AUTH_TOKEN", &issued.placeholder.0));
    let block = remote::env_block(&block_vars);
    // 1: the env file, over stdin.
    let mut writer = Command::new(&args.ssh)
        .args(ssh_args)
        .arg(remote::writer_command(session))
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Invalid(format!("cannot run {}: {e}", args.ssh)))?;
    if let Some(mut stdin) = writer.stdin.take() {
        stdin.write_all(block.expose().as_bytes())?;
    }
    let wrote = writer.wait()?;
    if !wrote.success() {
        anyhow::bail!(
            "ssh could not write the session's environment on the remote (exit {:?})",
            wrote.code()
        );
    }
    // 2: the session, with the tunnel. ssh's stderr is relayed, and read for a failed forward.
    let interactive = command.is_empty();
    let mut cmd = Command::new(&args.ssh);
    cmd.args([
        "-o",
        "ExitOnForwardFailure=yes",
        "-R",
        &end.forward_spec(gateway),
    ]);
    if interactive {
        cmd.arg("-t");
    }
    cmd.args(ssh_args)
        .arg(remote::session_command(session, command, &end))
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Invalid(format!("cannot run {}: {e}", args.ssh)))?;
    let stderr = child.stderr.take();
    let relay = std::thread::spawn(move || {
        let mut fix = None;
        if let Some(s) = stderr {
            for line in BufReader::new(s).lines().map_while(Result::ok) {
                eprintln!("{line}");
                fix = fix.or_else(|| remote::forward_failure_fix(&line));
            }
        }
        fix
    });
    let status = child.wait()?;
    let fix = relay.join().ok().flatten();
    // 255: ssh itself failed, so the session may never have sourced (and deleted) the file.
    if fix.is_some() || status.code() == Some(255) {
        let socket = match &end {
            RemoteEnd::Socket(p) => format!(" '{p}'"),
            RemoteEnd::Port(_) => String::new(),
        };
        let _ = Command::new(&args.ssh)
            .args(ssh_args)
            .arg(format!(
                "rm -f \"$HOME/{}\"{socket}",
                remote::env_file(session)
            ))
            .stdin(Stdio::null())
            .status();
    }
    if let Some(fix) = fix {
        eprintln!("keyferry: {fix}");
        return Ok(keyferry::error::exit::ERROR);
    }
    Ok(status.code().unwrap_or(keyferry::error::exit::ERROR))
}
