//! Subscription usage: the short (5-hour) and weekly utilisation of a login, without
//! spending quota. Each provider's endpoint, headers and answer live with its login
//! (`login::claude`, `login::codex`); this file asks, caches and names the failures.

use std::collections::HashMap;
use std::sync::Arc;

use hyper::Method;

use super::transport::{HttpClient, TransportError};
use crate::domain::{ErrorBody, ErrorCode};
use crate::secret::Secret;

pub use super::login::claude::{DEFAULT_USAGE_URL, PROFILE_SCOPE};
use super::login::LoginProvider;

/// What a usage request is made from: the login's current access token, its scopes and
/// the account it acts for (Codex's workspace).
pub struct UsageAsk<'a> {
    pub access: &'a Secret,
    pub scopes: &'a [String],
    pub account: Option<&'a str>,
}

pub use crate::domain::{SubscriptionUsage as Usage, UsageWindow as Window};

#[derive(Debug, Clone, thiserror::Error)]
pub enum UsageError {
    /// Not an error to retry: this login can never show figures.
    #[error("the token lacks the user:profile scope (setup-tokens do)")]
    NoProfileScope,
    /// Also never to retry: an API key, or a login with no subscription behind it.
    #[error("this login has no subscription figures (an API key, or no ChatGPT workspace)")]
    NotASubscription,
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
            Self::NoProfileScope | Self::NotASubscription => ErrorCode::NoUsageScope,
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

/// Fetches usage once. The login is checked first, so a setup-token or an API key never
/// causes a call.
///
/// # Errors
/// A login without figures, refused token, other HTTP status, malformed body, transport
/// failure.
pub async fn usage(
    client: &HttpClient,
    usage_url: &str,
    provider: &dyn LoginProvider,
    ask: &UsageAsk<'_>,
) -> Result<Usage, UsageError> {
    provider.usage_ready(ask)?;
    let headers = provider.usage_headers(ask);
    let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let resp = client.send(Method::GET, usage_url, &pairs, None).await?;
    match resp.status {
        200 => provider.parse_usage(&resp.body),
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
        provider: &dyn LoginProvider,
        ask: &UsageAsk<'_>,
    ) -> Result<Usage, UsageError> {
        let access = super::journal::fingerprint(ask.access);
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
        let result = usage(client, usage_url, provider, ask).await;
        *cached = Some(Cached {
            at: std::time::Instant::now(),
            access,
            result: result.clone(),
        });
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_token_scopes_say_why() {
        assert!(check_scope(&["user:inference".into(), "user:profile".into()]).is_ok());
        let err = check_scope(&["user:inference".into()]).unwrap_err();
        assert!(err.to_string().contains("user:profile"), "{err}");
        assert!(matches!(check_scope(&[]), Err(UsageError::NoProfileScope)));
    }
}
