//! Provisioning: a marker block of `export` lines in a sandbox user's `~/.bashrc`, written
//! idempotently by a small POSIX sh program that travels, with the token inside it, over the
//! transport's *stdin* (`ssh host sh`, `slicer vm exec VM --uid 1000 -- sh`,
//! `docker exec -i CTR sh`) — never in an argv or an environment.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, ExitStatus, Stdio};

use crate::credential::mask;
use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("--via {0:?} is not a command line (check its quoting)")]
    BadTransport(String),
    #[error("cannot start the transport {program}: {reason}")]
    Spawn { program: String, reason: String },
    #[error("the transport {program} failed: {status}; the block was not written (check the transport, e.g. run it with `true` instead of `sh`)")]
    Failed { program: String, status: ExitStatus },
}

/// The block: `# MARKER`, `export VAR='value'` lines, `# end-MARKER`.
pub struct Block {
    pub marker: String,
    pub exports: Vec<(String, Secret)>,
}

fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Block {
    fn lines(&self, masked: bool) -> Vec<String> {
        let mut lines = vec![format!("# {}", self.marker)];
        for (k, v) in &self.exports {
            let value = if masked {
                mask(v.expose())
            } else {
                v.expose().to_owned()
            };
            lines.push(format!("export {k}={}", q(&value)));
        }
        lines.push(format!("# end-{}", self.marker));
        lines
    }

    /// What `--dry-run` shows: the block with values masked.
    #[must_use]
    pub fn preview(&self) -> String {
        self.lines(true).join("\n")
    }
}

/// `~/x` → `"$HOME"/'x'` (the sandbox user's home, resolved there); absolute paths quoted.
fn rc_expr(rc: &str) -> String {
    match rc.strip_prefix("~/") {
        Some(rest) => format!("\"$HOME\"/{}", q(rest)),
        None => q(rc),
    }
}

/// The program piped to the transport's `sh`. It replaces an existing block in place (or
/// appends one), leaves every other line alone, keeps a symlinked rc (dotfiles managed with
/// stow) a symlink, makes the rc 0600 since it now holds a token, and removes its temp file
/// on any failure.
#[must_use]
pub fn script(rc: &str, block: &Block, remove: bool) -> Secret {
    let body = block.lines(false).join("\n");
    let mut nonce = format!("KEYFERRY_BLOCK_END_{}", std::process::id());
    while body.contains(&nonce) {
        nonce.push('_');
    }
    let mut s = String::new();
    let _ = writeln!(s, "set -eu\numask 077");
    let _ = writeln!(s, "rc={}", rc_expr(rc));
    let _ = writeln!(s, "begin={}", q(&format!("# {}", block.marker)));
    let _ = writeln!(s, "end={}", q(&format!("# end-{}", block.marker)));
    let _ = writeln!(s, "remove={}", u8::from(remove));
    let _ = writeln!(s, "block() {{\ncat <<'{nonce}'\n{body}\n{nonce}\n}}");
    s.push_str(
        r#"tmp="$rc.keyferry-tmp.$$"
trap 'rm -f "$tmp"' EXIT
found=0
skip=0
: > "$tmp"
if [ -f "$rc" ]; then
  while IFS= read -r line || [ -n "$line" ]; do
    if [ "$skip" = 1 ]; then
      if [ "$line" = "$end" ]; then skip=0; fi
      continue
    fi
    if [ "$line" = "$begin" ]; then
      found=1
      skip=1
      if [ "$remove" = 0 ]; then block >> "$tmp"; fi
      continue
    fi
    printf '%s\n' "$line" >> "$tmp"
  done < "$rc"
fi
if [ "$remove" = 1 ] && [ "$found" = 0 ]; then
  echo "keyferry: no $begin block in $rc; nothing to remove"
  exit 0
fi
if [ "$found" = 0 ]; then block >> "$tmp"; fi
chmod 600 "$tmp"
if [ -L "$rc" ]; then
  cat "$tmp" > "$rc"
  chmod 600 "$rc"
else
  mv -f "$tmp" "$rc"
fi
if [ "$remove" = 1 ]; then
  echo "keyferry: removed the $begin block from $rc"
elif [ "$found" = 1 ]; then
  echo "keyferry: replaced the $begin block in $rc"
else
  echo "keyferry: added a $begin block to $rc"
fi
"#,
    );
    Secret::new(s)
}

/// Splits `--via` like a shell would (no expansion).
///
/// # Errors
/// Unbalanced quotes or an empty command.
pub fn transport(via: &str) -> Result<Vec<String>, ProvisionError> {
    match shlex::split(via) {
        Some(argv) if !argv.is_empty() => Ok(argv),
        _ => Err(ProvisionError::BadTransport(via.to_owned())),
    }
}

/// Runs the transport with the script on its stdin; its output goes to ours.
///
/// # Errors
/// The transport cannot start or exits unsuccessfully.
pub fn run(argv: &[String], script: &Secret) -> Result<(), ProvisionError> {
    let program = argv.join(" ");
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| ProvisionError::Spawn {
            program: program.clone(),
            reason: e.to_string(),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A transport that exits early closes the pipe; its status says why.
        let _ = stdin.write_all(script.expose().as_bytes());
    }
    let status = child.wait().map_err(|e| ProvisionError::Spawn {
        program: program.clone(),
        reason: e.to_string(),
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(ProvisionError::Failed { program, status })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(v: &str) -> Block {
        Block {
            marker: "keyferry-claude-auth".into(),
            exports: vec![
                ("CLAUDE_CODE_OAUTH_TOKEN".into(), Secret::new(v.into())),
                (
                    "ANTHROPIC_CUSTOM_HEADERS".into(),
                    Secret::new("X-A: 1\nX-B: it's".into()),
                ),
            ],
        }
    }

    fn apply(rc: &std::path::Path, b: &Block, remove: bool) -> String {
        let s = script(rc.to_str().unwrap(), b, remove);
        run(&["sh".into()], &s).unwrap();
        std::fs::read_to_string(rc).unwrap_or_default()
    }

    #[test]
    fn writes_replaces_and_removes_the_block_keeping_other_lines() {
        let dir = tempfile::tempdir().unwrap();
        let rc = dir.path().join(".bashrc");
        std::fs::write(
            &rc,
            "alias ll='ls -l'\n# keep \\ backslashes\n  indented\nno-newline-at-end",
        )
        .unwrap();
        let once = apply(&rc, &block("sk-ant-oat01-ONE"), false);
        assert!(once.starts_with("alias ll='ls -l'\n# keep \\ backslashes\n  indented\nno-newline-at-end\n# keyferry-claude-auth\n"), "{once}");
        assert!(once.contains("export CLAUDE_CODE_OAUTH_TOKEN='sk-ant-oat01-ONE'\n"));
        let twice = apply(&rc, &block("sk-ant-oat01-TWO"), false);
        assert_eq!(
            twice.matches("# keyferry-claude-auth").count(),
            1,
            "{twice}"
        );
        assert!(twice.contains("TWO") && !twice.contains("ONE"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&rc).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // The quoted values survive a real shell.
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                ". {}; printf %s \"$ANTHROPIC_CUSTOM_HEADERS\"",
                rc.display()
            ))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "X-A: 1\nX-B: it's");
        let removed = apply(&rc, &block("x"), true);
        assert_eq!(
            removed,
            "alias ll='ls -l'\n# keep \\ backslashes\n  indented\nno-newline-at-end\n"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn adopts_an_existing_cf_block_and_keeps_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("dotfiles-bashrc");
        std::fs::write(
            &target,
            "a\n# cf-claude-auth\nexport ANTHROPIC_API_KEY='old'\n# end-cf-claude-auth\nb\n",
        )
        .unwrap();
        let rc = dir.path().join(".bashrc");
        std::os::unix::fs::symlink(&target, &rc).unwrap();
        let mut b = block("sk-ant-oat01-NEW");
        b.marker = "cf-claude-auth".into();
        let text = apply(&rc, &b, false);
        assert!(
            text.starts_with(
                "a\n# cf-claude-auth\nexport CLAUDE_CODE_OAUTH_TOKEN='sk-ant-oat01-NEW'"
            ),
            "{text}"
        );
        assert!(text.ends_with("# end-cf-claude-auth\nb\n"), "{text}");
        assert!(!text.contains("old"));
        assert!(std::fs::symlink_metadata(&rc)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn preview_masks_and_transport_splits() {
        assert!(!block("sk-ant-oat01-SECRETSECRET1234")
            .preview()
            .contains("SECRETSECRET"));
        assert_eq!(
            transport("slicer vm exec 'my vm' --uid 1000 -- sh").unwrap()[3],
            "my vm"
        );
        assert!(transport("ssh 'unbalanced").is_err());
    }
}
