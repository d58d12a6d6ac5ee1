//! Codex's subscription figures: `GET https://chatgpt.com/backend-api/wham/usage` with the
//! ChatGPT login's `Authorization: Bearer` and `ChatGPT-Account-ID` (what Codex's `/status`
//! shows; openai/codex `backend-client` `get_rate_limits`, and public readers of it such as
//! fanlv/quartet `codex.go`). The answer's `rate_limit.primary_window` is the short (5-hour)
//! limit and `secondary_window` the weekly one, each `{used_percent, limit_window_seconds,
//! reset_after_seconds, reset_at (Unix seconds)}`. An API-key login has no figures.

use serde::Deserialize;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::oauth::usage::{Usage, UsageAsk, UsageError, Window};

pub const DEFAULT_USAGE_URL: &str = "https://chatgpt.com/backend-api/wham/usage";

/// A login with a ChatGPT workspace behind it: an API key (`sk-…`) or a login without an
/// account id has no figures, so no call is made.
pub fn ready(ask: &UsageAsk<'_>) -> Result<(), UsageError> {
    match ask.account {
        Some(a) if !a.is_empty() && !ask.access.expose().starts_with("sk-") => Ok(()),
        _ => Err(UsageError::NotASubscription),
    }
}

pub fn headers(ask: &UsageAsk<'_>) -> Vec<(&'static str, Zeroizing<String>)> {
    let mut h = vec![
        (
            "authorization",
            Zeroizing::new(format!("Bearer {}", ask.access.expose())),
        ),
        ("accept", Zeroizing::new("application/json".to_owned())),
    ];
    if let Some(a) = ask.account {
        h.push(("chatgpt-account-id", Zeroizing::new(a.to_owned())));
    }
    h
}

#[derive(Deserialize)]
struct Raw {
    rate_limit: Option<Limits>,
}

#[derive(Deserialize)]
struct Limits {
    primary_window: Option<RawWindow>,
    secondary_window: Option<RawWindow>,
}

#[derive(Deserialize)]
struct RawWindow {
    used_percent: Option<f64>,
    reset_at: Option<i64>,
}

impl RawWindow {
    fn window(self) -> Result<Option<Window>, UsageError> {
        let Some(utilization) = self.used_percent else {
            return Ok(None);
        };
        let resets_at = self
            .reset_at
            .map(|t| OffsetDateTime::from_unix_timestamp(t).map_err(|_| UsageError::Malformed))
            .transpose()?;
        Ok(Some(Window {
            utilization,
            resets_at,
        }))
    }
}

pub fn parse(body: &[u8]) -> Result<Usage, UsageError> {
    let raw: Raw = serde_json::from_slice(body).map_err(|_| UsageError::Malformed)?;
    let Some(limits) = raw.rate_limit else {
        return Ok(Usage {
            five_hour: None,
            seven_day: None,
        });
    };
    Ok(Usage {
        five_hour: limits
            .primary_window
            .map(RawWindow::window)
            .transpose()?
            .flatten(),
        seven_day: limits
            .secondary_window
            .map(RawWindow::window)
            .transpose()?
            .flatten(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn both_windows_from_the_rate_limit() {
        let u = parse(br#"{"plan_type":"pro","rate_limit":{"allowed":true,"primary_window":{"used_percent":23.5,"limit_window_seconds":18000,"reset_after_seconds":600,"reset_at":1796119200},"secondary_window":{"used_percent":4,"limit_window_seconds":604800,"reset_at":1796500000}},"credits":null}"#).unwrap();
        let five = u.five_hour.unwrap();
        assert!((five.utilization - 23.5).abs() < f64::EPSILON);
        assert_eq!(five.resets_at.unwrap().unix_timestamp(), 1_796_119_200);
        assert_eq!(
            u.seven_day.unwrap().resets_at.unwrap().unix_timestamp(),
            1_796_500_000
        );
        let none = parse(br#"{"plan_type":"free"}"#).unwrap();
        assert_eq!((none.five_hour, none.seven_day), (None, None));
        assert!(matches!(parse(b"[]"), Err(UsageError::Malformed)));
    }

    #[test]
    fn an_api_key_or_no_workspace_has_no_figures() {
        let jwt = Secret::new("eyJ.a.b".into());
        let key = Secret::new("sk-proj-1".into());
        let ask = |access, account| UsageAsk {
            access,
            scopes: &[],
            account,
        };
        assert!(ready(&ask(&jwt, Some("acct"))).is_ok());
        assert!(ready(&ask(&jwt, None)).is_err());
        assert!(ready(&ask(&key, Some("acct"))).is_err());
        let h = headers(&ask(&jwt, Some("acct")));
        assert!(h
            .iter()
            .any(|(k, v)| *k == "chatgpt-account-id" && v.as_str() == "acct"));
    }
}
