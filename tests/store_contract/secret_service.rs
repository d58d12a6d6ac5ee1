//! Secret Service in this process: a real gnome-keyring on a private bus, restarts, and a
//! locked collection.

use std::time::{Duration, Instant};

use keyferry::store::{self, Backend, ItemId, LazyStore, Store, StoreError};

use crate::common::SecretServiceFixture;
use crate::contract::{run_contract, Options};
use crate::interop::interop;
use crate::report::{exposed, shape, Report};
use crate::{PASSWORD, PROMPT_BOUND, SS_STAMP_TICK};

/// Secret Service, in this process, on a private bus with a real gnome-keyring.
pub(crate) fn secret_service(prefix: &str, report: &mut Report) {
    const S: &str = "secret-service";
    let home = tempfile::tempdir().expect("tempdir");
    let mut fx = SecretServiceFixture::start(home.path(), PASSWORD);
    assert!(
        !fx.is_locked(),
        "the fixture's login collection should start unlocked"
    );
    // The only variable the in-process D-Bus client reads; set before the first D-Bus call
    // in this process (libdbus caches it). Safe in edition 2021; this binary has one test.
    std::env::set_var("DBUS_SESSION_BUS_ADDRESS", fx.address());

    let opened = Instant::now();
    let Some(ss) = report.ok(
        S,
        "open(SecretService, 0)",
        store::open(Backend::SecretService, 0),
    ) else {
        return;
    };
    println!("  open(SecretService) took {:?}", opened.elapsed());
    report.check(S, ss.backend() == Backend::SecretService, || {
        format!("backend() = {:?}", ss.backend())
    });

    let count = |id: &ItemId| fx.count_items(&["service", &id.service, "username", &id.account]);
    run_contract(
        ss.as_ref(),
        &Options {
            label: S,
            prefix: &format!("{prefix}-ss"),
            stamp_tick: SS_STAMP_TICK,
            count_items: Some(&count),
            max_value_len: None,
        },
        report,
    );

    // Auto picks the Secret Service when one answers; LazyStore opens it on first use.
    match store::open(Backend::Auto, 0) {
        Ok(s) => report.check(S, s.backend() == Backend::SecretService, || {
            format!(
                "open(Auto) with a Secret Service running gave {:?}",
                s.backend()
            )
        }),
        Err(e) => report.fail(S, format!("open(Auto) failed: {e}")),
    }
    let lazy = LazyStore::new(Backend::SecretService, 0);
    match lazy.get() {
        Ok(s) => report.check(S, s.backend() == Backend::SecretService, || {
            format!("LazyStore backend {:?}", s.backend())
        }),
        Err(e) => report.fail(S, format!("LazyStore::get failed: {e}")),
    }

    interop(&fx, ss.as_ref(), prefix, report);

    // An item the locked phase will try to read.
    let seeded = ItemId::new(format!("{prefix}-ss-seeded"), "alice");
    let seeded_value = report.secret(&format!("seeded-secret-{prefix}"));
    report.ok(S, "set(seeded)", ss.set(&seeded, &seeded_value));

    // The daemon restarts (crash, re-login, package upgrade): an open store keeps working.
    fx.restart_keyring(PASSWORD);
    assert!(
        !fx.is_locked(),
        "restart with the right password should unlock"
    );
    match ss.get(&seeded) {
        Ok(got) => report.check(S, exposed(&got) == Some(seeded_value.expose()), || {
            format!(
                "after a keyring daemon restart, get = {}",
                shape(exposed(&got))
            )
        }),
        Err(e) => {
            report.saw_error(S, &e);
            report.fail(
                S,
                format!(
                    "a store opened before the keyring daemon restarted fails afterwards: {} ({e})",
                    e.code()
                ),
            );
        }
    }

    // The same daemon, restarted with a wrong password: the login collection stays locked.
    fx.restart_keyring("not-the-password");
    fx.assert_locked();
    assert!(
        fx.is_locked(),
        "wrong password should leave the collection locked"
    );
    let locked = match store::open(Backend::SecretService, 0) {
        Ok(s) => s,
        Err(e) => {
            report.saw_error(S, &e);
            report.fail(
                S,
                format!("open(SecretService) with a locked collection failed: {e}"),
            );
            return;
        }
    };
    locked_checks(
        "secret-service locked (in-process)",
        locked.as_ref(),
        &seeded,
        prefix,
        report,
    );
    locked_checks(
        "secret-service locked (store opened before)",
        ss.as_ref(),
        &seeded,
        prefix,
        report,
    );
    // Stamps come from attributes, so polling a locked item works and never prompts.
    match locked.stamp(&seeded) {
        Ok(st) => report.check(S, st.is_some(), || {
            "stamp of an existing item in a locked collection is None".into()
        }),
        Err(e) => {
            report.saw_error(S, &e);
            report.fail(
                S,
                format!("stamp on a locked collection failed: {} ({e})", e.code()),
            );
        }
    }
    // Prompting allowed but no prompter on the bus (headless): still Locked, within the
    // prompt timeout plus slack, never a hang.
    let prompt_secs = 2;
    match store::open(Backend::SecretService, prompt_secs) {
        Ok(s) => {
            let t = Instant::now();
            let r = s.get(&seeded);
            let took = t.elapsed();
            let bound = Duration::from_secs(prompt_secs) + PROMPT_BOUND;
            report.check(S, took < bound, || {
                format!(
                    "get with prompt_timeout_secs = {prompt_secs} and no prompter took {took:?}"
                )
            });
            match r {
                Err(e @ StoreError::Locked { .. }) => report.saw_error(S, &e),
                Err(e) => {
                    report.saw_error(S, &e);
                    report.fail(
                        S,
                        format!(
                            "get with prompt_timeout_secs = {prompt_secs} and no prompter: want Locked, got {} ({e})",
                            e.code()
                        ),
                    );
                }
                Ok(got) => report.fail(
                    S,
                    format!(
                        "get on a locked collection with no prompter returned {}",
                        shape(exposed(&got))
                    ),
                ),
            }
        }
        Err(e) => report.fail(S, format!("open(SecretService, {prompt_secs}) failed: {e}")),
    }
    // Observation only: a missing item in a locked collection (gnome-keyring can search
    // locked items by hashed attributes, so `None` is truthful here).
    let missing = ItemId::new(format!("{prefix}-locked-missing"), "alice");
    match locked.get(&missing) {
        Ok(got) => println!(
            "  note: get(missing) on a locked collection = {}",
            shape(exposed(&got))
        ),
        Err(e) => {
            report.saw_error(S, &e);
            println!(
                "  note: get(missing) on a locked collection = {} ({e})",
                e.code()
            );
        }
    }
    drop(fx);
}

/// A store operation reduced to its error, timed by [`locked_checks`].
pub(crate) type Op<'a> = Box<dyn Fn() -> Result<(), StoreError> + 'a>;

/// `Locked` promptly on get, set (existing and new item) and delete, with a helpful message.
pub(crate) fn locked_checks(
    scope: &str,
    store: &dyn Store,
    existing: &ItemId,
    prefix: &str,
    report: &mut Report,
) {
    let fresh = ItemId::new(format!("{prefix}-locked-new"), "alice");
    let value = report.secret(&format!("must-not-be-written-{prefix}"));
    let ops: [(&str, Op<'_>); 4] = [
        ("get(existing)", Box::new(|| store.get(existing).map(drop))),
        ("set(existing)", Box::new(|| store.set(existing, &value))),
        ("set(new item)", Box::new(|| store.set(&fresh, &value))),
        (
            "delete(existing)",
            Box::new(|| store.delete(existing).map(drop)),
        ),
    ];
    for (what, op) in ops {
        let t = Instant::now();
        let r = op();
        let took = t.elapsed();
        report.check(scope, took < PROMPT_BOUND, || {
            format!("{what} took {took:?} with prompt_timeout_secs = 0")
        });
        match r {
            Err(e @ StoreError::Locked { .. }) => {
                report.saw_error(scope, &e);
                let msg = e.to_string();
                report.check(
                    scope,
                    msg.contains("locked") && msg.contains("unlock"),
                    || format!("{what}: Locked message lacks \"locked\"/\"unlock\": {msg}"),
                );
                report.check(scope, e.code() == "keychain_locked", || {
                    format!("{what}: code {}", e.code())
                });
            }
            Err(e) => {
                report.saw_error(scope, &e);
                report.fail(
                    scope,
                    format!("{what}: want StoreError::Locked, got {} ({e})", e.code()),
                );
            }
            Ok(()) => report.fail(scope, format!("{what}: succeeded on a locked collection")),
        }
    }
}
