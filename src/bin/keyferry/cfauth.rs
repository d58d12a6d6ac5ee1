//! `cfauth` (a link to `keyferry`) and `keyferry cfauth …`: cf's token helper, in cf's
//! words, served like every other command — through a running agent, else the sources.

use std::ffi::OsString;
use std::io::{BufRead as _, Write as _};

use clap::Args;
use keyferry::broker::Broker;
use keyferry::cfauth::{self, Command, CREDENTIAL};
use keyferry::config::Config;
use keyferry::domain::{ErrorBody, ErrorCode};
use keyferry::error::exit;
use keyferry::protocol::Token;
use keyferry::Error;

use crate::tokens::{api, serve};
use crate::{term, Cli};

#[derive(Args)]
#[command(disable_help_flag = true)]
pub struct CfauthArgs {
    /// setup | reroll | status | clear | get | install [DIR]
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    args: Vec<OsString>,
}

pub fn run(cli: &Cli, config: Config, args: &CfauthArgs) -> anyhow::Result<i32> {
    let Ok(cmd) = Command::parse(&args.args) else {
        eprintln!("{}", cfauth::USAGE);
        return Ok(exit::USAGE);
    };
    let b = Broker::new(config);
    let result = match cmd {
        Command::Status => lookup(cli, &b).map(|t| {
            println!("{}", cfauth::source_line(&t.source));
        }),
        Command::Get => lookup(cli, &b).and_then(|t| {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", t.token.0.expose())?;
            Ok(())
        }),
        Command::Setup => prompt_and_store(cli, &b),
        Command::Reroll => {
            eprintln!("{}", cfauth::REVOKE_REMINDER);
            if term::interactive() {
                eprint!("{}", cfauth::REVOKED_PROMPT);
                std::io::stderr().flush()?;
                std::io::stdin().lock().read_line(&mut String::new())?;
            }
            prompt_and_store(cli, &b)
        }
        Command::Clear => api(cli, &b.config)
            .and_then(|a| Ok(a.clear(CREDENTIAL)?))
            .map(|cleared| {
                if cleared {
                    println!("{}", cfauth::CLEARED);
                } else {
                    println!("{}", cfauth::NOTHING_TO_CLEAR);
                }
            }),
        Command::Install(dir) => {
            let dir = dir.unwrap_or_else(cfauth::default_dir);
            let exe = std::env::current_exe()?;
            let done = match cfauth::install(&dir, &exe) {
                Ok(done) => done,
                Err(e) => {
                    eprintln!("cfauth: {e}");
                    return Ok(exit::ERROR);
                }
            };
            println!("{done}");
            if !cfauth::on_path(&dir, std::env::var_os("PATH").as_deref()) {
                eprintln!(
                    "cfauth: note: {} is not on your PATH; add it so `cf` finds cfauth",
                    dir.display()
                );
            }
            Ok(())
        }
        Command::Help => {
            print!("{}", cfauth::HELP);
            Ok(())
        }
    };
    Ok(result.map_or_else(|e| fail(&e), |()| exit::OK))
}

/// The token cf would use: the `claude` chain (cf's order by default), through the agent
/// when one runs, except Claude Code's own login.
fn lookup(cli: &Cli, b: &Broker) -> anyhow::Result<Token> {
    let t = serve(cli, b, CREDENTIAL)?;
    if !cfauth::cf_may_use(&t.source) {
        return Err(ErrorBody::new(
            ErrorCode::NotFound,
            format!("only {} holds a token, and cf does not use it", t.source),
        )
        .into());
    }
    Ok(t)
}

fn prompt_and_store(cli: &Cli, b: &Broker) -> anyhow::Result<()> {
    let token = term::read_secret(cfauth::PROMPT)?;
    if token.is_empty() {
        anyhow::bail!("no token given; nothing was changed");
    }
    let api = api(cli, &b.config)?;
    api.store(CREDENTIAL, token)?;
    let place = b.spec(CREDENTIAL)?.store.map_or_else(
        || "the keychain".to_owned(),
        |i| format!("keychain:{}", i.service),
    );
    println!("{}", cfauth::stored_line(&place));
    // cf's order puts the environment first: say so when it hides what was just stored.
    if let Ok(Some(found)) = b.env_override(CREDENTIAL) {
        eprintln!(
            "cf auth: warning: {} takes precedence over the stored token; unset it to use the new one",
            found.resolved.origin
        );
    }
    Ok(())
}

/// Prints a failure in cf's voice; not found is the soft failure, with the chain's warnings
/// (the 644 token file) first.
fn fail(e: &anyhow::Error) -> i32 {
    let code = if let Some(err) = e.downcast_ref::<Error>() {
        for w in err.warnings() {
            term::warn(w);
        }
        err.code()
    } else if let Some(err) = e.downcast_ref::<ErrorBody>() {
        err.code.clone()
    } else if let Some(err) = e.downcast_ref::<keyferry::client::ClientError>() {
        err.code()
    } else {
        eprintln!("cf auth: {e:#}");
        return exit::ERROR;
    };
    // A skipped 644 file is cf's soft failure too: it warns, skips, and finds nothing.
    if code == ErrorCode::NotFound || code == ErrorCode::UnsafeFile {
        eprintln!("{}", cfauth::NOT_FOUND);
        return ErrorCode::NotFound.exit_status();
    } else {
        eprintln!("cf auth: {e}");
    }
    code.exit_status()
}
