//! Shell completions and man pages, generated from the clap definitions so they never drift
//! from the parser: `keyferry completions SHELL` and the hidden `keyferry man DIR` that the
//! packaging scripts run against the very binary they ship.

use std::io::Write;
use std::path::Path;

use anyhow::Context as _;
use clap::CommandFactory as _;
use clap_complete::Shell;

use crate::Cli;

/// Writes the completion script for `shell` to `out`.
pub fn completions(shell: Shell, out: &mut dyn Write) {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "keyferry", out);
}

/// Writes `keyferry.1` and one `keyferry-SUBCOMMAND.1` per visible subcommand into `dir`
/// (created if missing).
pub fn man_pages(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // Builds the tree once so every subcommand carries its `keyferry-sub` display name.
    cmd.build();
    write_pages(cmd, dir)
}

/// clap_mangen's own `generate_to`, with the conventional upper-case title.
fn write_pages(cmd: clap::Command, dir: &Path) -> anyhow::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
        write_pages(sub, dir)?;
    }
    let name = cmd
        .get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_owned();
    let path = clap_mangen::Man::new(cmd)
        .title(name.to_uppercase())
        .manual("Keyferry Manual")
        .source(format!("keyferry {}", env!("CARGO_PKG_VERSION")))
        .generate_to(dir)
        .with_context(|| format!("write the man page of {name} into {}", dir.display()))?;
    tracing::debug!(path = %path.display(), "man page written");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion(shell: Shell) -> String {
        let mut out = Vec::new();
        completions(shell, &mut out);
        String::from_utf8(out).expect("completion scripts are UTF-8")
    }

    #[test]
    fn bash_completion_offers_every_visible_subcommand() {
        let text = completion(Shell::Bash);
        assert!(text.contains("complete -F _keyferry"), "{text}");
        // The words offered after `keyferry`: the first `opts=` line that lists options.
        let top = text
            .lines()
            .find(|l| l.contains("opts=\"-h -V"))
            .unwrap_or_else(|| panic!("no top-level opts line:\n{text}"));
        let words: Vec<&str> = top.split(['"', ' ']).collect();
        let cmd = Cli::command();
        let visible: Vec<&str> = cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(clap::Command::get_name)
            .collect();
        assert!(visible.len() >= 10, "too few subcommands: {visible:?}");
        for name in ["setup", "status", "get", "snapshot", "agent", "completions"] {
            assert!(visible.contains(&name), "{name} is not a subcommand");
        }
        for name in visible {
            assert!(words.contains(&name), "bash completion lacks {name}: {top}");
            assert!(
                text.contains(&format!("keyferry,{name})")),
                "bash completion has no case for {name}"
            );
        }
    }

    #[test]
    fn zsh_and_fish_completions_name_the_program() {
        assert!(completion(Shell::Zsh).starts_with("#compdef keyferry"));
        let fish = completion(Shell::Fish);
        assert!(fish.contains("complete -c keyferry"), "{fish}");
        assert!(fish.contains("snapshot"), "{fish}");
    }

    #[test]
    fn man_pages_render_for_the_program_and_its_subcommands() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A directory that does not exist yet is created.
        let out = dir.path().join("man1");
        man_pages(&out).expect("man pages");
        let main = std::fs::read_to_string(out.join("keyferry.1")).expect("keyferry.1");
        assert!(main.contains(".TH KEYFERRY 1"), "{main}");
        assert!(main.contains("keyferry\\-snapshot(1)"), "{main}");
        let sub = std::fs::read_to_string(out.join("keyferry-snapshot.1")).expect("subpage");
        assert!(sub.contains(".TH KEYFERRY-SNAPSHOT 1"), "{sub}");
        assert!(
            !out.join("keyferry-man.1").exists(),
            "the hidden packaging subcommand got a page"
        );
    }

    #[test]
    fn man_pages_into_a_file_path_fail_with_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").expect("write");
        let err = man_pages(&file).expect_err("a file is not a directory");
        assert!(format!("{err:#}").contains("not-a-dir"), "{err:#}");
    }
}
