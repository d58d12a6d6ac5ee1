//! The agent's lock: while locked no token is served. An optional passphrase is kept only as
//! an Argon2id hash under a random salt from the OS, compared in constant time, and wrong
//! guesses are answered ever more slowly, so the socket is no brute-force oracle.

use std::time::Duration;

use argon2::Argon2;
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use crate::secret::Secret;

/// The first wrong guess waits this long before the next is heard; each one doubles it.
const FIRST_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(30);

/// A locked agent's unlock condition.
pub(super) enum Lock {
    /// `unlock` alone unlocks.
    Open,
    /// The passphrase's Argon2id hash.
    Passphrase { salt: [u8; 16], hash: [u8; 32] },
    /// A passphrase was asked for but the OS had no randomness for its salt: rather than
    /// lock with a weak hash (or not at all), the agent stays locked until it restarts.
    Sealed,
}

/// Argon2id with the crate's defaults (19 MiB, 2 passes): tens of milliseconds per guess.
fn hash(salt: &[u8; 16], pass: &Secret) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    let hashed = Argon2::default().hash_password_into(pass.expose().as_bytes(), salt, &mut out);
    // The 19 MiB of blocks go back to the kernel when freed because `harden::process`
    // pinned glibc's mmap threshold (else a few guesses left the idle agent at ~50 MB).
    hashed.ok()?;
    Some(out)
}

impl Lock {
    /// A lock for `passphrase` (none or empty: [`Lock::Open`]). Blocking: runs the KDF.
    pub fn new(passphrase: Option<&Secret>) -> Self {
        let Some(pass) = passphrase.filter(|p| !p.is_empty()) else {
            return Self::Open;
        };
        let Ok(salt) = crate::random::bytes::<16>() else {
            tracing::error!("no OS randomness for the passphrase salt; the agent stays locked until it restarts");
            return Self::Sealed;
        };
        match hash(&salt, pass) {
            Some(hash) => Self::Passphrase { salt, hash },
            None => Self::Sealed,
        }
    }

    /// Whether `passphrase` opens this lock. Blocking: runs the KDF.
    pub fn opens(&self, passphrase: Option<&Secret>) -> bool {
        match self {
            Self::Open => true,
            Self::Sealed => false,
            Self::Passphrase { salt, hash: want } => passphrase
                .and_then(|p| hash(salt, p))
                .is_some_and(|got| bool::from(got.ct_eq(want))),
        }
    }
}

/// Wrong guesses so far and when the next guess may be heard.
#[derive(Default)]
pub(super) struct Throttle {
    failures: u32,
    next: Option<Instant>,
}

impl Throttle {
    /// When the next attempt may be checked.
    pub fn ready_at(&self) -> Option<Instant> {
        self.next
    }

    /// Records a wrong guess; returns the delay the next one waits.
    pub fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let delay = FIRST_DELAY
            .saturating_mul(1 << self.failures.saturating_sub(1).min(16))
            .min(MAX_DELAY);
        self.next = Some(Instant::now() + delay);
        delay
    }

    pub fn reset(&mut self) {
        *self = Self::default();
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passphrase_locks_open_only_for_the_right_words() {
        let lock = Lock::new(Some(&Secret::new("correct horse".into())));
        assert!(matches!(lock, Lock::Passphrase { .. }));
        assert!(lock.opens(Some(&Secret::new("correct horse".into()))));
        assert!(!lock.opens(Some(&Secret::new("correct horsE".into()))));
        assert!(!lock.opens(None));
        assert!(Lock::new(None).opens(None));
        assert!(Lock::new(Some(&Secret::new(String::new()))).opens(None));
        assert!(!Lock::Sealed.opens(Some(&Secret::new("x".into()))));
    }

    #[test]
    fn two_locks_with_one_passphrase_get_different_salts() {
        let p = Secret::new("same".into());
        let (Lock::Passphrase { salt: a, hash: ha }, Lock::Passphrase { salt: b, hash: hb }) =
            (Lock::new(Some(&p)), Lock::new(Some(&p)))
        else {
            panic!("both should hold a hash");
        };
        assert_ne!(a, b);
        assert_ne!(ha, hb);
        assert_ne!(a, [0; 16]);
    }

    #[test]
    fn each_wrong_guess_doubles_the_wait_up_to_a_cap() {
        let mut t = Throttle::default();
        assert!(t.ready_at().is_none());
        let waits: Vec<Duration> = (0..10).map(|_| t.failed()).collect();
        assert_eq!(waits[0], FIRST_DELAY);
        assert_eq!(waits[1], FIRST_DELAY * 2);
        assert_eq!(waits[2], FIRST_DELAY * 4);
        assert_eq!(*waits.last().unwrap(), MAX_DELAY);
        assert_eq!(t.failures(), 10);
        t.reset();
        assert_eq!(t.failures(), 0);
    }
}
