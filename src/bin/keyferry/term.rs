//! Terminal interaction: hidden prompts, yes/no questions, warnings.

use std::io::{IsTerminal, Read, Write};

use anyhow::Context as _;
use keyferry::Secret;

pub fn warn(w: &str) {
    let w = &*keyferry::escape::escape(w);
    // cfauth's permission warning is printed verbatim, and so is the `fix: …` under it;
    // everything else is ours.
    if w.starts_with("cf: ") || w.starts_with(keyferry::broker::FIX_PREFIX) {
        eprintln!("{w}");
    } else {
        eprintln!("keyferry: warning: {w}");
    }
}

pub fn interactive() -> bool {
    std::io::stdin().is_terminal()
}

/// A secret from the terminal without echo, or from stdin when piped.
pub fn read_secret(prompt: &str) -> anyhow::Result<Secret> {
    let raw = if interactive() {
        rpassword::prompt_password(prompt).context("reading from the terminal")?
    } else {
        let mut buf = String::new();
        std::io::stdin()
            .take(64 * 1024)
            .read_to_string(&mut buf)
            .context("reading from stdin")?;
        buf
    };
    Ok(Secret::from_trimmed(raw))
}

pub fn confirm(question: &str) -> anyhow::Result<bool> {
    eprint!("{question} [Y/n] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(!matches!(answer.trim(), "n" | "N" | "no" | "No"))
}
