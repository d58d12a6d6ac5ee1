//! What goes wrong with a config file, told so the user can fix it: which file, who named
//! it, and the offending line (escaped, cut, never echoing a token-shaped value).

/// Who named a config file the user asked for by path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamedBy {
    /// `--config PATH`.
    Flag,
    /// `KEYFERRY_CONFIG`.
    Env,
}

impl std::fmt::Display for NamedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Flag => "--config",
            Self::Env => "KEYFERRY_CONFIG",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {reason}")]
    Read { path: String, reason: String },
    /// A file named explicitly does not exist: running on defaults instead would quietly
    /// ignore everything the user meant to configure (`ssh -F`, `git config --file` refuse too).
    #[error("{path}: no such config file (named by {named_by}); create it, fix the path, or name /dev/null for all defaults")]
    Missing { path: String, named_by: NamedBy },
    /// Invalid TOML or a value of the wrong type, with the line it is on.
    #[error(
        "{path}: {}{message}{}",
        at.as_ref().map(|a| format!("line {}: ", a.line)).unwrap_or_default(),
        at.as_ref().map(|a| format!("\n  {} | {}", a.line, a.text)).unwrap_or_default()
    )]
    Parse {
        path: String,
        message: String,
        at: Option<Excerpt>,
    },
    #[error(
        "no credential named {name:?}{suggestion} (configured: {known}; a new one needs [credentials.{name}] in {path})"
    )]
    Unknown {
        name: String,
        known: String,
        path: String,
        /// `; did you mean `claude`?`, or empty.
        suggestion: String,
    },
    #[error("credential {name:?} has no keychain source to store into; add store = \"SERVICE\" under [credentials.{name}] in {path}")]
    NoStore { name: String, path: String },
}

impl ConfigError {
    /// The error on one line, for a table row (the doctor's): the offending line quoted
    /// after the message instead of under it.
    #[must_use]
    pub fn one_line(&self) -> String {
        match self {
            Self::Parse {
                path,
                message,
                at: Some(at),
            } => format!("{path}: line {}: {message}: `{}`", at.line, at.text),
            other => other.to_string(),
        }
    }
}

/// The line of a config file an error is on, as shown under the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excerpt {
    /// 1-based.
    pub line: usize,
    /// The line, control characters escaped and cut to [`Excerpt::MAX_CHARS`]; a line that
    /// looks like it holds a token is not shown.
    pub text: String,
}

impl Excerpt {
    /// The most of a line shown.
    pub const MAX_CHARS: usize = 120;

    /// The line holding byte `offset` of `text`.
    #[must_use]
    pub fn of(text: &str, offset: usize) -> Self {
        let line = line_of(text, offset);
        let raw = text.lines().nth(line - 1).unwrap_or_default().trim_end();
        // A config holds no secrets, but a token pasted into one must not be echoed back.
        let shown = if ["sk-ant-", "kfg_"].iter().any(|p| raw.contains(p)) {
            "(not shown: it looks like it holds a token)".to_owned()
        } else {
            let cut: String = raw.chars().take(Self::MAX_CHARS).collect();
            let more = if cut.len() < raw.len() { "…" } else { "" };
            format!("{}{more}", crate::escape::escape(&cut))
        };
        Self { line, text: shown }
    }
}

/// serde's type names (`expected u64`, `expected struct AgentConfig`) in words a config's
/// reader knows (`expected a whole number`, `expected a table`).
pub(super) fn plain_types(message: &str) -> String {
    fn plain(name: &str) -> Option<&'static str> {
        Some(match name {
            "u8" | "u16" | "u32" | "u64" | "u128" | "usize" | "i8" | "i16" | "i32" | "i64"
            | "i128" | "isize" => "a whole number",
            "f32" | "f64" => "a number",
            "a boolean" => "true or false",
            "a sequence" => "a list ([…])",
            "a map" => "a table",
            _ if name.starts_with("struct ") => "a table",
            _ => return None,
        })
    }
    const EXPECTED: &str = "expected ";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find(EXPECTED) {
        out.push_str(&rest[..i + EXPECTED.len()]);
        rest = &rest[i + EXPECTED.len()..];
        // The name runs to the next `,` or `)` (or the end): `u64`, `a boolean`, `struct X`.
        let name = rest[..rest.find([',', ')']).unwrap_or(rest.len())].trim_end();
        if let Some(words) = plain(name) {
            out.push_str(words);
            rest = &rest[name.len()..];
        }
    }
    out.push_str(rest);
    out.trim_end().to_owned()
}

/// The 1-based line of byte `offset` (an error at the start of line 2 is on line 2, which
/// counting `lines()` before it got wrong).
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(1, |t| t.matches('\n').count() + 1)
}
