//! The child processes: kernel keyutils in a fresh session keyring, no Secret Service at
//! all, and a collection locked before the process started.

use std::time::{Duration, Instant};

use keyferry::store::{self, Backend, ItemId, LazyStore, Store, StoreError};

use crate::common::{self, SecretServiceFixture};
use crate::contract::{run_contract, Options};
use crate::report::{exposed, Report};
use crate::secret_service::locked_checks;
use crate::{child_prefix, PROMPT_BOUND};

/// No Secret Service reachable: `open(SecretService)` is `Unavailable` promptly and `Auto`
/// falls back to kernel keyutils. Returns the Auto store.
pub(crate) fn unavailable_checks(scope: &str, report: &mut Report) -> Option<Box<dyn Store>> {
    let t = Instant::now();
    let r = store::open(Backend::SecretService, 0);
    let took = t.elapsed();
    report.check(scope, took < PROMPT_BOUND, || {
        format!("open(SecretService) took {took:?}")
    });
    match r {
        Err(e @ StoreError::Unavailable { .. }) => {
            report.saw_error(scope, &e);
            report.check(scope, e.code() == "keychain_unavailable", || {
                format!("code {}", e.code())
            });
        }
        Err(e) => {
            report.saw_error(scope, &e);
            report.fail(
                scope,
                format!("open(SecretService): want Unavailable, got {e:?}"),
            );
        }
        Ok(s) => report.fail(
            scope,
            format!(
                "open(SecretService) succeeded with backend {:?}",
                s.backend()
            ),
        ),
    }
    let lazy = LazyStore::new(Backend::SecretService, 0);
    for attempt in 1..=2 {
        match lazy.get() {
            Err(StoreError::Unavailable { .. }) => {}
            Err(e) => report.fail(
                scope,
                format!("LazyStore::get attempt {attempt}: want Unavailable, got {e:?}"),
            ),
            Ok(s) => report.fail(
                scope,
                format!("LazyStore::get attempt {attempt} opened {:?}", s.backend()),
            ),
        }
    }
    match store::open(Backend::Auto, 0) {
        Ok(s) => {
            report.check(scope, s.backend() == Backend::Keyutils, || {
                format!(
                    "open(Auto) without a Secret Service gave {:?}, want Keyutils",
                    s.backend()
                )
            });
            Some(s)
        }
        Err(e) => {
            report.saw_error(scope, &e);
            report.fail(
                scope,
                format!("open(Auto) without a Secret Service failed: {e}"),
            );
            None
        }
    }
}

/// Runs under `keyctl session -`, on a bus with no Secret Service.
pub(crate) fn child_keyutils() {
    const S: &str = "keyutils";
    let prefix = child_prefix();
    let mut report = Report::default();
    let show = common::keyctl(&["show", "@s"]);
    assert!(
        show.status.success(),
        "keyutils cannot run here: `keyctl show @s` failed ({}): {}{}",
        show.status,
        String::from_utf8_lossy(&show.stdout),
        String::from_utf8_lossy(&show.stderr)
    );
    println!(
        "session keyring:\n{}",
        String::from_utf8_lossy(&show.stdout)
    );

    let auto = unavailable_checks("no secret service (bare bus)", &mut report);
    match store::open(Backend::Keyutils, 0) {
        Ok(s) => {
            report.check(S, s.backend() == Backend::Keyutils, || {
                format!("backend() = {:?}", s.backend())
            });
            run_contract(
                s.as_ref(),
                &Options {
                    label: S,
                    prefix: &prefix,
                    stamp_tick: Duration::ZERO,
                    count_items: None,
                    max_value_len: None,
                },
                &mut report,
            );
        }
        Err(e) => report.fail(S, format!("open(Keyutils) failed: {e}")),
    }
    if let Some(auto) = auto {
        // The fallback store is a working keychain, not just a label.
        let id = ItemId::new(format!("{prefix}-auto"), "alice");
        let v = report.secret(&format!("auto-fallback-{prefix}"));
        report.ok("auto→keyutils", "set", auto.set(&id, &v));
        if let Some(got) = report.ok("auto→keyutils", "get", auto.get(&id)) {
            report.check("auto→keyutils", exposed(&got) == Some(v.expose()), || {
                "Auto fallback store lost the value".into()
            });
        }
        report.ok("auto→keyutils", "delete", auto.delete(&id));
    }
    report.finish("keyutils child");
}

pub(crate) fn child_without_secret_service(what: &str) {
    let mut report = Report::default();
    let _ = unavailable_checks(what, &mut report);
    report.finish(what);
}

/// A process started while the login collection is already locked.
pub(crate) fn child_locked() {
    let prefix = child_prefix();
    let mut report = Report::default();
    let canary = ItemId::new(
        SecretServiceFixture::CANARY_SERVICE,
        SecretServiceFixture::CANARY_ACCOUNT,
    );
    report
        .secrets
        .push(SecretServiceFixture::CANARY_SECRET.into());
    match store::open(Backend::SecretService, 0) {
        Ok(s) => {
            locked_checks(
                "secret-service locked (fresh process)",
                s.as_ref(),
                &canary,
                &prefix,
                &mut report,
            );
            match s.stamp(&canary) {
                Ok(st) => report.check("locked", st.is_some(), || {
                    "stamp of the locked canary is None".into()
                }),
                Err(e) => {
                    report.saw_error("locked", &e);
                    report.fail(
                        "locked",
                        format!("stamp on a locked collection failed: {e}"),
                    );
                }
            }
        }
        Err(e) => report.fail(
            "locked",
            format!("open(SecretService) on a locked collection failed: {e}"),
        ),
    }
    report.finish("locked child");
}
