//! The backend-independent store contract, run against any `&dyn Store`.

use std::time::{Duration, Instant};

use keyferry::store::{ItemId, Store, StoreError};

use crate::report::{exposed, shape, Report};

pub(crate) struct Options<'a> {
    pub(crate) label: &'a str,
    /// Unique per run, so runs and parallel test binaries never collide.
    pub(crate) prefix: &'a str,
    /// Smallest interval after which a stamp must see a change.
    pub(crate) stamp_tick: Duration,
    /// Backend-native count of items matching an id (Secret Service: `secret-tool search`).
    pub(crate) count_items: Option<&'a dyn Fn(&ItemId) -> usize>,
    /// Values longer than this must be refused with `StoreError::Unwritable` (and nothing
    /// written); `None`: every value must round-trip.
    pub(crate) max_value_len: Option<usize>,
}

/// A 4 KiB-plus Claude-credentials-shaped JSON document (pretty-printed: has newlines).
pub(crate) fn big_json(tag: &str) -> String {
    let mut filler = String::new();
    let mut doc = String::new();
    while doc.len() < 4096 {
        filler.push_str("abcdefghijklmnopqrstuvwxyz0123456789-_");
        doc = format!(
            "{{\n  \"claudeAiOauth\": {{\n    \"accessToken\": \"sk-ant-oat01-{tag}-{filler}\",\n    \
             \"refreshToken\": \"sk-ant-ort01-{tag}\",\n    \"expiresAt\": 1893456000000,\n    \
             \"scopes\": [\"user:inference\", \"user:profile\"],\n    \"subscriptionType\": \"max\",\n    \
             \"note\": \"ünïcødé ✓ 🔑\"\n  }}\n}}\n"
        );
    }
    doc
}

/// The backend-independent contract, run against any `&dyn Store`. Violations go to
/// `report`; every item it creates is deleted again at the end, pass or fail.
pub(crate) fn run_contract(store: &dyn Store, opts: &Options<'_>, report: &mut Report) {
    let scope = opts.label;
    let id = |tag: &str, account: &str| ItemId::new(format!("{}-{tag}", opts.prefix), account);
    println!("contract: {scope} (backend {})", store.backend().as_str());
    let started = Instant::now();
    let mut used: Vec<ItemId> = Vec::new();

    // 1. A missing item.
    let missing = id("missing", "alice");
    if let Some(got) = report.ok(scope, "get(missing)", store.get(&missing)) {
        report.check(scope, got.is_none(), || {
            format!("get(missing) = {}", shape(exposed(&got)))
        });
    }
    if let Some(deleted) = report.ok(scope, "delete(missing)", store.delete(&missing)) {
        report.check(scope, !deleted, || "delete(missing) returned true".into());
    }
    if let Some(stamp) = report.ok(scope, "stamp(missing)", store.stamp(&missing)) {
        report.check(scope, stamp.is_none(), || {
            format!("stamp(missing) = {stamp:?}")
        });
    }

    // 2. Round trips: ASCII token, non-ASCII text, a 4 KiB JSON document.
    let values = [
        (
            "ascii",
            format!("sk-ant-oat01-{}-AbC_dEf-0123456789", opts.prefix),
        ),
        (
            "unicode",
            format!("pässwörd ✓ 日本語 🔑 Ωmega {}", opts.prefix),
        ),
        ("json4k", big_json(opts.prefix)),
    ];
    for (tag, value) in &values {
        let item = id(&format!("roundtrip-{tag}"), "alice");
        used.push(item.clone());
        let secret = report.secret(value);
        if opts.max_value_len.is_some_and(|n| value.len() > n) {
            refused_too_long(store, &item, &secret, tag, scope, report);
            continue;
        }
        if report
            .ok(scope, &format!("set({tag})"), store.set(&item, &secret))
            .is_none()
        {
            continue;
        }
        if let Some(got) = report.ok(scope, &format!("get({tag})"), store.get(&item)) {
            report.check(scope, exposed(&got) == Some(value.as_str()), || {
                format!(
                    "{tag}: get after set = {}, want {}",
                    shape(exposed(&got)),
                    shape(Some(value))
                )
            });
        }
        if let Some(stamp) = report.ok(scope, &format!("stamp({tag})"), store.stamp(&item)) {
            report.check(scope, stamp.is_some(), || {
                format!("{tag}: stamp after set is None")
            });
            if let Some(s) = &stamp {
                report.check(scope, !s.0.contains(value.as_str()), || {
                    format!("{tag}: the stamp contains the secret")
                });
            }
        }
        if let Some(deleted) = report.ok(scope, &format!("delete({tag})"), store.delete(&item)) {
            report.check(scope, deleted, || {
                format!("{tag}: delete of an existing item returned false")
            });
        }
        if let Some(got) = report.ok(scope, &format!("get({tag}) after delete"), store.get(&item)) {
            report.check(scope, got.is_none(), || {
                format!("{tag}: get after delete = {}", shape(exposed(&got)))
            });
        }
        if let Some(stamp) = report.ok(
            scope,
            &format!("stamp({tag}) after delete"),
            store.stamp(&item),
        ) {
            report.check(scope, stamp.is_none(), || {
                format!("{tag}: stamp after delete = {stamp:?}")
            });
        }
        if let Some(deleted) =
            report.ok(scope, &format!("delete({tag}) again"), store.delete(&item))
        {
            report.check(scope, !deleted, || {
                format!("{tag}: second delete returned true")
            });
        }
    }

    // 3. Set again replaces (no duplicate), and the stamp follows the change.
    let item = id("replace", "alice");
    used.push(item.clone());
    let v1 = report.secret(&format!("first-value-{}", opts.prefix));
    let v2 = report.secret(&format!("second-value-{}", opts.prefix));
    if report.ok(scope, "set(v1)", store.set(&item, &v1)).is_some() {
        let s1 = report
            .ok(scope, "stamp after v1", store.stamp(&item))
            .flatten();
        report.check(scope, s1.is_some(), || "stamp after set(v1) is None".into());
        let s1_again = report
            .ok(scope, "stamp again", store.stamp(&item))
            .flatten();
        report.check(scope, s1 == s1_again, || {
            format!("stamp changed without a write: {s1:?} then {s1_again:?}")
        });
        std::thread::sleep(opts.stamp_tick);
        if report.ok(scope, "set(v2)", store.set(&item, &v2)).is_some() {
            if let Some(got) = report.ok(scope, "get after replace", store.get(&item)) {
                report.check(scope, exposed(&got) == Some(v2.expose()), || {
                    format!(
                        "get after replacing = {}, want the second value",
                        shape(exposed(&got))
                    )
                });
            }
            let s2 = report
                .ok(scope, "stamp after v2", store.stamp(&item))
                .flatten();
            report.check(scope, s2.is_some() && s2 != s1, || {
                format!(
                    "stamp did not change after a write of a different value: {s1:?} then {s2:?}"
                )
            });
            if let Some(count) = opts.count_items {
                let n = count(&item);
                report.check(scope, n == 1, || {
                    format!("after set, set again: {n} items match, want exactly 1")
                });
            }
        }
        if let Some(deleted) = report.ok(scope, "delete replaced", store.delete(&item)) {
            report.check(scope, deleted, || {
                "delete of the replaced item returned false".into()
            });
        }
        if let Some(got) = report.ok(scope, "get after delete", store.get(&item)) {
            report.check(scope, got.is_none(), || {
                format!("get after delete = {}", shape(exposed(&got)))
            });
        }
        if let Some(count) = opts.count_items {
            let n = count(&item);
            report.check(scope, n == 0, || {
                format!("after delete {n} items still match")
            });
        }
    }

    // 4. Isolation by service and by account, also when two ids differ only in where an
    // `@` falls (`alice@example.com` is a real account name). A backend may refuse an id it
    // cannot store unambiguously (e.g. `@` in a service name) with an error on `set`, but it
    // must never silently alias two ids.
    let base = format!("{}-iso", opts.prefix);
    let cases = [
        (
            "svc-a/alice",
            ItemId::new(format!("{base}-a"), "alice"),
            false,
        ),
        ("svc-a/bob", ItemId::new(format!("{base}-a"), "bob"), false),
        (
            "svc-b/alice",
            ItemId::new(format!("{base}-b"), "alice"),
            false,
        ),
        (
            "svc-a/alice2",
            ItemId::new(format!("{base}-a"), "alice2"),
            false,
        ),
        (
            "svc/al@ice",
            ItemId::new(format!("{base}-c"), "al@ice"),
            false,
        ),
        (
            "ice@svc/al",
            ItemId::new(format!("ice@{base}-c"), "al"),
            true,
        ),
    ];
    let mut stored = Vec::new();
    for (tag, item, may_refuse) in &cases {
        used.push(item.clone());
        let value = format!("isolated-{tag}-{}", opts.prefix);
        let secret = report.secret(&value);
        match store.set(item, &secret) {
            Ok(()) => stored.push((*tag, item.clone(), value)),
            Err(e) if *may_refuse => {
                report.saw_error(scope, &e);
                println!("  [{scope}] refused {tag} (allowed): {e}");
            }
            Err(e) => {
                report.saw_error(scope, &e);
                report.fail(
                    scope,
                    format!("set({tag}): unexpected error {} ({e})", e.code()),
                );
            }
        }
    }
    // Which id's value did a get return? Names the aliasing in failure messages.
    let whose = |got: Option<&str>| -> String {
        match stored.iter().find(|(_, _, v)| Some(v.as_str()) == got) {
            Some((other, _, _)) => format!("the value stored for {other}"),
            None => shape(got),
        }
    };
    let mut before = Vec::new();
    for (tag, item, value) in &stored {
        let got = report
            .ok(scope, &format!("get({tag})"), store.get(item))
            .map(|g| exposed(&g).map(str::to_owned));
        if let Some(got) = &got {
            report.check(scope, got.as_deref() == Some(value.as_str()), || {
                format!("isolation: get({tag}) returned {}", whose(got.as_deref()))
            });
        }
        before.push(got.flatten());
    }
    if let Some((first_tag, first, _)) = stored.first() {
        if let Some(deleted) = report.ok(scope, "delete(first isolated)", store.delete(first)) {
            report.check(scope, deleted, || {
                format!("delete({first_tag}) returned false")
            });
        }
        for ((tag, item, _), was) in stored.iter().zip(&before).skip(1) {
            if let Some(got) = report.ok(
                scope,
                &format!("get({tag}) after deleting {first_tag}"),
                store.get(item),
            ) {
                report.check(scope, exposed(&got) == was.as_deref(), || {
                    format!(
                        "isolation: deleting {first_tag} changed {tag}: now {}",
                        whose(exposed(&got))
                    )
                });
            }
        }
    }

    // Leave nothing behind (kernel keys can outlive the session in the persistent keyring).
    for item in &used {
        let _ = store.delete(item);
    }
    for item in &used {
        if let Ok(Some(_)) = store.get(item) {
            report.fail(scope, format!("cleanup: {item} still present after delete"));
        }
    }
    println!("contract: {scope} done in {:?}", started.elapsed());
}

/// A value the backend cannot carry: a typed `Unwritable` that names the limit, and no item.
fn refused_too_long(
    store: &dyn Store,
    item: &ItemId,
    secret: &keyferry::Secret,
    tag: &str,
    scope: &str,
    report: &mut Report,
) {
    match store.set(item, secret) {
        Err(e @ StoreError::Unwritable { .. }) => {
            report.saw_error(scope, &e);
            report.check(scope, e.code() == "keychain_unwritable", || {
                format!("{tag}: code {}", e.code())
            });
            report.check(scope, e.to_string().contains("backend"), || {
                format!("{tag}: the refusal does not say what to do: {e}")
            });
        }
        Err(e) => {
            report.saw_error(scope, &e);
            report.fail(
                scope,
                format!("{tag}: want Unwritable, got {} ({e})", e.code()),
            );
        }
        Ok(()) => report.fail(scope, format!("{tag}: a value over the limit was accepted")),
    }
    if let Some(got) = report.ok(scope, &format!("get({tag}) after refusal"), store.get(item)) {
        report.check(scope, got.is_none(), || {
            format!("{tag}: a refused set left {}", shape(exposed(&got)))
        });
    }
}
