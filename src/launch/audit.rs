//! The pre-launch audit's text (seed 001): every variable with its origin, masked; what
//! was removed; then the mounts, the network and the command.

use std::fmt::Write as _;

use super::{Origin, Plan, Reveal};
use crate::credential::mask;

impl Origin {
    fn prefix(self) -> &'static str {
        match self {
            Self::Generated => "[~]",
            Self::Forwarded => "[>]",
            Self::Extra => "[+]",
        }
    }
    fn color(self) -> &'static str {
        match self {
            Self::Generated => "\x1b[32m",
            Self::Forwarded => "\x1b[33m",
            Self::Extra => "\x1b[36m",
        }
    }
}

impl Plan {
    /// The pre-launch audit (seed 001): one variable list with `[~]`/`[>]`/`[+]`, every value
    /// masked, then Mounts and Network. Colour only adds to the prefixes, never replaces them.
    #[must_use]
    pub fn audit(&self, color: bool) -> String {
        let (bold, reset) = if color {
            ("\x1b[1m", "\x1b[0m")
        } else {
            ("", "")
        };
        let mut out = format!("{bold}=== Sandbox Environment ==={reset}\n");
        let order = [Origin::Generated, Origin::Forwarded, Origin::Extra];
        for origin in order {
            for v in self.vars.iter().filter(|v| v.origin == origin) {
                let prefix = if color {
                    format!("{}{}{reset}", origin.color(), origin.prefix())
                } else {
                    origin.prefix().to_owned()
                };
                if v.key == "PATH" {
                    let _ = writeln!(out, " {prefix} PATH=");
                    for entry in v.value.expose().split(':') {
                        let _ = writeln!(out, "       {entry}");
                    }
                    continue;
                }
                let shown = match v.reveal {
                    Reveal::Masked => mask(v.value.expose()),
                    Reveal::Hidden => crate::credential::HIDDEN.to_owned(),
                    Reveal::InFull => crate::escape::escape(v.value.expose()).into_owned(),
                };
                let _ = write!(out, " {prefix} {}={shown}", v.key);
                if let Some(note) = &v.note {
                    let _ = write!(out, "  ({note})");
                }
                out.push('\n');
            }
        }
        for (k, why) in &self.removed {
            let _ = writeln!(out, " [-] {k} (removed: {why})");
        }
        for u in &self.unpassed {
            let _ = writeln!(
                out,
                " [!] {key} does not reach the container: {rt} run passes in only the variables named with -e{maybe}; fix: add -e {key} before the image",
                key = u.key,
                rt = u.runtime,
                maybe = if u.env_file { " (or set in --env-file, which holds a copy, not this value)" } else { "" },
            );
        }
        if self.inherited > 0 {
            let _ = writeln!(
                out,
                "     … and {} other host variables, inherited unlisted (--clean-env drops them)",
                self.inherited
            );
        }
        let _ = writeln!(out, "\n{bold}Mounts:{reset}");
        if self.mounts.is_empty() {
            out.push_str("  (none declared on the command line)\n");
        }
        for m in &self.mounts {
            let _ = writeln!(out, "  {:<28} {} ({})", m.target, m.source, m.mode);
        }
        for e in &self.exposures {
            let _ = writeln!(
                out,
                "  [!] reachable inside: {} ({}); fix: {}",
                e.what, e.path, e.fix
            );
        }
        let _ = writeln!(out, "\n{bold}Network:{reset}\n  {}", self.network);
        let _ = writeln!(out, "\n{bold}Command:{reset}\n  {}", self.argv.join(" "));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::plan;

    #[test]
    fn audit_lists_generated_forwarded_extra_and_removed_masked() {
        let p = plan(
            &[
                "docker",
                "run",
                "--rm",
                "-e",
                "CLAUDE_CODE_OAUTH_TOKEN",
                "-v",
                "/a:/b:ro",
                "img",
            ],
            false,
        );
        let text = p.audit(false);
        assert!(text.contains(" [~] CLAUDE_CODE_OAUTH_TOKEN=sk-ant-oat01-…1234  (claude: keychain:cf-claude-token)"), "{text}");
        assert!(text.contains(" [>] ANTHROPIC_BASE_URL=http…8080"), "{text}");
        assert!(text.contains(" [+] MY_VAR=…****"), "{text}");
        assert!(text.contains(" [-] ANTHROPIC_API_KEY (removed: it would take precedence over CLAUDE_CODE_OAUTH_TOKEN)"), "{text}");
        assert!(text.contains("… and 2 other host variables"), "{text}");
        assert!(
            text.contains("/b") && text.contains("(read-only)"),
            "{text}"
        );
        assert!(text.contains("docker default (bridge)"), "{text}");
        assert!(
            !text.contains("TOKENtoken") && !text.contains("HOSTkey"),
            "{text}"
        );
        assert!(!text.contains('\x1b'));
        let colored = p.audit(true);
        assert!(
            colored.contains("\x1b[32m[~]\x1b[0m"),
            "prefixes stay readable without colour"
        );
    }
}
