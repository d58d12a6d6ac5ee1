//! The `Secret` type: a token that never prints, zeroizes on drop, and leaves only via `expose()`.

use std::fmt;

use zeroize::{Zeroize, Zeroizing};

/// A secret string (token, API key, credential JSON).
///
/// `Debug` is redacted, memory is zeroized on drop, and the only way to read the value is
/// [`Secret::expose`] — grep for it to audit every use. It deliberately implements neither
/// `Serialize`, `Deserialize`, `Display` (nothing formats a secret by accident) nor
/// `PartialEq` (compare fingerprints: `credential::fingerprint`). Cloning makes a second
/// zeroized copy; do it only where a copy must outlive the original.
#[derive(Default)]
pub struct Secret(Zeroizing<String>);

impl Clone for Secret {
    fn clone(&self) -> Self {
        Self::new(self.0.as_str().to_owned())
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        crate::harden::unlock(self.0.as_ptr() as usize, self.0.capacity());
    }
}

impl Secret {
    /// Wraps a string; the caller's `String` moves in, so no unzeroized copy remains.
    #[must_use]
    pub fn new(value: String) -> Self {
        // In the agent and the tray (after `harden::process`) its pages stay out of swap.
        crate::harden::lock(value.as_ptr() as usize, value.capacity());
        Self(Zeroizing::new(value))
    }

    /// Reads the secret. Every call site is a place where a secret leaves the type.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Wraps a trimmed copy (tokens pasted with a newline), zeroizing the input.
    #[must_use]
    pub fn from_trimmed(mut raw: String) -> Self {
        let trimmed = Self::new(raw.trim().to_owned());
        raw.zeroize();
        trimmed
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = Secret::new("sk-ant-oat01-supersecret".into());
        assert_eq!(format!("{s:?}"), "Secret([redacted])");
        assert_eq!(format!("{:?}", Some(&s)), "Some(Secret([redacted]))");
        assert_eq!(s.expose(), "sk-ant-oat01-supersecret");
    }

    #[test]
    fn trimmed_drops_whitespace() {
        let s = Secret::from_trimmed("  tok-123\r\n".into());
        assert_eq!(s.expose(), "tok-123");
        assert_eq!(s.len(), 7);
        assert!(!s.is_empty());
    }
}
