//! What `security` is sent and how its answers are read: interactive-mode quoting, `-w`
//! output (plain or hex), the `mdat` attribute, and exit statuses mapped to typed errors.
//!
//! Sources (Apple's `security` tool, SecurityTool in apple-oss-distributions/Security,
//! mirrored as apple-open-source/macos `SecurityTool/`):
//! - `security.c`: interactive mode reads lines with `readline(buffer, MAX_LINE_LEN = 4096)`,
//!   which stops after 4095 bytes and leaves the rest for the *next* command, and drops a
//!   last line without `\n`; `split_line` splits on whitespace, `"…"`/`'…'` quote, and `\`
//!   makes the next byte literal (inside and outside quotes; there are no `\n` escapes). A
//!   NUL ends the line. The exit status is the last command's result, and a failing command
//!   also prints `<command>: returned <OSStatus>` on stderr.
//! - `keychain_find.c` (`do_password_item_printing`): with `-w`, if any byte is not
//!   `isprint`, every byte is printed as `printf("%02x", password[i])` (with a signed `char`
//!   a byte ≥ 0x80 prints as `ffffffXX`); otherwise the bytes verbatim; then `\n`.
//! - `add-generic-password -X`: "Specify password data to be added as a hexadecimal string".

use std::path::Path;

use zeroize::Zeroizing;

use super::super::{ItemId, Stamp, StoreError};

/// The longest command line `security -i` executes whole (its buffer is 4096 bytes,
/// 4095 characters plus the terminating NUL; one more byte of margin).
pub const MAX_COMMAND_LINE: usize = 4094;

/// Claude Code's login item and cf's token item: written and read by command-line tools
/// through `security`, so they must be read and written the same way (partition list).
#[must_use]
pub fn is_shared_with_cli(id: &ItemId) -> bool {
    const CLAUDE: &str = "Claude Code-credentials";
    let s = id.service.as_str();
    s == CLAUDE
        || s == "cf-claude-token"
        // `Claude Code-credentials-<first 8 hex of sha256(CLAUDE_CONFIG_DIR)>`
        || s.strip_prefix(CLAUDE).and_then(|r| r.strip_prefix('-')).is_some_and(|h| {
            h.len() == 8 && h.bytes().all(|b| b.is_ascii_hexdigit())
        })
}

/// `"…"` for `split_line`: `\` before `"` and `\`, everything else literal. `None` when the
/// value cannot be carried on one line at all (a newline ends the line, a NUL ends the string).
fn quote(value: &str) -> Option<String> {
    if value.bytes().any(|b| b == b'\n' || b == 0) {
        return None;
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Some(out)
}

/// The `add-generic-password -U` line for `security -i`, newline-terminated. The secret goes
/// quoted after `-w` when it fits on a line, else as hex after `-X` (newlines, NUL); a
/// line too long for the tool's buffer is refused, since the tool would run its tail as a
/// second command.
///
/// # Errors
/// Why the item cannot be written this way (no secret text in it).
pub fn add_command(id: &ItemId, secret: &str) -> Result<Zeroizing<String>, String> {
    let service = quote(&id.service)
        .ok_or("the service name contains a newline or NUL, which `security -i` cannot carry")?;
    let account = quote(&id.account)
        .ok_or("the account name contains a newline or NUL, which `security -i` cannot carry")?;
    let password = match quote(secret) {
        Some(q) => Zeroizing::new(format!("-w {q}")),
        None => Zeroizing::new(format!("-X {}", hex::encode(secret.as_bytes()))),
    };
    let mut line = Zeroizing::new(String::new());
    line.push_str("add-generic-password -U -s ");
    line.push_str(&service);
    line.push_str(" -a ");
    line.push_str(&account);
    line.push(' ');
    line.push_str(&password);
    if line.len() > MAX_COMMAND_LINE {
        return Err(format!(
            "the value ({} bytes) makes a {}-byte `security -i` command; the tool reads at most \
             {MAX_COMMAND_LINE} (values with newlines count twice, as hex) — store it with \
             another [keychain] backend",
            secret.len(),
            line.len()
        ));
    }
    line.push('\n');
    Ok(line)
}

/// Bytes the tool prints verbatim under `-w` (C-locale `isprint`).
fn printable(b: u8) -> bool {
    (0x20..0x7f).contains(&b)
}

/// The password from `find-generic-password -w` output: exactly one trailing newline is
/// removed, and hex output is decoded. Output is taken as hex only when it can only be hex:
/// even length, all hex digits, and decoding to UTF-8 with at least one byte the tool would
/// not have printed verbatim (else the tool would have printed those bytes as they are).
#[must_use]
pub fn decode_password_output(out: &[u8]) -> Zeroizing<Vec<u8>> {
    let text = out.strip_suffix(b"\n").unwrap_or(out);
    if text.is_empty() || text.len() % 2 != 0 || !text.iter().all(u8::is_ascii_hexdigit) {
        return Zeroizing::new(text.to_vec());
    }
    for decoded in [plain_hex(text), sign_extended_hex(text)]
        .into_iter()
        .flatten()
    {
        let decoded = Zeroizing::new(decoded);
        if !decoded.iter().all(|&b| printable(b)) && std::str::from_utf8(&decoded).is_ok() {
            return decoded;
        }
    }
    Zeroizing::new(text.to_vec())
}

fn plain_hex(text: &[u8]) -> Option<Vec<u8>> {
    hex::decode(text).ok()
}

/// `printf("%02x", (char)b)` with a signed `char`: bytes ≥ 0x80 come out as `ffffffXX`.
fn sign_extended_hex(text: &[u8]) -> Option<Vec<u8>> {
    let byte =
        |s: &[u8]| -> Option<u8> { u8::from_str_radix(std::str::from_utf8(s).ok()?, 16).ok() };
    let mut out = Vec::with_capacity(text.len() / 2);
    let mut i = 0;
    let mut extended = false;
    while i < text.len() {
        let rest = &text[i..];
        if rest.len() >= 8 && rest[..6].eq_ignore_ascii_case(b"ffffff") {
            let b = byte(&rest[6..8])?;
            if b >= 0x80 {
                out.push(b);
                extended = true;
                i += 8;
                continue;
            }
        }
        let b = byte(rest.get(..2)?)?;
        if b >= 0x80 {
            return None;
        }
        out.push(b);
        i += 2;
    }
    extended.then_some(out)
}

/// The `"mdat"<timedate>=…` attribute line of `find-generic-password` (no `-w`) output,
/// as printed (e.g. `0x3230…5A00  "20250908123456Z\000"`). One-second resolution.
#[must_use]
pub fn mdat(attributes: &str) -> Option<Stamp> {
    attributes.lines().find_map(|l| {
        l.trim_start()
            .strip_prefix("\"mdat\"<timedate>=")
            .map(|v| Stamp(format!("mdat={}", v.trim())))
    })
}

/// The first non-empty line of the tool's stderr, for messages.
#[must_use]
pub fn first_line(stderr: &str) -> String {
    stderr
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("no message")
        .to_owned()
}

/// OSStatus codes from Apple's `SecBase.h` (cited per constant) that `security` reports.
mod status {
    /// errSecItemNotFound: "The specified item could not be found in the keychain."
    pub const ITEM_NOT_FOUND: i32 = -25300;
    /// errSecInteractionNotAllowed: "User interaction is not allowed." Over SSH with a
    /// locked login keychain (docker/docker-credential-helpers #193; fastlane #4460 and
    /// expo/expo-cli #3065 show exit status 36).
    pub const INTERACTION_NOT_ALLOWED: i32 = -25308;
    /// errSecAuthFailed: "The user name or passphrase you entered is not correct." Deny on
    /// the access dialog of `security find-generic-password -w` exits 51
    /// (manwhoami/OSXChromeDecrypt #2: "51 … User clicked deny"); also a wrong unlock
    /// password (lifepillar/CSVKeychain #11).
    pub const AUTH_FAILED: i32 = -25293;
    /// errSecUserCanceled: "User canceled the operation." A dismissed dialog
    /// (keybase/go-keychain #91).
    pub const USER_CANCELED: i32 = -128;
    /// errSecNoSuchKeychain: "The specified keychain could not be found."
    pub const NO_SUCH_KEYCHAIN: i32 = -25294;
    /// errSecNotAvailable: "No keychain is available. You may need to restart your computer."
    pub const NOT_AVAILABLE: i32 = -25291;
}

/// What a failed `security` run meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    NotFound,
    InteractionNotAllowed,
    Denied {
        canceled: bool,
    },
    NoKeychain,
    Other {
        status: Option<i32>,
        message: String,
    },
}

/// Reads the OSStatus from `<command>: returned N` (interactive mode), then the message
/// text, then the exit status (the OSStatus modulo 256: 44, 36, 51, 128, 50, 53).
#[must_use]
pub fn classify(exit: Option<i32>, stderr: &str) -> Failure {
    let returned = stderr.lines().find_map(|l| {
        l.rsplit_once(": returned ")
            .and_then(|(_, n)| n.trim().parse::<i32>().ok())
    });
    let by_status = |s: i32| match s {
        status::ITEM_NOT_FOUND => Some(Failure::NotFound),
        status::INTERACTION_NOT_ALLOWED => Some(Failure::InteractionNotAllowed),
        status::AUTH_FAILED => Some(Failure::Denied { canceled: false }),
        status::USER_CANCELED => Some(Failure::Denied { canceled: true }),
        status::NO_SUCH_KEYCHAIN | status::NOT_AVAILABLE => Some(Failure::NoKeychain),
        _ => None,
    };
    if let Some(f) = returned.and_then(by_status) {
        return f;
    }
    let messages: [(&str, Failure); 6] = [
        ("could not be found in the keychain", Failure::NotFound),
        (
            "User interaction is not allowed",
            Failure::InteractionNotAllowed,
        ),
        (
            "passphrase you entered is not correct",
            Failure::Denied { canceled: false },
        ),
        (
            "User canceled the operation",
            Failure::Denied { canceled: true },
        ),
        (
            "The specified keychain could not be found",
            Failure::NoKeychain,
        ),
        ("No keychain is available", Failure::NoKeychain),
    ];
    if let Some((_, f)) = messages.into_iter().find(|(m, _)| stderr.contains(m)) {
        return f;
    }
    // The exit status is the OSStatus truncated to 8 bits.
    let from_exit = exit.and_then(|code| {
        [
            status::ITEM_NOT_FOUND,
            status::INTERACTION_NOT_ALLOWED,
            status::AUTH_FAILED,
            status::USER_CANCELED,
            status::NO_SUCH_KEYCHAIN,
            status::NOT_AVAILABLE,
        ]
        .into_iter()
        .find(|s| s & 0xff == code)
        .and_then(by_status)
    });
    from_exit.unwrap_or_else(|| Failure::Other {
        status: returned.or(exit),
        message: first_line(stderr),
    })
}

/// The fix for a locked login keychain in a session that cannot show the unlock dialog.
pub const UNLOCK_FIX: &str = "unlock the login keychain: run \
    `security unlock-keychain ~/Library/Keychains/login.keychain-db` in this session \
    (over SSH the Mac cannot show its unlock dialog), then retry";

impl Failure {
    /// The typed store error, naming the fix.
    #[must_use]
    pub fn into_error(
        self,
        backend: &'static str,
        operation: &'static str,
        id: &ItemId,
        program: &Path,
    ) -> StoreError {
        let item = id.to_string();
        match self {
            Self::InteractionNotAllowed => StoreError::Locked {
                backend,
                item,
                fix: UNLOCK_FIX,
            },
            Self::Denied { canceled } => StoreError::Denied {
                backend,
                item,
                reason: format!(
                    "the Keychain dialog was {}; run the command again and choose Allow or \
                     Always Allow for `{}` (Keychain Access › the item › Access Control lists \
                     who may read it)",
                    if canceled {
                        "dismissed"
                    } else {
                        "answered Deny"
                    },
                    program.display()
                ),
            },
            Self::NoKeychain => StoreError::Unavailable {
                backend,
                reason: format!("{}: no default keychain for {item}", program.display()),
                fix: "log in to the Mac once (that creates the login keychain), or check \
                      `security default-keychain`",
            },
            Self::NotFound => StoreError::Platform {
                backend,
                operation,
                item,
                message: "the item could not be found in the keychain".into(),
            },
            Self::Other { status, message } => StoreError::Platform {
                backend,
                operation,
                item,
                message: match status {
                    Some(s) => format!("security exited with status {s}: {message}"),
                    None => format!("security was killed: {message}"),
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `split_line` from security.c, for checking what the tool would execute.
    fn split_line(line: &str) -> Vec<String> {
        let (mut args, mut cur, mut quote, mut in_arg, mut esc) =
            (Vec::new(), String::new(), None::<char>, false, false);
        for c in line.chars() {
            if esc {
                cur.push(c);
                esc = false;
            } else if let Some(q) = quote {
                match c {
                    '\\' => esc = true,
                    c if c == q => {
                        args.push(std::mem::take(&mut cur));
                        quote = None;
                        in_arg = false;
                    }
                    c => cur.push(c),
                }
            } else if !in_arg {
                match c {
                    c if c.is_ascii_whitespace() => {}
                    '"' | '\'' => {
                        quote = Some(c);
                        in_arg = true;
                    }
                    '\\' => {
                        in_arg = true;
                        esc = true;
                    }
                    c => {
                        in_arg = true;
                        cur.push(c);
                    }
                }
            } else if c == '\\' {
                esc = true;
            } else if c.is_ascii_whitespace() {
                args.push(std::mem::take(&mut cur));
                in_arg = false;
            } else {
                cur.push(c);
            }
        }
        if in_arg {
            args.push(cur);
        }
        args
    }

    #[test]
    fn hostile_values_round_trip_through_the_tools_tokenizer() {
        let id = ItemId::new("Claude Code-credentials", "al \"ice\" \\o/");
        for secret in [
            "plain",
            "with space",
            "\"quoted\"",
            "back\\slash\\",
            "trailing\\",
            "'single' \"double\"",
            "$HOME `id` $(id)",
            "-w",
            "tab\there",
            "",
        ] {
            let line = add_command(&id, secret).unwrap();
            assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
            let args = split_line(line.trim_end_matches('\n'));
            assert_eq!(
                args,
                [
                    "add-generic-password",
                    "-U",
                    "-s",
                    &id.service,
                    "-a",
                    &id.account,
                    "-w",
                    secret
                ],
                "{secret:?}"
            );
        }
        for secret in ["two\nlines\n", "nul\0byte", "{\n  \"json\": \"ünï\"\n}\n"] {
            let line = add_command(&id, secret).unwrap();
            assert_eq!(line.matches('\n').count(), 1, "{secret:?}");
            let args = split_line(line.trim_end_matches('\n'));
            assert_eq!(args[6], "-X");
            assert_eq!(hex::decode(&args[7]).unwrap(), secret.as_bytes());
        }
    }

    #[test]
    fn too_long_or_unaddressable_is_refused_without_the_secret() {
        let id = ItemId::new("svc", "acct");
        let long = "x".repeat(MAX_COMMAND_LINE);
        let e = add_command(&id, &long).unwrap_err();
        assert!(e.contains("4094") && !e.contains(&long[..64]), "{e}");
        let fits = "y".repeat(
            MAX_COMMAND_LINE - "add-generic-password -U -s \"svc\" -a \"acct\" -w \"\"".len(),
        );
        assert_eq!(add_command(&id, &fits).unwrap().len(), MAX_COMMAND_LINE + 1);
        assert!(add_command(&id, &format!("{fits}y")).is_err());
        assert!(add_command(&ItemId::new("a\nb", "c"), "s").is_err());
        assert!(add_command(&ItemId::new("a", "c\0"), "s").is_err());
    }

    #[test]
    fn password_output_plain_hex_and_sign_extended() {
        let d = |s: &str| String::from_utf8(decode_password_output(s.as_bytes()).to_vec()).unwrap();
        assert_eq!(d("sk-ant-oat01-abc\n"), "sk-ant-oat01-abc");
        assert_eq!(d("keeps\n\n"), "keeps\n", "exactly one newline removed");
        assert_eq!(d("no-newline"), "no-newline");
        // Printable hex-looking secrets are what they are.
        assert_eq!(d("deadbeef\n"), "deadbeef");
        assert_eq!(d("414243\n"), "414243");
        // `{\n}` and "ü" as the tool prints them.
        assert_eq!(d("7b0a7d\n"), "{\n}");
        assert_eq!(d("c3bc\n"), "ü");
        assert_eq!(d("ffffffc3ffffffbc21\n"), "ü!");
        // Not valid UTF-8 once decoded: literal.
        assert_eq!(d("ffff\n"), "ffff");
    }

    #[test]
    fn shared_items() {
        let s = |svc: &str| is_shared_with_cli(&ItemId::new(svc, "me"));
        assert!(s("Claude Code-credentials"));
        assert!(s("Claude Code-credentials-0a1b2c3d"));
        assert!(s("cf-claude-token"));
        assert!(!s("Claude Code-credentials-0a1b2c3"));
        assert!(!s("Claude Code-credentials-0a1b2c3d9"));
        assert!(!s("Claude Code-credentials-zzzzzzzz"));
        assert!(!s("keyferry-claude"));
    }

    #[test]
    fn mdat_is_read_from_the_attributes() {
        let out = "keychain: \"/Users/me/Library/Keychains/login.keychain-db\"\nattributes:\n    \
                   \"cdat\"<timedate>=0x3230323530393038313233343536 5A00  \"20250908123456Z\\000\"\n    \
                   \"mdat\"<timedate>=0x32303235303930383132333435375A00  \"20250908123457Z\\000\"\n";
        assert_eq!(
            mdat(out),
            Some(Stamp(
                "mdat=0x32303235303930383132333435375A00  \"20250908123457Z\\000\"".into()
            ))
        );
        assert_eq!(mdat("attributes:\n"), None);
    }

    #[test]
    fn statuses_and_messages() {
        let nf = "security: SecKeychainSearchCopyNext: The specified item could not be found in the keychain.\n";
        assert_eq!(classify(Some(44), nf), Failure::NotFound);
        assert_eq!(classify(Some(44), ""), Failure::NotFound);
        assert_eq!(classify(Some(36), ""), Failure::InteractionNotAllowed);
        assert_eq!(
            classify(Some(36), "security: SecKeychainItemCreateFromContent (<default>): User interaction is not allowed.\nadd-generic-password: returned -25308\n"),
            Failure::InteractionNotAllowed
        );
        assert_eq!(classify(Some(51), ""), Failure::Denied { canceled: false });
        assert_eq!(classify(Some(128), ""), Failure::Denied { canceled: true });
        assert_eq!(classify(Some(50), ""), Failure::NoKeychain);
        assert_eq!(
            classify(Some(45), "x: The specified item already exists in the keychain.\nadd-generic-password: returned -25299\n"),
            Failure::Other {
                status: Some(-25299),
                message: "x: The specified item already exists in the keychain.".into()
            }
        );
        assert_eq!(
            classify(Some(1), "security: unknown command \"x\"\n"),
            Failure::Other {
                status: Some(1),
                message: "security: unknown command \"x\"".into()
            }
        );
    }
}
