//! Grant placeholders: `kfg_` + 256 bits from the OS, kept only as a SHA-256 hash and
//! compared in constant time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::secret::Secret;

/// Every placeholder starts with this, so a leaked one is recognisable (and greppable).
pub const PREFIX: &str = "kfg_";

/// The OS random source failed; no placeholder is made (fail closed).
#[derive(Debug, thiserror::Error)]
#[error("the OS random source failed: {0}")]
pub struct RandomError(String);

/// A placeholder's SHA-256, the only form that is stored.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    #[must_use]
    pub fn of(placeholder: &str) -> Self {
        Self(Sha256::digest(placeholder.as_bytes()).into())
    }

    /// Constant-time equality: the time taken says nothing about how much matched.
    #[must_use]
    pub fn matches(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    /// This hash as the lowercase hex the grants file stores, to compare against every
    /// stored one ([`Hex::matches`]): encoding the one hash once is cheaper than decoding
    /// every stored one (measured ~700 instructions a grant a request).
    #[must_use]
    pub fn hex(&self) -> Hex {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (i, b) in self.0.iter().enumerate() {
            out[2 * i] = DIGITS[usize::from(b >> 4)];
            out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
        }
        Hex(out)
    }

    /// Whether `stored` (a [`Hash::to_hex`], either case) is this hash, in constant time.
    #[must_use]
    pub fn matches_hex(&self, stored: &str) -> bool {
        self.hex().matches(stored)
    }

    #[must_use]
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    /// # Errors
    /// Not 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self, hex::FromHexError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)?;
        Ok(Self(out))
    }
}

/// A [`Hash`] as 64 lowercase hex digits (not secret: the grants file holds these).
pub struct Hex([u8; 64]);

impl Hex {
    /// Whether `stored` (either case) is this hex, in constant time: eight word-sized
    /// XORs folded together, then one constant-time test (a byte-wise `ct_eq` costs ~2,000
    /// instructions a request for three grants). Or-ing 0x20 lowercases `A`–`F` and leaves
    /// digits as they are; it would also turn control bytes 0x10–0x19 into digits, so every
    /// stored byte must have 0x20 or 0x40 set (digits and letters do, those bytes do not).
    #[must_use]
    pub fn matches(&self, stored: &str) -> bool {
        const LOWER: u64 = u64::from_ne_bytes([0x20; 8]);
        let stored = stored.as_bytes();
        if stored.len() != 64 {
            return false;
        }
        let word = |c: &[u8]| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8]));
        let diff = self
            .0
            .chunks_exact(8)
            .zip(stored.chunks_exact(8))
            .fold(0u64, |d, (m, s)| {
                let s = word(s);
                // Per byte: 0x20 set iff the byte has 0x20 or 0x40 (a shift's spill lands
                // on the neighbour's 0x80, masked off).
                let t = s & (LOWER | (LOWER << 1));
                let printable = (t | (t >> 1)) & LOWER;
                d | (word(m) ^ (s | LOWER)) | (printable ^ LOWER)
            });
        diff.ct_eq(&0).into()
    }
}

impl std::fmt::Debug for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hash({}…)", &self.to_hex()[..8])
    }
}

/// A fresh placeholder and its hash. The placeholder is shown once and never stored.
///
/// # Errors
/// The OS random source failed.
pub fn generate() -> Result<(Secret, Hash), RandomError> {
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(bytes.as_mut()).map_err(|e| RandomError(e.to_string()))?;
    let placeholder = Secret::new(format!("{PREFIX}{}", hex::encode(bytes.as_ref())));
    let hash = Hash::of(placeholder.expose());
    Ok((placeholder, hash))
}

/// The placeholder shown masked (audit lines, previews): prefix and last four only.
#[must_use]
pub fn masked(placeholder: &Secret) -> String {
    let p = placeholder.expose();
    let tail = p.get(p.len().saturating_sub(4)..).unwrap_or_default();
    format!("{PREFIX}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_fresh_and_hash_back() {
        let (a, ha) = generate().unwrap();
        let (b, hb) = generate().unwrap();
        assert_ne!(a.expose(), b.expose());
        assert!(a.expose().starts_with(PREFIX));
        assert_eq!(a.expose().len(), PREFIX.len() + 64);
        assert!(ha.matches(&Hash::of(a.expose())));
        assert!(!ha.matches(&hb));
        assert_eq!(Hash::from_hex(&ha.to_hex()).unwrap(), ha);
        assert!(ha.matches_hex(&ha.to_hex()));
        assert!(ha.matches_hex(&ha.to_hex().to_uppercase()));
        assert!(!ha.matches_hex(&hb.to_hex()));
        assert!(!ha.matches_hex(&ha.to_hex()[..63]));
        // Control bytes that or-ing 0x20 would turn into digits do not pass for them.
        let digits = Hash([0x19; 32]);
        assert!(digits.matches_hex(&"19".repeat(32)));
        let spoof = "\u{11}\u{19}".repeat(32);
        assert_eq!(spoof.len(), 64);
        assert!(!digits.matches_hex(&spoof));
        assert!(!digits.matches_hex(&format!("{}\u{19}", "19".repeat(31) + "1")));
        // Each digit counts, wherever it differs.
        let hex = ha.to_hex();
        for i in [0, 7, 8, 31, 63] {
            let mut other = hex.clone().into_bytes();
            other[i] = if other[i] == b'0' { b'1' } else { b'0' };
            assert!(!ha.matches_hex(std::str::from_utf8(&other).unwrap()), "{i}");
        }
        assert!(!format!("{ha:?}").contains(&ha.to_hex()));
        let m = masked(&a);
        assert!(m.starts_with("kfg_…") && m.len() < 12 && a.expose().ends_with(&m[7..]));
    }
}
