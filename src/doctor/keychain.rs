//! Doctor checks of the keychain: the backend reachable and unlocked, Claude Code's own
//! login, and cf's `cf-claude-token` item readable. The store is opened with a zero prompt
//! timeout, and items that a read would make macOS prompt for are only looked at through
//! their attributes.

use std::path::Path;

use time::OffsetDateTime;

use super::{Check, Context};
use crate::credential::Credential;
use crate::paths;
use crate::source::chain::{claude_login, LoginLocation};
use crate::source::{Source, SourceError};
use crate::store::{is_shared_with_cli, Backend, ItemId, LazyStore, Store, StoreError};

const KEYCHAIN: &str = "keychain";
const LOGIN: &str = "claude login";
const CF_ITEM: &str = "cf item";

/// The fix a store error names, or a generic one.
fn store_fix(e: &StoreError) -> String {
    match e {
        StoreError::Locked { fix, .. } | StoreError::Unavailable { fix, .. } => (*fix).to_owned(),
        StoreError::Denied { .. } => {
            "allow keyferry to read the item (macOS: click Always Allow, or use [keychain] \
             backend = \"security-cli\"), then run `keyferry doctor` again"
                .into()
        }
        StoreError::Ambiguous { .. } => {
            "remove the duplicate items and store the token again with `keyferry setup`".into()
        }
        StoreError::NotUtf8 { .. } => "store the token again with `keyferry setup`".into(),
        StoreError::Unwritable { .. } | StoreError::Platform { .. } => {
            "check the keychain service (its log), or choose another [keychain] backend in \
             config.toml"
                .into()
        }
    }
}

/// Whether reading `id` through this backend would prompt after each CLI refresh: on
/// macOS, Security.framework reads of items that `security` rewrites.
fn read_would_prompt(backend: Backend, id: &ItemId) -> bool {
    cfg!(target_os = "macos") && backend == Backend::Macos && is_shared_with_cli(id)
}

const PROMPT_FIX: &str = "set [keychain] backend = \"auto\" (or \"security-cli\") in \
    config.toml: items shared with command-line tools are then read through `security`, \
    which Claude Code's rewrites do not lock out";

pub(super) fn checks(ctx: &Context<'_>) -> Vec<Check> {
    // Never prompt: a doctor that hangs on an unlock dialog diagnoses nothing.
    let mut opts = ctx.config.keychain.store_options();
    opts.prompt_timeout_secs = 0;
    let lazy = LazyStore::with_options(opts);
    let (keychain, store) = match lazy.get() {
        Err(e) => (Check::fail(KEYCHAIN, e.to_string(), store_fix(&e)), None),
        Ok(s) => match s.ensure_unlocked() {
            Err(e) => (Check::fail(KEYCHAIN, e.to_string(), store_fix(&e)), None),
            Ok(()) => (
                Check::ok(
                    KEYCHAIN,
                    match s.backend() {
                        Backend::SecretService => {
                            "secret-service: reachable, default collection unlocked".to_owned()
                        }
                        b => format!("{}: reachable", b.as_str()),
                    },
                ),
                Some(s),
            ),
        },
    };
    let mut out = vec![keychain];
    out.push(login(ctx, store));
    out.push(cf_item(ctx, store));
    out
}

/// Claude Code's login; its absence fails only when no other source gives `claude` a token.
fn login(ctx: &Context<'_>, store: Option<&dyn Store>) -> Check {
    let fix = "log in with Claude Code (`claude`, then /login), or store a token with \
               `keyferry setup`";
    let place = match claude_login(ctx.env, cfg!(target_os = "macos")) {
        LoginLocation::File(p) => match file_login(&p) {
            Ok(Some(detail)) => return Check::ok(LOGIN, detail),
            Ok(None) => paths::display(&p),
            Err((detail, None)) => return Check::fail(LOGIN, detail, fix),
            Err((detail, Some(own_fix))) => return Check::fail(LOGIN, detail, own_fix),
        },
        LoginLocation::Keychain(id) => {
            let Some(store) = store else {
                return Check::skip(LOGIN, "the keychain is not usable (see above)");
            };
            match store.stamp(&id) {
                Ok(Some(_)) if read_would_prompt(store.backend(), &id) => {
                    return Check::warn(
                        LOGIN,
                        format!(
                            "found in the Keychain ({}), but reading it through \
                             Security.framework prompts after every Claude Code refresh",
                            id.service
                        ),
                        PROMPT_FIX,
                    )
                }
                Ok(Some(_)) => {
                    return Check::ok(
                        LOGIN,
                        format!(
                            "found in the Keychain ({}); read through `security`, so Claude \
                             Code's refreshes cause no prompt",
                            id.service
                        ),
                    )
                }
                Ok(None) => format!("Keychain item {:?}", id.service),
                Err(e) => return Check::fail(LOGIN, e.to_string(), store_fix(&e)),
            }
        }
    };
    let detail = format!("no Claude Code login at {place}");
    match other_claude_source(ctx, store) {
        // claude is served: `keyferry setup` would change nothing worth changing.
        Some(other) => Check::warn(
            LOGIN,
            format!("{detail} (claude is served from {other})"),
            "nothing to do unless you want Claude Code's own login as a fallback: `claude`, \
             then /login",
        ),
        None => Check::fail(
            LOGIN,
            format!("{detail}, and no other source of claude has a token"),
            fix,
        ),
    }
}

/// `Some(detail)` for a login file that parses; otherwise its problem, naming the file,
/// and the fix when it is not "log in again".
fn file_login(p: &Path) -> Result<Option<String>, (String, Option<String>)> {
    let shown = paths::display(p);
    let text = match crate::source::read_private(p) {
        Ok(Some(t)) => t,
        Ok(None) => return Ok(None),
        Err(e @ SourceError::UnsafeMode { .. }) => {
            return Err((e.to_string(), Some(format!("chmod 600 {shown}"))))
        }
        Err(e @ SourceError::WrongOwner { .. }) => {
            return Err((e.to_string(), Some(format!("chown $USER {shown}"))))
        }
        Err(e) => return Err((e.to_string(), None)),
    };
    let origin = format!("claude-login:file:{shown}");
    let c = Credential::parse(&text, &origin).map_err(|e| (e.to_string(), None))?;
    let i = c.inspect(OffsetDateTime::now_utc());
    Ok(Some(format!(
        "{shown} ({}, access token expires {}; Claude Code refreshes it)",
        i.kind,
        i.expires_in.as_deref().unwrap_or("at an unknown time")
    )))
}

/// The first other source of `claude` that holds something, looked at without reading a
/// secret (variables set, files present, keychain attributes).
fn other_claude_source(ctx: &Context<'_>, store: Option<&dyn Store>) -> Option<String> {
    let spec = ctx.config.spec("claude").ok()?;
    spec.chain.iter().find_map(|s| {
        let present = match s {
            Source::ClaudeLogin => false,
            Source::Env { var } => (ctx.env)(var).is_some_and(|v| !v.trim().is_empty()),
            Source::Keychain { service, account } => {
                let id = ItemId::new(service, account.clone().unwrap_or_else(paths::user));
                store.is_some_and(|st| matches!(st.stamp(&id), Ok(Some(_))))
            }
            Source::File { path } | Source::Dotenv { path, .. } => paths::expand(path).is_file(),
        };
        present.then(|| s.to_string())
    })
}

/// cf's item (the item `keyferry setup` stores into): present and holding a Claude token.
fn cf_item(ctx: &Context<'_>, store: Option<&dyn Store>) -> Check {
    let spec = match ctx.config.spec("claude") {
        Ok(s) => s,
        Err(e) => return Check::fail(CF_ITEM, e.to_string(), "fix the config file"),
    };
    let Some(id) = spec.store else {
        return Check::skip(CF_ITEM, "the claude chain has no keychain item");
    };
    let name = format!("{CF_ITEM} {}", id.service);
    let Some(store) = store else {
        return Check::skip(name, "the keychain is not usable (see above)");
    };
    let setup = "store a token there with `keyferry setup` (cf reads it from there)";
    if read_would_prompt(store.backend(), &id) {
        return match store.stamp(&id) {
            Ok(Some(_)) => Check::warn(
                name,
                "present, but reading it through Security.framework would prompt",
                PROMPT_FIX,
            ),
            Ok(None) => Check::warn(name, "not stored", setup),
            Err(e) => Check::fail(name, e.to_string(), store_fix(&e)),
        };
    }
    match store.get(&id) {
        Ok(Some(secret)) => {
            let origin = format!("keychain:{}", id.service);
            match Credential::parse(&secret, &origin) {
                Ok(c) => Check::ok(
                    name,
                    format!(
                        "readable ({}, account {:?})",
                        c.inspect(OffsetDateTime::now_utc()).kind,
                        id.account
                    ),
                ),
                Err(e) => Check::fail(name, e.to_string(), setup),
            }
        }
        // Served from a source cf reads too (its variable, its token file): nothing to set up.
        Ok(None) => match other_claude_source(ctx, Some(store)) {
            Some(other) => Check::skip(
                name,
                format!(
                    "not stored (account {:?}); claude is served from {other}",
                    id.account
                ),
            ),
            None => Check::warn(
                name,
                format!("not stored (account {:?})", id.account),
                setup,
            ),
        },
        Err(e) => Check::fail(name, e.to_string(), store_fix(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_keep_their_own_fix() {
        let locked = StoreError::Locked {
            backend: "secret-service",
            item: "x".into(),
            fix: "unlock it",
        };
        assert_eq!(store_fix(&locked), "unlock it");
        let cf = ItemId::new("cf-claude-token", "me");
        // Only Security.framework reads of CLI-shared items prompt, and only on macOS.
        assert_eq!(
            read_would_prompt(Backend::Macos, &cf),
            cfg!(target_os = "macos")
        );
        assert!(!read_would_prompt(Backend::SecurityCli, &cf));
        assert!(!read_would_prompt(
            Backend::Macos,
            &ItemId::new("mine", "me")
        ));
    }
}
