//! `keyferry doctor`: prints the library's checks (`keyferry::doctor`) as a table or JSON.

use std::time::Duration;

use keyferry::agent::socket;
use keyferry::config::Config;
use keyferry::doctor::{self, Context, State};

use crate::Cli;

/// How long each `claude/codex/gemini --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

pub fn run(cli: &Cli, json: bool) -> anyhow::Result<i32> {
    let env = |k: &str| std::env::var(k).ok();
    let loaded = match &cli.config {
        Some(p) => Config::load_from(p),
        None => Config::load(),
    };
    let (config, config_error) = match &loaded {
        Ok(c) => (c.clone(), None),
        Err(e) => (Config::default(), Some(e)),
    };
    let report = doctor::run(&Context {
        config: &config,
        config_error,
        socket: socket::path(cli.socket.as_deref(), config.agent.socket.as_deref()),
        env: &env,
        version_timeout: VERSION_TIMEOUT,
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let width = report
            .checks
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(0);
        for c in &report.checks {
            let mark = match c.state {
                State::Ok => "ok",
                State::Skip => "--",
                State::Warn => "WARN",
                State::Fail => "FAIL",
            };
            println!("{mark:<5} {:<width$}  {}", c.name, c.detail);
            if let Some(fix) = &c.fix {
                println!("{:<w$}fix: {fix}", "", w = width + 8);
            }
        }
        let failed = report
            .checks
            .iter()
            .filter(|c| c.state == State::Fail)
            .count();
        if failed == 0 {
            println!("\nNo problems found.");
        } else {
            println!("\n{failed} problem(s) found; each line marked FAIL says how to fix it.");
        }
    }
    Ok(report.exit_status())
}
