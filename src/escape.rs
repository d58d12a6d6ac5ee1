//! Control characters made visible in human-readable output. Client-chosen names,
//! executable paths and grant names reach `log`, `status`, `doctor` and `grants`; a raw ESC,
//! CR, BEL or newline in one of them could rewrite the terminal (a forged "cf read claude"
//! line), so every printer passes such text through [`escape`]. JSON output needs none:
//! serde already escapes control characters.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `s` with every control character (C0, DEL, C1) written as a visible escape:
/// `\n`, `\r`, `\t`, `\e` for ESC, otherwise `\x07` / `\u{9b}`. Text without any is
/// returned as is.
#[must_use]
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x1b' => out.push_str("\\e"),
            c if (c as u32) < 0x80 && c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn control_characters_are_made_visible() {
        let cases = [
            ("/usr/bin/socat", "/usr/bin/socat"),
            ("x\x1b[2K\rcf read claude", "x\\e[2K\\rcf read claude"),
            ("a\nb\tc", "a\\nb\\tc"),
            ("bell\x07del\x7f", "bell\\x07del\\x7f"),
            ("csi\u{9b}31m", "csi\\u{9b}31m"),
            ("naïve ✓", "naïve ✓"),
        ];
        for (input, want) in cases {
            let got = escape(input);
            assert_eq!(got, want, "{input:?}");
            assert!(!got.chars().any(char::is_control), "{got:?}");
        }
    }
}
