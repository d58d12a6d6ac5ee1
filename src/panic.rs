//! The redacting panic hook every Keyferry process installs: a panic's payload could carry
//! a token, so only where it happened is printed, never what.

/// Replaces the default hook: `PROGRAM: internal error at FILE:LINE; …withheld…`.
pub fn install_redacting_hook(program: &'static str) {
    std::panic::set_hook(Box::new(move |info| {
        let at = info
            .location()
            .map_or_else(String::new, |l| format!(" at {}:{}", l.file(), l.line()));
        eprintln!("{program}: internal error{at}; the message is withheld in case it holds a secret. Please report this.");
    }));
}
