//! One contract suite for `keyferry::store::Store`, run against every backend this machine
//! can run, on real parts: the memory store, a real gnome-keyring Secret Service on a private
//! D-Bus session bus (plus `secret-tool` interop, a locked collection and a bus without any
//! Secret Service), and kernel keyutils inside a fresh session keyring (`keyctl session -`).
//!
//! libdbus reads `DBUS_SESSION_BUS_ADDRESS` once per process, so this binary has a single
//! `#[test]`: the parent run owns every daemon and sets the address before its first D-Bus
//! call; scenarios that need another bus (or another session keyring) re-run this same test
//! in a child process selected by `KEYFERRY_STORE_CONTRACT_ROLE`. Failures are collected per
//! backend and reported together, so one broken backend does not hide another.

// Real Secret Service, keyutils and /proc: these run on Linux only.
#![cfg(target_os = "linux")]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{run_with_timeout, unique_name, PrivateBus, SecretServiceFixture};
use keyferry::store::{self, Backend, ItemId, LazyStore, MemoryStore, Store, StoreError};
use keyferry::Secret;

const ROLE_VAR: &str = "KEYFERRY_STORE_CONTRACT_ROLE";
const PREFIX_VAR: &str = "KEYFERRY_STORE_CONTRACT_PREFIX";
const TEST_NAME: &str = "store_contract";
/// "Promptly": a locked or missing keychain must answer well before any prompt could.
const PROMPT_BOUND: Duration = Duration::from_secs(5);
const CHILD_TIMEOUT: Duration = Duration::from_secs(180);
/// Secret Service `Modified` has one-second granularity.
const SS_STAMP_TICK: Duration = Duration::from_millis(1100);
const PASSWORD: &str = "contract-login-password";

#[test]
fn store_contract() {
    match std::env::var(ROLE_VAR).ok().as_deref() {
        None => parent(),
        Some("keyutils") => child_keyutils(),
        Some("no-bus") => child_without_secret_service("no session bus at all"),
        Some("locked") => child_locked(),
        Some(other) => panic!("unknown {ROLE_VAR}={other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Failure collection

/// Contract violations seen so far, and every secret value used (to prove no error leaks one).
#[derive(Default)]
struct Report {
    failures: Vec<String>,
    secrets: Vec<String>,
}

impl Report {
    fn fail(&mut self, scope: &str, msg: impl Into<String>) {
        let msg = format!("[{scope}] {}", msg.into());
        println!("FAIL {msg}");
        self.failures.push(msg);
    }

    fn check(&mut self, scope: &str, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            self.fail(scope, msg());
        }
    }

    fn secret(&mut self, value: &str) -> Secret {
        self.secrets.push(value.to_owned());
        Secret::new(value.to_owned())
    }

    /// Every error we see: its `Display` and `Debug` must not contain any secret used.
    fn saw_error(&mut self, scope: &str, e: &StoreError) {
        let shown = format!("{e} | {e:?}");
        println!("  [{scope}] error seen: {e}");
        let leaked: Vec<usize> = self
            .secrets
            .iter()
            .enumerate()
            .filter(|(_, s)| s.len() >= 4 && shown.contains(s.as_str()))
            .map(|(i, _)| i)
            .collect();
        if !leaked.is_empty() {
            self.fail(
                scope,
                format!(
                    "an error's Display/Debug contains secret value(s) #{leaked:?} (code {})",
                    e.code()
                ),
            );
        }
    }

    /// `Ok` value, or records the error as a failure.
    fn ok<T>(&mut self, scope: &str, what: &str, r: Result<T, StoreError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.saw_error(scope, &e);
                self.fail(
                    scope,
                    format!("{what}: unexpected error {} ({e})", e.code()),
                );
                None
            }
        }
    }

    fn finish(self, what: &str) {
        assert!(
            self.failures.is_empty(),
            "{what}: {} contract violation(s):\n  - {}",
            self.failures.len(),
            self.failures.join("\n  - ")
        );
    }
}

fn exposed(s: &Option<Secret>) -> Option<&str> {
    s.as_ref().map(Secret::expose)
}

/// Shows a value in failure messages without printing it: length and a short hash.
fn shape(s: Option<&str>) -> String {
    use std::hash::{Hash, Hasher};
    match s {
        None => "None".into(),
        Some(v) => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            v.hash(&mut h);
            format!(
                "Some({} bytes, hash {:08x})",
                v.len(),
                h.finish() & 0xffff_ffff
            )
        }
    }
}

// ---------------------------------------------------------------------------------------
// The contract

struct Options<'a> {
    label: &'a str,
    /// Unique per run, so runs and parallel test binaries never collide.
    prefix: &'a str,
    /// Smallest interval after which a stamp must see a change.
    stamp_tick: Duration,
    /// Backend-native count of items matching an id (Secret Service: `secret-tool search`).
    count_items: Option<&'a dyn Fn(&ItemId) -> usize>,
}

/// A 4 KiB-plus Claude-credentials-shaped JSON document (pretty-printed: has newlines).
fn big_json(tag: &str) -> String {
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
fn run_contract(store: &dyn Store, opts: &Options<'_>, report: &mut Report) {
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

// ---------------------------------------------------------------------------------------
// Parent: memory, Secret Service (in-process), then children for the other buses/keyrings

fn parent() {
    let prefix = unique_name("kf-contract");
    let mut report = Report::default();

    // Memory, both as the type and through `store::open`.
    run_contract(
        &MemoryStore::default(),
        &Options {
            label: "memory",
            prefix: &prefix,
            stamp_tick: Duration::ZERO,
            count_items: None,
        },
        &mut report,
    );
    match store::open(Backend::Memory, 0) {
        Ok(s) => {
            report.check("memory", s.backend() == Backend::Memory, || {
                format!("open(Memory).backend() = {:?}", s.backend())
            });
            run_contract(
                s.as_ref(),
                &Options {
                    label: "memory via open",
                    prefix: &prefix,
                    stamp_tick: Duration::ZERO,
                    count_items: None,
                },
                &mut report,
            );
        }
        Err(e) => report.fail("memory", format!("open(Memory) failed: {e}")),
    }

    secret_service(&prefix, &mut report);

    // Kernel keyutils in a fresh session keyring, on a bus with no Secret Service.
    let bare = PrivateBus::start();
    run_child(
        "keyutils",
        &[("DBUS_SESSION_BUS_ADDRESS".into(), bare.address().to_owned())],
        &prefix,
        true,
        &mut report,
    );
    drop(bare);

    // No session bus at all (headless server): still Unavailable, still falls back.
    let nowhere = tempfile::tempdir().expect("tempdir");
    let dead = format!("unix:path={}", nowhere.path().join("no-bus-here").display());
    run_child(
        "no-bus",
        &[("DBUS_SESSION_BUS_ADDRESS".into(), dead)],
        &prefix,
        false,
        &mut report,
    );

    // A fresh process facing a collection that was locked before it started.
    let home = tempfile::tempdir().expect("tempdir");
    let locked = SecretServiceFixture::start_locked(home.path());
    run_child("locked", &locked.env(), &prefix, false, &mut report);
    drop(locked);

    report.finish("store contract");
}

/// Re-runs this test in a child process with `role` (optionally under `keyctl session -`)
/// and records its failure.
fn run_child(
    role: &str,
    env: &[(String, String)],
    prefix: &str,
    in_new_session_keyring: bool,
    report: &mut Report,
) {
    let exe = std::env::current_exe().expect("current test binary");
    let mut cmd = if in_new_session_keyring {
        assert!(
            common::which("keyctl").is_some(),
            "keyctl is not on PATH; install it with `apt-get install keyutils`"
        );
        let mut c = Command::new("keyctl");
        c.args(["session", "-"]).arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    cmd.args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env(ROLE_VAR, role)
        .env("RUST_BACKTRACE", "0")
        .env(PREFIX_VAR, format!("{prefix}-{role}"));
    println!("--- child {role} ---");
    let out = run_with_timeout(&mut cmd, None, CHILD_TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    if !stderr.trim().is_empty() {
        println!("(stderr) {stderr}");
    }
    println!("--- end of child {role}: {} ---", out.status);
    if !out.status.success() {
        let lines: Vec<&str> = stdout.lines().chain(stderr.lines()).collect();
        let mut picked: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| {
                l.starts_with("FAIL")
                    || l.contains("panicked")
                    || l.contains("contract violation")
                    || l.starts_with("  - ")
            })
            .collect();
        if picked.is_empty() {
            // E.g. `keyctl session -` itself failed: show the end of what it printed.
            picked = lines[lines.len().saturating_sub(15)..].to_vec();
        }
        let tail = picked.join("\n    ");
        report.fail(
            role,
            format!("child process failed ({}):\n    {tail}", out.status),
        );
    }
}

fn child_prefix() -> String {
    std::env::var(PREFIX_VAR).unwrap_or_else(|_| unique_name("kf-contract-child"))
}

/// Secret Service, in this process, on a private bus with a real gnome-keyring.
fn secret_service(prefix: &str, report: &mut Report) {
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
type Op<'a> = Box<dyn Fn() -> Result<(), StoreError> + 'a>;

/// `Locked` promptly on get, set (existing and new item) and delete, with a helpful message.
fn locked_checks(
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

/// The cfauth / keyring-crate compatibility contract, with the real `secret-tool`.
fn interop(fx: &SecretServiceFixture, ss: &dyn Store, prefix: &str, report: &mut Report) {
    const S: &str = "secret-service interop";
    let service = format!("{prefix}-ss-interop");

    // secret-tool → store.
    let by_tool = format!("stored-by-secret-tool ✓ {prefix}");
    report.secrets.push(by_tool.clone());
    let id = ItemId::new(&service, "alice");
    let out = fx.secret_tool(
        &[
            "store",
            "--label=x",
            "service",
            &service,
            "username",
            "alice",
        ],
        Some(&by_tool),
    );
    report.check(S, out.status.success(), || {
        format!(
            "secret-tool store failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    if let Some(got) = report.ok(S, "get(secret-tool item)", ss.get(&id)) {
        report.check(S, exposed(&got) == Some(by_tool.as_str()), || {
            format!(
                "store reads the secret-tool item as {}",
                shape(exposed(&got))
            )
        });
    }
    if let Some(st) = report.ok(S, "stamp(secret-tool item)", ss.stamp(&id)) {
        report.check(S, st.is_some(), || {
            "stamp of a secret-tool item is None".into()
        });
    }
    // Store replaces the secret-tool item in place (no second item), secret-tool sees it.
    let replaced = report.secret(&format!("replaced-by-store-{prefix}"));
    if report
        .ok(S, "set over secret-tool item", ss.set(&id, &replaced))
        .is_some()
    {
        let n = fx.count_items(&["service", &service, "username", "alice"]);
        report.check(S, n == 1, || {
            format!("set over a secret-tool item left {n} items")
        });
        let out = fx.secret_tool(&["lookup", "service", &service, "username", "alice"], None);
        let text = String::from_utf8_lossy(&out.stdout);
        report.check(
            S,
            out.status.success() && text.trim_end_matches('\n') == replaced.expose(),
            || {
                format!(
                    "secret-tool lookup after store.set: status {}, {}",
                    out.status,
                    shape(Some(&text))
                )
            },
        );
    }

    // store → secret-tool, with the keyring-crate attributes.
    let id2 = ItemId::new(&service, "bob@example.com");
    let by_store = report.secret(&format!("stored-by-keyferry 日本 {prefix}"));
    if report
        .ok(S, "set(for secret-tool)", ss.set(&id2, &by_store))
        .is_some()
    {
        let out = fx.secret_tool(
            &["lookup", "service", &service, "username", "bob@example.com"],
            None,
        );
        let text = String::from_utf8_lossy(&out.stdout);
        report.check(
            S,
            out.status.success() && text.trim_end_matches('\n') == by_store.expose(),
            || {
                format!(
                    "secret-tool lookup of a store item: status {}, {}",
                    out.status,
                    shape(Some(&text))
                )
            },
        );
        let out = fx.secret_tool(
            &[
                "search",
                "--all",
                "service",
                &service,
                "username",
                "bob@example.com",
            ],
            None,
        );
        // secret-tool prints the attributes on stderr, the rest on stdout.
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for attr in [
            format!("attribute.service = {service}"),
            "attribute.username = bob@example.com".to_owned(),
            "attribute.target = default".to_owned(),
            "attribute.application = keyferry".to_owned(),
        ] {
            report.check(S, text.contains(&attr), || {
                format!("store item lacks keyring-crate attribute `{attr}`")
            });
        }
        let out = fx.secret_tool(
            &["clear", "service", &service, "username", "bob@example.com"],
            None,
        );
        report.check(S, out.status.success(), || {
            "secret-tool clear failed".into()
        });
        if let Some(got) = report.ok(S, "get after secret-tool clear", ss.get(&id2)) {
            report.check(S, got.is_none(), || {
                "item still readable after secret-tool clear".into()
            });
        }
    }

    // Two items matching one id: Ambiguous, on every operation, without leaking either.
    let dup = ItemId::new(format!("{prefix}-ss-dup"), "alice");
    for (n, value) in ["dup-one", "dup-two"].iter().enumerate() {
        let value = format!("{value}-{prefix}");
        report.secrets.push(value.clone());
        let extra = n.to_string();
        let out = fx.secret_tool(
            &[
                "store",
                "--label=dup",
                "service",
                &dup.service,
                "username",
                &dup.account,
                "extra",
                &extra,
            ],
            Some(&value),
        );
        report.check(S, out.status.success(), || {
            "secret-tool store (duplicate) failed".into()
        });
    }
    let ambiguous_ops: [(&str, Result<(), StoreError>); 3] = [
        ("get", ss.get(&dup).map(drop)),
        ("set", ss.set(&dup, &Secret::new("x".into()))),
        ("delete", ss.delete(&dup).map(drop)),
    ];
    for (what, r) in ambiguous_ops {
        match r {
            Err(e @ StoreError::Ambiguous { count: 2, .. }) => {
                report.saw_error(S, &e);
                report.check(S, e.to_string().contains("secret-tool clear"), || {
                    format!("Ambiguous message: {e}")
                });
            }
            Err(e) => {
                report.saw_error(S, &e);
                report.fail(
                    S,
                    format!(
                        "{what} with two matching items: want Ambiguous{{count: 2}}, got {e:?}"
                    ),
                );
            }
            Ok(()) => report.fail(S, format!("{what} with two matching items succeeded")),
        }
    }
    let _ = fx.secret_tool(
        &["clear", "service", &dup.service, "username", &dup.account],
        None,
    );

    // Not UTF-8: a clear error that does not echo the bytes.
    let bin = ItemId::new(format!("{prefix}-ss-binary"), "alice");
    let bytes = b"\xff\xfebinary-secret-payload\x80";
    report.secrets.push("binary-secret-payload".into());
    let out = fx.secret_tool_bytes(
        &[
            "store",
            "--label=bin",
            "service",
            &bin.service,
            "username",
            &bin.account,
        ],
        Some(bytes),
    );
    report.check(S, out.status.success(), || {
        "secret-tool store (binary) failed".into()
    });
    match ss.get(&bin) {
        Err(e @ StoreError::NotUtf8 { .. }) => report.saw_error(S, &e),
        Err(e) => {
            report.saw_error(S, &e);
            report.fail(S, format!("non-UTF-8 item: want NotUtf8, got {e:?}"));
        }
        Ok(got) => report.fail(
            S,
            format!("non-UTF-8 item read as {}", shape(exposed(&got))),
        ),
    }
    let _ = fx.secret_tool(
        &["clear", "service", &bin.service, "username", &bin.account],
        None,
    );
    let _ = ss.delete(&id);
}

// ---------------------------------------------------------------------------------------
// Children

/// No Secret Service reachable: `open(SecretService)` is `Unavailable` promptly and `Auto`
/// falls back to kernel keyutils. Returns the Auto store.
fn unavailable_checks(scope: &str, report: &mut Report) -> Option<Box<dyn Store>> {
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
fn child_keyutils() {
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

fn child_without_secret_service(what: &str) {
    let mut report = Report::default();
    let _ = unavailable_checks(what, &mut report);
    report.finish(what);
}

/// A process started while the login collection is already locked.
fn child_locked() {
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
