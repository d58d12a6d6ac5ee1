//! The non-secret view of a credential: masked value, fingerprint, expiry in words.

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::Credential;

pub use crate::domain::{rfc3339, Expiry, Inspection};

impl Inspection {
    pub(super) fn of(c: &Credential, now: OffsetDateTime) -> Self {
        let remaining = c.expires_at.map(|at| (at - now).whole_seconds());
        Self {
            kind: c.kind,
            masked: mask(c.token.expose()),
            fingerprint: fingerprint(c.token.expose()),
            expires_at: c.expires_at.and_then(rfc3339),
            expires_in_secs: remaining,
            expires_in: remaining.map(relative),
            expiry: c.expiry,
            plan: c.plan.clone(),
            rate_limit_tier: c.rate_limit_tier.clone(),
            scopes: c.scopes.clone(),
            has_refresh_token: c.refresh_token.is_some(),
        }
    }
}

const KNOWN_PREFIXES: [&str; 4] = ["sk-ant-oat01-", "sk-ant-api03-", "sk-ant-ort01-", "ya29."];

/// What is shown of a value nothing may be shown of: a short token, an `--env` value.
pub const HIDDEN: &str = "…****";

/// Prefix + last 4: `sk-ant-oat01-…x9Zq`. Short or unknown tokens reveal less.
#[must_use]
pub fn mask(token: &str) -> String {
    let chars: Vec<char> = token.chars().collect();
    if chars.len() < 16 {
        return HIDDEN.to_owned();
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    let prefix = KNOWN_PREFIXES
        .iter()
        .find(|p| token.starts_with(**p))
        .map_or_else(|| chars[..4].iter().collect(), |p| (*p).to_owned());
    format!("{prefix}…{tail}")
}

/// A stable, non-reversible identifier: the first 8 bytes of SHA-256, hex.
#[must_use]
pub fn fingerprint(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    format!("sha256:{}", hex::encode(&digest[..8]))
}

fn relative(secs: i64) -> String {
    if secs >= 0 {
        format!("in {}", human_duration(secs))
    } else {
        format!("expired {} ago", human_duration(-secs))
    }
}

/// Two most significant units: `3 d 4 h`, `2 h 5 min`, `45 s`.
#[must_use]
pub fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3_600,
        secs % 3_600 / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s} s"),
        (0, 0, m) => format!("{m} min"),
        (0, h, 0) => format!("{h} h"),
        (0, h, m) => format!("{h} h {m} min"),
        (d, 0, _) => format!("{d} d"),
        (d, h, _) => format!("{d} d {h} h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn mask_keeps_prefix_and_last_four() {
        assert_eq!(
            mask("sk-ant-oat01-abcdefghijklmnop1234"),
            "sk-ant-oat01-…1234"
        );
        assert_eq!(mask("ghp_abcdefghijklmnopWXYZ"), "ghp_…WXYZ");
        assert_eq!(mask("short"), "…****");
    }

    #[test]
    fn fingerprint_is_stable_and_short() {
        let f = fingerprint("sk-ant-oat01-x");
        assert_eq!(f, fingerprint("sk-ant-oat01-x"));
        assert_ne!(f, fingerprint("sk-ant-oat01-y"));
        assert_eq!(f.len(), "sha256:".len() + 16);
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(3 * 86_400 + 4 * 3_600 + 59), "3 d 4 h");
        assert_eq!(human_duration(2 * 3_600 + 5 * 60), "2 h 5 min");
        assert_eq!(human_duration(3_600), "1 h");
        assert_eq!(human_duration(45), "45 s");
        assert_eq!(human_duration(7 * 86_400), "7 d");
        assert_eq!(relative(-7_200), "expired 2 h ago");
    }

    #[test]
    fn inspection_has_no_secret() {
        let c = Credential::parse(
            &Secret::new(r#"{"claudeAiOauth":{"accessToken":"sk-ant-oat01-SECRETSECRET9876","refreshToken":"sk-ant-ort01-REFRESHREFRESH","expiresAt":1790000000000,"subscriptionType":"pro"}}"#.into()),
            "t",
        )
        .unwrap();
        let now = OffsetDateTime::from_unix_timestamp(1_789_990_000).unwrap();
        let i = c.inspect(now);
        let json = serde_json::to_string(&i).unwrap();
        assert!(!json.contains("SECRETSECRET"), "{json}");
        assert!(!json.contains("REFRESH"), "{json}");
        assert_eq!(i.masked, "sk-ant-oat01-…9876");
        assert_eq!(i.expires_in.as_deref(), Some("in 2 h 46 min"));
        assert!(i.has_refresh_token);
    }
}
