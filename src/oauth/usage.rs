//! Subscription usage: the 5-hour and 7-day utilisation of a Claude login, without spending quota.
//!
//! `GET https://api.anthropic.com/api/oauth/usage` with `Authorization: Bearer <access token>`
//! and `anthropic-beta: oauth-2025-04-20`; answers `five_hour` / `seven_day` objects with
//! `utilization` (percent) and `resets_at` (RFC 3339). It needs the `user:profile` scope, which
//! setup-tokens (`user:inference` only) lack. Sources: DESIGN.md "More domain facts"; Claude
//! Code 2.1.197 (`Ade()` in its bundle: `GET /api/oauth/usage`, skipped unless the login has
//! `user:profile`, and `{utilization, resets_at}` per window).

use std::collections::HashMap;
use std::sync::Arc;

use hyper::Method;
use serde::Deserialize;
use time::OffsetDateTime;

use super::transport::{HttpClient, TransportError};
use crate::domain::{ErrorBody, ErrorCode};
use crate::secret::Secret;

pub const DEFAULT_USAGE_URL: &str = "https://api.anthropic.com/api/oauth/usage";
pub const PROFILE_SCOPE: &str = "user:profile";
const BETA: &str = "oauth-2025-04-20";

pub use crate::domain::{SubscriptionUsage as Usage, UsageWindow as Window};

#[derive(Debug, Clone, thiserror::Error)]
pub enum UsageError {
    /// Not an error to retry: this login can never show figures.
    #[error("the token lacks the user:profile scope (setup-tokens do)")]
    NoProfileScope,
    #[error("usage endpoint refused the access token (HTTP {0}); it may have just been refreshed")]
    Unauthorized(u16),
    #[error("usage endpoint answered HTTP {0}")]
    Status(u16),
    #[error("usage endpoint answered 200 with an unreadable body")]
    Malformed,
    #[error(transparent)]
    Transport(#[from] TransportError),
}

impl UsageError {
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NoProfileScope => ErrorCode::NoUsageScope,
            Self::Unauthorized(_) | Self::Status(_) | Self::Transport(_) | Self::Malformed => {
                ErrorCode::UsageUnavailable
            }
        }
    }

    /// The wire form: `{code, message}`.
    #[must_use]
    pub fn body(&self) -> ErrorBody {
        ErrorBody::new(self.code(), self.to_string())
    }
}

/// Whether a login with these scopes can be asked for usage.
///
/// # Errors
/// [`UsageError::NoProfileScope`] when `user:profile` is missing (setup-tokens, env tokens).
pub fn check_scope(scopes: &[String]) -> Result<(), UsageError> {
    if scopes.iter().any(|s| s == PROFILE_SCOPE) {
        Ok(())
    } else {
        Err(UsageError::NoProfileScope)
    }
}

/// Fetches usage once. The scope is checked first, so a setup-token never causes a call.
///
/// # Errors
/// Missing scope, refused token, other HTTP status, malformed body, transport failure.
pub async fn usage(
    client: &HttpClient,
    usage_url: &str,
    access_token: &Secret,
    scopes: &[String],
) -> Result<Usage, UsageError> {
    check_scope(scopes)?;
    let auth = zeroize::Zeroizing::new(format!("Bearer {}", access_token.expose()));
    let resp = client
        .send(
            Method::GET,
            usage_url,
            &[
                ("authorization", auth.as_str()),
                ("anthropic-beta", BETA),
                ("accept", "application/json"),
            ],
            None,
        )
        .await?;
    match resp.status {
        200 => parse(&resp.body),
        401 | 403 => Err(UsageError::Unauthorized(resp.status)),
        s => Err(UsageError::Status(s)),
    }
}

/// How often usage is fetched at most per login (the figures move slowly; polling spends
/// nothing, but there is no reason to ask more often).
pub const MIN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// Remembers each login's last answer for [`MIN_INTERVAL`]; a new access token (a refresh,
/// a new login) asks again at once. Askers of one login are serialised (they share one call);
/// logins do not wait for each other.
#[derive(Default)]
pub struct UsageCache {
    entries: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Cached>>>>>,
}

struct Cached {
    at: std::time::Instant,
    access: String,
    result: Result<Usage, UsageError>,
}

impl UsageCache {
    /// The cached or freshly fetched usage of login `name`.
    ///
    /// # Errors
    /// As [`usage`]; errors are cached too, so a failing endpoint is not hammered.
    pub async fn get(
        &self,
        client: &HttpClient,
        usage_url: &str,
        name: &str,
        access_token: &Secret,
        scopes: &[String],
    ) -> Result<Usage, UsageError> {
        let access = super::journal::fingerprint(access_token);
        let slot = Arc::clone(
            self.entries
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(name.to_owned())
                .or_default(),
        );
        let mut cached = slot.lock().await;
        if let Some(c) = cached.as_ref() {
            if c.access == access && c.at.elapsed() < MIN_INTERVAL {
                return c.result.clone();
            }
        }
        let result = usage(client, usage_url, access_token, scopes).await;
        *cached = Some(Cached {
            at: std::time::Instant::now(),
            access,
            result: result.clone(),
        });
        result
    }
}

fn parse(body: &[u8]) -> Result<Usage, UsageError> {
    #[derive(Deserialize)]
    struct Raw {
        five_hour: Option<RawWindow>,
        seven_day: Option<RawWindow>,
    }
    #[derive(Deserialize)]
    struct RawWindow {
        utilization: Option<f64>,
        resets_at: Option<String>,
    }
    let raw: Raw = serde_json::from_slice(body).map_err(|_| UsageError::Malformed)?;
    let window = |w: Option<RawWindow>| -> Result<Option<Window>, UsageError> {
        let Some(w) = w else { return Ok(None) };
        let Some(utilization) = w.utilization else {
            return Ok(None);
        };
        let resets_at = w
            .resets_at
            .map(|r| {
                OffsetDateTime::parse(&r, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| UsageError::Malformed)
            })
            .transpose()?;
        Ok(Some(Window {
            utilization,
            resets_at,
        }))
    };
    Ok(Usage {
        five_hour: window(raw.five_hour)?,
        seven_day: window(raw.seven_day)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_windows_and_tolerates_nulls() {
        let u = parse(br#"{"five_hour":{"utilization":12.5,"resets_at":"2026-12-01T10:00:00+00:00"},"seven_day":{"utilization":40,"resets_at":null},"seven_day_opus":null}"#).unwrap();
        let five = u.five_hour.unwrap();
        assert!((five.utilization - 12.5).abs() < f64::EPSILON);
        assert_eq!(five.resets_at.unwrap().unix_timestamp(), 1_796_119_200);
        assert_eq!(u.seven_day.unwrap().resets_at, None);
        let u = parse(br#"{"five_hour":null}"#).unwrap();
        assert_eq!(u.five_hour, None);
        assert_eq!(u.seven_day, None);
        assert!(matches!(parse(b"[1]"), Err(UsageError::Malformed)));
        assert!(matches!(
            parse(br#"{"five_hour":{"utilization":1,"resets_at":"soon"}}"#),
            Err(UsageError::Malformed)
        ));
    }

    #[test]
    fn setup_token_scopes_say_why() {
        assert!(check_scope(&["user:inference".into(), "user:profile".into()]).is_ok());
        let err = check_scope(&["user:inference".into()]).unwrap_err();
        assert!(err.to_string().contains("user:profile"), "{err}");
        assert!(matches!(check_scope(&[]), Err(UsageError::NoProfileScope)));
    }
}
