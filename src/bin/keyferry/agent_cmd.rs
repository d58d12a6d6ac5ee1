//! Agent commands: run it, install it as a login service, read its log, lock, watch.

use clap::Subcommand;
use keyferry::audit::{self, Audit};
use keyferry::client::{Client, ClientError};
use keyferry::config::Config;
use keyferry::domain::ErrorCode;
use keyferry::error::exit;
use keyferry::protocol::Event;
use keyferry::report::status_line;
use keyferry::service;

use crate::{term, Cli};

#[derive(Subcommand)]
pub enum AgentAction {
    /// Write a systemd user unit (Linux) or a LaunchAgent plist (macOS).
    Install,
    /// Remove it again.
    Uninstall,
}

pub fn agent(cli: &Cli, config: Config, action: Option<&AgentAction>) -> anyhow::Result<i32> {
    match action {
        None => {
            keyferry::agent::serve(config, cli.socket.as_deref())?;
        }
        Some(AgentAction::Install) => {
            let exe = std::env::current_exe()?;
            let path = service::install(&exe)?;
            eprintln!(
                "wrote {}\nstart it now with: {}",
                path.display(),
                service::enable_hint()
            );
        }
        Some(AgentAction::Uninstall) => {
            if service::uninstall()? {
                eprintln!("removed {}", service::unit_path().display());
            } else {
                eprintln!("{} was not installed", service::unit_path().display());
            }
        }
    }
    Ok(exit::OK)
}

fn client(cli: &Cli, config: &Config) -> anyhow::Result<Client> {
    let path = keyferry::agent::socket::path(cli.socket.as_deref(), config.agent.socket.as_deref());
    Ok(Client::connect(&path)?)
}

fn needs_passphrase(e: &ClientError) -> bool {
    matches!(e, ClientError::Refused(b) if b.code == ErrorCode::BadPassphrase)
}

pub fn log(follow: bool, lines: usize, json: bool) -> anyhow::Result<i32> {
    let path = Audit::default_path();
    let print = |a: &keyferry::domain::Access| {
        if json {
            println!("{}", serde_json::to_string(a).unwrap_or_default());
        } else {
            println!("{}", audit::line(a));
        }
    };
    for a in Audit::tail(&path, lines)? {
        print(&a);
    }
    if follow {
        Audit::follow(&path, print)?;
    }
    Ok(exit::OK)
}

pub fn lock(cli: &Cli, config: &Config, ask: bool) -> anyhow::Result<i32> {
    let passphrase = if ask {
        Some(term::read_secret(
            "Passphrase to unlock with (input hidden): ",
        )?)
    } else {
        None
    };
    client(cli, config)?.set_locked(true, passphrase)?;
    // Exactly what the lock covers, so no one mistakes it for a boundary (docs/protocol.md).
    eprintln!(
        "keyferry: agent locked: until `keyferry unlock` it refuses `get`, `snapshot`, `usage`, new grants and gateway requests\n\
         keyferry: not covered: files it already keeps current (snapshots, .env sinks) are still rewritten when the token changes, \
         and the keychain stays open: `keyferry get --no-agent` or any program of yours still reads it \
         (as `ssh -i` reads a key while `ssh-add -x` has the agent locked)"
    );
    Ok(exit::OK)
}

pub fn unlock(cli: &Cli, config: &Config) -> anyhow::Result<i32> {
    let mut c = client(cli, config)?;
    match c.set_locked(false, None) {
        Ok(_) => {}
        Err(e) if needs_passphrase(&e) => {
            let pass = term::read_secret("Passphrase (input hidden): ")?;
            c.set_locked(false, Some(pass))?;
        }
        Err(e) => return Err(e.into()),
    }
    eprintln!("keyferry: agent unlocked");
    Ok(exit::OK)
}

pub fn refresh(cli: &Cli, config: &Config, name: &str, dry_run: bool) -> anyhow::Result<i32> {
    let report = client(cli, config)?.call::<keyferry::protocol::RefreshReport>(
        keyferry::protocol::Request::Refresh {
            name: name.to_owned(),
            dry_run,
        },
    )?;
    eprintln!("keyferry: {}: {}", report.name, report.outcome);
    Ok(if report.needs_login {
        exit::ERROR
    } else {
        exit::OK
    })
}

pub fn usage(cli: &Cli, config: &Config, name: &str, json: bool) -> anyhow::Result<i32> {
    let u: keyferry::oauth::usage::Usage =
        client(cli, config)?.call(keyferry::protocol::Request::Usage {
            name: name.to_owned(),
        })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&u)?);
    } else {
        for l in u.lines() {
            println!("{name}: {l}");
        }
    }
    Ok(exit::OK)
}

pub fn watch(cli: &Cli, config: &Config, json: bool) -> anyhow::Result<i32> {
    let mut c = client(cli, config)?;
    c.watch()?;
    eprintln!(
        "keyferry: watching agent pid {} (Ctrl-C to stop)",
        c.hello.pid
    );
    loop {
        let event = c.next_event()?;
        if json {
            println!("{}", serde_json::to_string(&event)?);
            continue;
        }
        let text = match &event {
            Event::Changed { status } => format!("changed  {}", status_line(status)),
            Event::Expiring {
                name,
                expires_in,
                expires_at,
                ..
            } => {
                format!("expiring {name}: {expires_in} left (at {expires_at})")
            }
            Event::Expired { name, expires_at } => format!("expired  {name} at {expires_at}"),
            Event::Rerolled { name, fingerprint } => format!("rerolled {name} → {fingerprint}"),
            Event::Cleared { name } => format!("cleared  {name}"),
            Event::Locked => "locked".into(),
            Event::Unlocked => "unlocked".into(),
            Event::Access { access } => format!("access   {}", audit::line(access)),
            Event::Approval { approval } => format!(
                "approval #{}: {} wants {}",
                approval.request, approval.peer, approval.credential
            ),
            Event::SinkWritten { name, path } => format!("sink     {name} → {path}"),
            Event::SinkFailed { name, path, error } => {
                format!("sink     {name} → {path} FAILED: {}", error.message)
            }
            Event::Notified { summary, shown, .. } => {
                format!(
                    "notice   {summary}{}",
                    if *shown {
                        ""
                    } else {
                        " (no notification service)"
                    }
                )
            }
            Event::Refreshed {
                name,
                expires_at,
                followed_us,
            } => format!(
                "refreshed {name}: expires {expires_at}; every sink followed in {:.1} ms",
                *followed_us as f64 / 1000.0
            ),
            Event::NeedsLogin { name, message } => {
                format!("login    {name}: {message}; run `claude /login`")
            }
            Event::Lagged { missed } => format!("(missed {missed} events)"),
        };
        println!("{}", keyferry::escape::escape(&text));
    }
}
