//! `.env` files: read one key, or rewrite one key while keeping every other byte.

use std::fmt::Write as _;

use crate::secret::Secret;

/// A `.env` problem, naming the file and line; never the value.
#[derive(Debug, thiserror::Error)]
pub enum DotenvError {
    #[error("{path}: {key} is set more than once (lines {lines}); keep one and retry")]
    Duplicate {
        path: String,
        key: String,
        lines: String,
    },
    #[error("{path}: line {line}: unterminated quote in the value of {key}")]
    Unterminated {
        path: String,
        key: String,
        line: usize,
    },
    /// The file is not one Keyferry may read or rewrite (a link, FIFO, foreign or huge file).
    #[error(transparent)]
    File(#[from] crate::safe_file::FileError),
    #[error(transparent)]
    Write(#[from] crate::atomic::WriteError),
}

impl DotenvError {
    /// The stable error code for the socket and the UI.
    #[must_use]
    pub fn code(&self) -> crate::domain::ErrorCode {
        use crate::domain::ErrorCode;
        match self {
            Self::Duplicate { .. } | Self::Unterminated { .. } => ErrorCode::Malformed,
            Self::File(e) => e.code(),
            Self::Write(_) => ErrorCode::WriteFailed,
        }
    }
}

/// One assignment found in the file.
struct Assignment {
    /// Index into `lines`.
    index: usize,
    /// Byte offset in the line where the value starts (after `=` and spaces).
    value_start: usize,
    /// Byte offset where the value (including quotes) ends.
    value_end: usize,
    quote: Option<char>,
}

/// One line and the terminator it had (`"\r\n"`, `"\n"`, or none on an unterminated last
/// line), so a rewrite gives every untouched line back byte for byte, even in a file that
/// mixes line endings.
struct Line {
    text: String,
    end: &'static str,
}

/// A parsed `.env` document that rewrites in place.
pub struct Dotenv {
    lines: Vec<Line>,
    /// The terminator for an appended line: CRLF if the file uses it anywhere.
    newline: &'static str,
}

impl Dotenv {
    #[must_use]
    pub fn parse(text: &str) -> Self {
        let newline = if text.contains("\r\n") { "\r\n" } else { "\n" };
        let lines = text
            .split_inclusive('\n')
            .map(|piece| {
                let (text, end) = if let Some(t) = piece.strip_suffix("\r\n") {
                    (t, "\r\n")
                } else if let Some(t) = piece.strip_suffix('\n') {
                    (t, "\n")
                } else {
                    (piece, "")
                };
                Line {
                    text: text.to_owned(),
                    end,
                }
            })
            .collect();
        Self { lines, newline }
    }

    fn find(&self, key: &str, path: &str) -> Result<Option<Assignment>, DotenvError> {
        let mut found: Vec<Assignment> = Vec::new();
        for (index, line) in self.lines.iter().enumerate() {
            if let Some(a) = assignment(&line.text, key) {
                found.push(Assignment { index, ..a });
            }
        }
        if found.len() > 1 {
            return Err(DotenvError::Duplicate {
                path: path.to_owned(),
                key: key.to_owned(),
                lines: found
                    .iter()
                    .map(|a| (a.index + 1).to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(found.pop())
    }

    /// The value of `key`, unquoted.
    ///
    /// # Errors
    /// Duplicate key or an unterminated quote, naming `path` and the line.
    pub fn get(&self, key: &str, path: &str) -> Result<Option<Secret>, DotenvError> {
        let Some(a) = self.find(key, path)? else {
            return Ok(None);
        };
        let raw = &self.lines[a.index].text[a.value_start..a.value_end];
        match a.quote {
            Some(q) => {
                if raw.len() < 2 || !raw.ends_with(q) {
                    return Err(DotenvError::Unterminated {
                        path: path.to_owned(),
                        key: key.to_owned(),
                        line: a.index + 1,
                    });
                }
                let inner = &raw[1..raw.len() - 1];
                Ok(Some(Secret::new(if q == '"' {
                    unescape_double(inner)
                } else {
                    inner.to_owned()
                })))
            }
            None => Ok(Some(Secret::new(raw.to_owned()))),
        }
    }

    /// Sets `key`, keeping its `export` prefix and quote style; appends it when absent.
    ///
    /// # Errors
    /// Duplicate key, naming `path` and the lines.
    pub fn set(&mut self, key: &str, value: &Secret, path: &str) -> Result<(), DotenvError> {
        match self.find(key, path)? {
            Some(a) => {
                let line = &mut self.lines[a.index].text;
                let rendered = render(value.expose(), a.quote);
                line.replace_range(a.value_start..a.value_end, &rendered);
            }
            None => {
                // An unterminated last line gets a terminator and the new one goes without,
                // keeping the file's "no final newline"; otherwise the new line ends like
                // the file's lines do.
                let end = match self.lines.last_mut() {
                    Some(last) if last.end.is_empty() => {
                        last.end = self.newline;
                        ""
                    }
                    _ => self.newline,
                };
                self.lines.push(Line {
                    text: format!("{key}={}", render(value.expose(), None)),
                    end,
                });
            }
        }
        Ok(())
    }

    /// The document as text, every line with its original ending.
    #[must_use]
    pub fn render(&self) -> Secret {
        let mut out = String::with_capacity(self.lines.iter().map(|l| l.text.len() + 2).sum());
        for line in &self.lines {
            out.push_str(&line.text);
            out.push_str(line.end);
        }
        Secret::new(out)
    }
}

/// Recognises `[export ]KEY = value` for exactly `key`.
fn assignment(line: &str, key: &str) -> Option<Assignment> {
    let trimmed = line.trim_start();
    let indent = line.len() - trimmed.len();
    let (rest, offset) = match trimmed.strip_prefix("export") {
        Some(r) if r.starts_with([' ', '\t']) => {
            let r2 = r.trim_start();
            (r2, indent + trimmed.len() - r2.len())
        }
        _ => (trimmed, indent),
    };
    let after_key = rest.strip_prefix(key)?;
    let after_ws = after_key.trim_start_matches([' ', '\t']);
    let after_eq = after_ws.strip_prefix('=')?;
    let value_text = after_eq.trim_start_matches([' ', '\t']);
    let value_start = offset + key.len() + (after_key.len() - value_text.len());
    let quote = value_text
        .chars()
        .next()
        .filter(|c| *c == '"' || *c == '\'');
    let value_len = match quote {
        Some(q) => closing_quote(value_text, q).map_or(value_text.len(), |end| end + 1),
        None => unquoted_len(value_text),
    };
    Some(Assignment {
        index: 0,
        value_start,
        value_end: value_start + value_len,
        quote,
    })
}

fn closing_quote(text: &str, q: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in text.char_indices().skip(1) {
        if q == '"' && c == '\\' && !escaped {
            escaped = true;
            continue;
        }
        if c == q && !escaped {
            return Some(i);
        }
        escaped = false;
    }
    None
}

/// Unquoted values end at ` #` (an inline comment) or end of line, trailing blanks dropped.
fn unquoted_len(text: &str) -> usize {
    let end = text
        .find(" #")
        .or_else(|| text.find("\t#"))
        .unwrap_or(text.len());
    text[..end].trim_end().len()
}

fn unescape_double(inner: &str) -> String {
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn is_plain(value: &str) -> bool {
    !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/+=@%,".contains(c))
}

fn render(value: &str, quote: Option<char>) -> String {
    match quote {
        // Single quotes keep bytes as they are, so a line break there would split the
        // value over lines (and inject the rest as new assignments): those go escaped.
        Some('\'') if !value.contains(['\'', '\n', '\r']) => format!("'{value}'"),
        Some('"') | Some('\'') => {
            let mut s = String::from("\"");
            for c in value.chars() {
                match c {
                    '"' | '\\' | '$' | '`' => {
                        let _ = write!(s, "\\{c}");
                    }
                    '\n' => s.push_str("\\n"),
                    '\r' => s.push_str("\\r"),
                    c => s.push(c),
                }
            }
            s.push('"');
            s
        }
        _ if is_plain(value) => value.to_owned(),
        _ => render(value, Some('\'')),
    }
}

/// Sets `key` in the `.env` file at `path` under its lock, atomically, mode 0600 (or the
/// file's stricter mode). A missing file is created; every other line is kept as it was.
/// The file is read through the locked descriptor, which was opened without following a
/// link: a `.env` swapped for a symlink to a private key, a FIFO or another user's file is
/// refused before a byte of it is read.
///
/// # Errors
/// Duplicate key, a refused file (see [`crate::safe_file`]), an unwritable file.
pub fn write_key(path: &std::path::Path, key: &str, value: &Secret) -> Result<(), DotenvError> {
    let shown = crate::paths::display(path);
    // A `.env` belongs in a project that exists: a missing folder is a typo, not a request.
    crate::safe_file::require_folder(path, None)?;
    // Every folder on the way opened without following a link; the file reached through
    // the held folder (see `sink_path`).
    let sink = crate::sink_path::SinkPath::resolve(path, false).map_err(|e| e.shown_as(&shown))?;
    let at = sink.path();
    let named = |e: crate::safe_file::FileError| e.shown_as(&shown);
    let mut lock = crate::atomic::FileLock::acquire(&at).map_err(named)?;
    lock.single_link().map_err(named)?;
    let text = zeroize::Zeroizing::new(lock.read_to_string().map_err(named)?);
    let mut doc = Dotenv::parse(&text);
    doc.set(key, value, &shown)?;
    crate::atomic::write(&at, doc.render().expose().as_bytes(), 0o600).map_err(|e| {
        crate::atomic::WriteError {
            path: shown.clone(),
            source: e.source,
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(text: &str, key: &str, value: &str) -> String {
        let mut d = Dotenv::parse(text);
        d.set(key, &Secret::new(value.into()), "t").unwrap();
        d.render().expose().to_owned()
    }

    fn get(text: &str, key: &str) -> Option<String> {
        Dotenv::parse(text)
            .get(key, "t")
            .unwrap()
            .map(|s| s.expose().to_owned())
    }

    #[test]
    fn reads_all_quote_styles() {
        assert_eq!(get("A=1\nK=plain # note\n", "K").as_deref(), Some("plain"));
        assert_eq!(
            get("export K='single # x'\n", "K").as_deref(),
            Some("single # x")
        );
        assert_eq!(
            get("K = \"dq \\\"x\\\"\"\n", "K").as_deref(),
            Some("dq \"x\"")
        );
        assert_eq!(get("KEY2=x\n", "K"), None);
        assert_eq!(get("# K=commented\n", "K"), None);
    }

    #[test]
    fn rewrites_one_key_and_keeps_everything_else() {
        let text = "# top\r\nexport K='old' # trailing\r\nOTHER=\"keep\"\r\n\r\nLAST=1";
        let out = set(text, "K", "new-token");
        assert_eq!(
            out,
            "# top\r\nexport K='new-token' # trailing\r\nOTHER=\"keep\"\r\n\r\nLAST=1"
        );
    }

    #[test]
    fn appends_when_missing_keeping_final_newline_style() {
        assert_eq!(set("A=1\n", "K", "v"), "A=1\nK=v\n");
        assert_eq!(set("A=1", "K", "v"), "A=1\nK=v");
        assert_eq!(set("", "K", "v"), "K=v\n");
        assert_eq!(set("A=1\r\n", "K", "v"), "A=1\r\nK=v\r\n");
    }

    #[test]
    fn quotes_values_that_need_it() {
        assert_eq!(set("K=x\n", "K", "a b"), "K='a b'\n");
        assert_eq!(set("K=\"x\"\n", "K", "a\"b"), "K=\"a\\\"b\"\n");
        assert_eq!(
            get(&set("K='x'\n", "K", "it's"), "K").as_deref(),
            Some("it's")
        );
    }

    #[test]
    fn duplicate_keys_name_the_lines() {
        let d = Dotenv::parse("K=1\nA=2\nexport K=3\n");
        let err = d.get("K", ".env").unwrap_err().to_string();
        assert!(err.contains("lines 1, 3"), "{err}");
        assert!(err.contains(".env"), "{err}");
    }

    #[test]
    fn write_key_creates_then_updates_in_place() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".env");
        write_key(&p, "K", &Secret::new("one".into())).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "K=one\n");
        std::fs::write(&p, "# c\nK=one\nZ=2").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_key(&p, "K", &Secret::new("two".into())).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "# c\nK=two\nZ=2");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn unterminated_quote_is_an_error() {
        assert!(Dotenv::parse("K='abc\n").get("K", "t").is_err());
    }

    // Fuzz regression (dotenv_roundtrip): a CRLF file whose last line ends in a bare "\n"
    // gained an extra "\r\n" (a new blank line) on every rewrite.
    #[test]
    fn mixed_line_endings_are_kept_byte_for_byte() {
        assert_eq!(set("A=1\r\nB=2\n", "K", "v"), "A=1\r\nB=2\nK=v\r\n");
        assert_eq!(set("A=1\r\nK=old\nC=3", "K", "v"), "A=1\r\nK=v\nC=3");
        assert_eq!(set("A=1\r\nB=2", "K", "v"), "A=1\r\nB=2\r\nK=v");
    }

    // Fuzz regression (dotenv_roundtrip): a value with a line break was written raw inside
    // single quotes, so its tail became new lines (`X=1` injected as an assignment).
    #[test]
    fn line_breaks_in_a_value_never_start_new_lines() {
        for style in ["K='old'\n", "K=old\n", "K=\"old\"\n", ""] {
            let value = "tok\nX=1\r\nexport Y=2\r";
            let out = set(style, "K", value);
            assert_eq!(out.lines().count(), 1, "{out:?}");
            assert_eq!(get(&out, "K").as_deref(), Some(value), "{out:?}");
            assert_eq!(get(&out, "X"), None, "{out:?}");
        }
    }
}
