//! Renderings of credentials for people (aligned text) and programs (JSON). No secrets,
//! except in [`secret_json`], the one place `get --json` builds a document holding one.

use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;

use crate::broker::Found;
use crate::credential::Inspection;
use crate::domain::{CredentialStatus, Health};

/// `show`'s data: a credential's inspection plus where it came from.
#[derive(Debug, Serialize)]
pub struct Shown {
    pub name: String,
    pub source: String,
    #[serde(flatten)]
    pub inspection: Inspection,
}

impl Shown {
    #[must_use]
    pub fn of(found: &Found, now: OffsetDateTime) -> Self {
        Self {
            name: found.name.clone(),
            source: found.resolved.origin.clone(),
            inspection: found.resolved.credential.inspect(now),
        }
    }

    /// The `token:show`-style block.
    #[must_use]
    pub fn text(&self) -> String {
        let i = &self.inspection;
        let mut rows = vec![
            ("source", self.source.clone()),
            ("kind", i.kind.to_string()),
            ("token", i.masked.clone()),
            ("fingerprint", i.fingerprint.clone()),
        ];
        rows.push(("expires", expiry_text(i)));
        if let Some(p) = &i.plan {
            rows.push(("plan", p.clone()));
        }
        if let Some(t) = &i.rate_limit_tier {
            rows.push(("tier", t.clone()));
        }
        if !i.scopes.is_empty() {
            rows.push(("scopes", i.scopes.join(" ")));
        }
        rows.push((
            "refresh",
            if i.has_refresh_token {
                "yes (stays on the host)"
            } else {
                "no"
            }
            .into(),
        ));
        let mut out = format!("{}\n", self.name);
        for (k, v) in rows {
            out.push_str(&format!("  {k:<12}{v}\n"));
        }
        out
    }
}

fn expiry_text(i: &Inspection) -> String {
    match (&i.expires_at, &i.expires_in) {
        (Some(at), Some(rel)) => match i.expiry {
            crate::credential::Expiry::Assumed { .. } => {
                format!("{at} ({rel}; assumed from when it was stored)")
            }
            _ => format!("{at} ({rel})"),
        },
        _ => "unknown".into(),
    }
}

/// A credential's status as the agent and `status` report it.
#[must_use]
pub fn status_of(
    name: &str,
    result: &Result<Found, crate::Error>,
    now: OffsetDateTime,
    thresholds: &crate::expiry::Thresholds,
) -> CredentialStatus {
    match result {
        Ok(found) => {
            let c = &found.resolved.credential;
            CredentialStatus {
                name: name.to_owned(),
                health: thresholds.health(c.refresh_token.is_some(), c.expires_at, now),
                source: Some(found.resolved.origin.clone()),
                inspection: Some(c.inspect(now)),
                error: None,
                warnings: found.warnings.clone(),
            }
        }
        Err(e) => CredentialStatus {
            name: name.to_owned(),
            health: if matches!(e, crate::Error::NotFound { .. }) {
                Health::Missing
            } else {
                Health::Error
            },
            source: None,
            inspection: None,
            error: Some(e.body()),
            warnings: e.warnings().to_vec(),
        },
    }
}

/// cfauth's status line: `claude: source=keychain:cf-claude-token kind=… expires=… (in …)`.
#[must_use]
pub fn status_line(s: &CredentialStatus) -> String {
    crate::escape::escape(&status_line_raw(s)).into_owned()
}

fn status_line_raw(s: &CredentialStatus) -> String {
    match (&s.source, &s.inspection) {
        (Some(source), Some(i)) => {
            let mut line = format!("{}: source={source} kind={}", s.name, i.kind);
            match (&i.expires_at, &i.expires_in) {
                (Some(at), Some(rel)) => line.push_str(&format!(" expires={at} ({rel})")),
                _ => line.push_str(" expires=unknown"),
            }
            if s.health != Health::Ok {
                line.push_str(&format!(" health={}", health_word(s.health)));
            }
            line
        }
        _ => format!(
            "{}: source=none ({})",
            s.name,
            s.error.as_ref().map_or("not_found", |e| e.code.as_str())
        ),
    }
}

/// A credential the user never set up: not under `[credentials.*]` in the config, nothing
/// of it found, and nothing to warn about (no unsafe or malformed file of it on disk).
/// `status` gives it one quiet line ([`not_set_up_line`]) instead of a warning.
#[must_use]
pub fn never_set_up(s: &CredentialStatus, config: &crate::config::Config) -> bool {
    !config.credentials.contains_key(&s.name)
        && s.health == Health::Missing
        && s.warnings.is_empty()
        && s.error
            .as_ref()
            .map_or(true, |e| e.code == crate::domain::ErrorCode::NotFound)
}

/// `codex: not set up`.
#[must_use]
pub fn not_set_up_line(s: &CredentialStatus) -> String {
    format!("{}: not set up", crate::escape::escape(&s.name))
}

#[must_use]
pub fn health_word(h: Health) -> &'static str {
    match h {
        Health::Ok => "ok",
        Health::Expiring => "expiring",
        Health::Missing => "missing",
        Health::Error => "error",
        Health::Expired => "expired",
    }
}

/// `get --json` / `export --json`: the one document that carries the token.
#[must_use]
pub fn secret_json(found: &Found, env_var: &str) -> serde_json::Value {
    let c = &found.resolved.credential;
    json!({
        "name": found.name,
        "source": found.resolved.origin,
        "kind": c.kind,
        "env_var": env_var,
        "token": c.token.expose(),
        "expires_at": c.expires_at.and_then(crate::credential::rfc3339),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ErrorBody, ErrorCode};

    fn missing(name: &str, warnings: &[&str], code: ErrorCode) -> CredentialStatus {
        CredentialStatus {
            name: name.to_owned(),
            health: Health::Missing,
            source: None,
            inspection: None,
            error: Some(ErrorBody::new(code, "no token found")),
            warnings: warnings.iter().map(|w| (*w).to_owned()).collect(),
        }
    }

    #[test]
    fn only_what_was_never_configured_and_left_nothing_on_disk_is_quiet() {
        let mut config = crate::config::Config::default();
        assert!(never_set_up(
            &missing("codex", &[], ErrorCode::NotFound),
            &config
        ));
        assert_eq!(
            not_set_up_line(&missing("codex", &[], ErrorCode::NotFound)),
            "codex: not set up"
        );
        // A file of it was skipped (unsafe mode): the user has something to fix.
        let skipped = missing(
            "codex",
            &["~/.codex/auth.json is mode 644"],
            ErrorCode::NotFound,
        );
        assert!(!never_set_up(&skipped, &config));
        // Malformed, not missing.
        assert!(!never_set_up(
            &missing("codex", &[], ErrorCode::Other("malformed".into())),
            &config
        ));
        // Configured by the user: its absence is worth a warning.
        config
            .credentials
            .insert("codex".into(), crate::config::CredentialConfig::default());
        assert!(!never_set_up(
            &missing("codex", &[], ErrorCode::NotFound),
            &config
        ));
    }
}
