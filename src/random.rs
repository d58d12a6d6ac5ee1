//! Randomness from the operating system, failing closed: a caller gets bytes from the OS or
//! an error, never zeros, a fallback generator or a retry loop.

/// The OS could not provide randomness.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed: {0}")]
pub struct RandomError(String);

/// Fills an array with OS randomness.
///
/// # Errors
/// The OS generator failed.
pub fn bytes<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| RandomError(e.to_string()))?;
    Ok(b)
}

/// A random id that stays exact in JSON numbers (53 bits) and is never 0.
///
/// # Errors
/// The OS generator failed.
pub fn json_id() -> Result<u64, RandomError> {
    Ok((u64::from_le_bytes(bytes::<8>()?) >> 11).max(1))
}

#[cfg(test)]
mod tests {
    #[test]
    fn draws_differ_and_ids_fit_json() {
        let (a, b) = (super::bytes::<16>().unwrap(), super::bytes::<16>().unwrap());
        assert_ne!(a, b);
        assert_ne!(a, [0; 16]);
        let id = super::json_id().unwrap();
        assert!(id > 0 && id < (1 << 53));
    }
}
