//! What a test needs from the machine (binaries, root) and names no other run uses.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// The full path of `program` on `PATH`, if any.
#[must_use]
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Panics, naming each missing binary with the Debian package that ships it.
///
/// # Panics
/// A binary of `binaries` (`(binary, package)`) is not on `PATH`.
#[track_caller]
pub fn require(binaries: &[(&str, &str)]) {
    let missing: Vec<String> = binaries
        .iter()
        .filter(|(bin, _)| which(bin).is_none())
        .map(|(bin, pkg)| format!("{bin} (Debian package {pkg})"))
        .collect();
    let packages: Vec<&str> = binaries
        .iter()
        .filter(|(bin, _)| which(bin).is_none())
        .map(|(_, pkg)| *pkg)
        .collect();
    assert!(
        missing.is_empty(),
        "this test needs binaries that are not on PATH: {}; install them with \
         `apt-get install {}` (or `bash scripts/deps.sh test`)",
        missing.join(", "),
        packages.join(" ")
    );
}

/// Whether this process runs as root (effective uid 0).
#[must_use]
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// Panics unless the test runs as root, saying why it needs it. Never a silent skip: a test
/// that needs root and is run without it fails, so a green run means it ran.
///
/// # Panics
/// Not root.
#[track_caller]
pub fn require_root(why: &str) {
    assert!(
        is_root(),
        "this test needs root ({why}); run it as root, as CI does: \
         `sudo -E cargo test --test NAME` or `bash scripts/test.sh` as root"
    );
}

/// A name no other run (or concurrently running test binary) uses: prefix, pid, counter and
/// a per-process random value.
#[must_use]
pub fn unique_name(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(nanos);
    h.write_u64(n);
    format!(
        "{prefix}-{}-{n}-{:08x}",
        std::process::id(),
        h.finish() & 0xffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ() {
        let (a, b) = (unique_name("kf"), unique_name("kf"));
        assert_ne!(a, b);
        assert!(a.starts_with("kf-"), "{a}");
    }

    #[test]
    #[should_panic(expected = "surely-not-a-binary-kf (Debian package nothing)")]
    fn require_names_the_missing_package() {
        require(&[("surely-not-a-binary-kf", "nothing")]);
    }
}
