//! `keyferry doctor`: prints the library's checks (`keyferry::doctor`) as a table or JSON.

use keyferry::doctor::{self, State};
use keyferry::escape::escape;

use crate::Cli;

pub fn run(cli: &Cli, json: bool) -> anyhow::Result<i32> {
    let report = doctor::check(cli.config.as_deref(), cli.socket.as_deref());
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
            println!(
                "{mark:<5} {:<width$}  {}",
                escape(&c.name),
                escape(&c.detail)
            );
            if let Some(fix) = &c.fix {
                println!("{:<w$}fix: {}", "", escape(fix), w = width + 8);
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
