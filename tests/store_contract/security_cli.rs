//! The `security-cli` store against the stand-in `security` (testkit/bin/security): the
//! contract, hostile values through `security -i`'s tokenizer, no secret in any argv, and
//! the real tool's failure statuses as typed errors that name the fix.

use std::path::Path;
use std::time::Duration;

use keyferry::store::{
    self, Backend, ItemId, LazyStore, OpenOptions, Store, StoreError, MAX_COMMAND_LINE,
};
use testkit::fake_security::{FakeFailure, FakeSecurity};

use crate::contract::{run_contract, Options};
use crate::report::{exposed, shape, Report};
use crate::secret_service::locked_checks;

const S: &str = "security-cli";
/// `mdat` has one-second resolution.
const MDAT_TICK: Duration = Duration::from_millis(1100);

/// One logged run of the stand-in.
#[derive(serde::Deserialize)]
struct LoggedRun {
    argv: Vec<String>,
    stdin: String,
}

fn runs(fake: &FakeSecurity) -> Vec<LoggedRun> {
    fake.log_text()
        .lines()
        .map(|l| serde_json::from_str(l).expect("stand-in log line"))
        .collect()
}

/// Items in the stand-in's file matching an id (to prove `-U` replaces, never duplicates).
fn count_items(db: &Path, id: &ItemId) -> usize {
    #[derive(serde::Deserialize)]
    struct Item {
        svce: String,
        acct: String,
    }
    #[derive(serde::Deserialize)]
    struct Db {
        items: Vec<Item>,
    }
    let Ok(text) = std::fs::read_to_string(db) else {
        return 0;
    };
    let db: Db = serde_json::from_str(&text).expect("stand-in item file");
    db.items
        .iter()
        .filter(|i| i.svce == id.service && i.acct == id.account)
        .count()
}

fn options(fake: &FakeSecurity) -> OpenOptions {
    OpenOptions {
        backend: Backend::SecurityCli,
        prompt_timeout_secs: 0,
        security_path: Some(fake.program()),
    }
}

pub(crate) fn security_cli(prefix: &str, report: &mut Report) {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeSecurity::new(dir.path());
    let Some(cli) = report.ok(S, "open(SecurityCli)", store::open_with(&options(&fake))) else {
        return;
    };
    report.check(S, cli.backend() == Backend::SecurityCli, || {
        format!("backend() = {:?}", cli.backend())
    });
    let db = fake.db();
    let count = |id: &ItemId| count_items(&db, id);
    run_contract(
        cli.as_ref(),
        &Options {
            label: S,
            prefix: &format!("{prefix}-cli"),
            stamp_tick: MDAT_TICK,
            count_items: Some(&count),
            max_value_len: Some(MAX_COMMAND_LINE),
        },
        report,
    );
    let lazy = LazyStore::with_options(options(&fake));
    match lazy.get() {
        Ok(s) => report.check(S, s.backend() == Backend::SecurityCli, || {
            format!("LazyStore backend {:?}", s.backend())
        }),
        Err(e) => report.fail(S, format!("LazyStore::with_options failed: {e}")),
    }

    hostile_values(cli.as_ref(), &fake, prefix, report);
    failures(cli.as_ref(), &fake, prefix, report);
    unavailable(dir.path(), report);
    no_secret_in_argv(&fake, report);
}

/// Quotes, spaces, backslashes, newlines, shell syntax, option-looking and hex-looking
/// values: each is stored through `security -i` and read back exactly; over-long lines are
/// refused before anything runs.
fn hostile_values(cli: &dyn Store, fake: &FakeSecurity, prefix: &str, report: &mut Report) {
    const H: &str = "security-cli hostile";
    let fitting = format!("{prefix}-{}", "z".repeat(3000));
    let values: Vec<String> = vec![
        format!("{prefix} with spaces  and\ttab"),
        format!("\"{prefix}\" 'single' \"double\""),
        format!("back\\slash\\\\{prefix}\\"),
        format!("{prefix}\nsecond line\n"),
        format!("{prefix}\r\nCRLF"),
        format!("$HOME `id` $(id) ; add-generic-password -s evil {prefix}"),
        format!("-w -X {prefix}"),
        format!("{{\"claudeAiOauth\":{{\"accessToken\":\"sk-ant-oat01-{prefix}\"}}}}"),
        format!("{{\n  \"pretty\": \"ünïcødé {prefix}\"\n}}\n"),
        "deadbeefcafe0123".to_owned(),
        "414243".to_owned(),
        fitting,
    ];
    for (n, value) in values.iter().enumerate() {
        let item = ItemId::new(format!("{prefix}-hostile-{n}"), "al \"ice\"");
        let secret = report.secret(value);
        let before = runs(fake).len();
        if report
            .ok(H, &format!("set(#{n})"), cli.set(&item, &secret))
            .is_none()
        {
            continue;
        }
        let sent = runs(fake)[before..].iter().any(|r| {
            r.argv == ["-i"]
                && (r.stdin.contains(&hex::encode(value))
                    || r.stdin
                        .contains(&value.replace('\\', "\\\\").replace('"', "\\\"")))
        });
        report.check(H, sent, || {
            format!("#{n}: the value was not sent on the stdin of `security -i`")
        });
        if let Some(got) = report.ok(H, &format!("get(#{n})"), cli.get(&item)) {
            report.check(H, exposed(&got) == Some(value.as_str()), || {
                format!(
                    "#{n}: read back {}, want {}",
                    shape(exposed(&got)),
                    shape(Some(value))
                )
            });
        }
        report.check(H, count_items(&fake.db(), &item) == 1, || {
            format!("#{n}: the item file does not hold exactly one item")
        });
        report.ok(H, &format!("delete(#{n})"), cli.delete(&item));
    }

    // Too long for the tool's 4095-byte line: refused, and nothing is run at all (the tool
    // would execute the tail of a cut line as a second command).
    for (tag, value) in [
        (
            "long line",
            format!("{prefix}-{}", "q".repeat(MAX_COMMAND_LINE)),
        ),
        (
            "long hex",
            format!("{prefix}\n{}", "q".repeat(MAX_COMMAND_LINE / 2)),
        ),
    ] {
        let item = ItemId::new(format!("{prefix}-toolong"), "alice");
        let secret = report.secret(&value);
        let before = runs(fake).len();
        match cli.set(&item, &secret) {
            Err(e @ StoreError::Unwritable { .. }) => report.saw_error(H, &e),
            Err(e) => report.fail(H, format!("{tag}: want Unwritable, got {e:?}")),
            Ok(()) => report.fail(H, format!("{tag}: accepted")),
        }
        report.check(H, runs(fake).len() == before, || {
            format!("{tag}: `security` was run for a refused value")
        });
    }
}

/// Every failure mode of the stand-in gives the typed error that names the fix.
fn failures(cli: &dyn Store, fake: &FakeSecurity, prefix: &str, report: &mut Report) {
    let item = ItemId::new(format!("{prefix}-failing"), "alice");
    let stored = report.secret(&format!("stored-before-trouble-{prefix}"));
    let other = report.secret(&format!("must-not-be-written-{prefix}"));
    if report
        .ok(S, "set(failing)", cli.set(&item, &stored))
        .is_none()
    {
        return;
    }

    // Not found: absent, not an error.
    fake.fail(Some(FakeFailure::NotFound));
    let scope = "security-cli not-found";
    if let Some(got) = report.ok(scope, "get", cli.get(&item)) {
        report.check(scope, got.is_none(), || {
            "get of a missing item is Some".into()
        });
    }
    if let Some(st) = report.ok(scope, "stamp", cli.stamp(&item)) {
        report.check(scope, st.is_none(), || {
            "stamp of a missing item is Some".into()
        });
    }
    if let Some(deleted) = report.ok(scope, "delete", cli.delete(&item)) {
        report.check(scope, !deleted, || {
            "delete of a missing item returned true".into()
        });
    }

    // A locked login keychain over SSH: Locked, promptly, naming `security unlock-keychain`.
    fake.fail(Some(FakeFailure::Locked));
    locked_checks("security-cli locked", cli, &item, prefix, report);
    let _ = expect(
        "security-cli locked",
        "stamp",
        cli.stamp(&item).map(drop),
        "keychain_locked",
        "security unlock-keychain ~/Library/Keychains/login.keychain-db",
        report,
    );

    // Data access needing a dialog that cannot be shown: Locked; attributes still answer.
    fake.fail(Some(FakeFailure::InteractionNotAllowed));
    locked_checks(
        "security-cli interaction not allowed",
        cli,
        &item,
        prefix,
        report,
    );
    let scope = "security-cli interaction not allowed";
    if let Some(st) = report.ok(scope, "stamp", cli.stamp(&item)) {
        report.check(scope, st.is_some(), || {
            "stamp reads no data, yet failed".into()
        });
    }

    for (mode, scope, says) in [
        (FakeFailure::Deny, "security-cli deny", "Deny"),
        (FakeFailure::Cancel, "security-cli cancel", "dismissed"),
    ] {
        fake.fail(Some(mode));
        let ops: [(&str, Result<(), StoreError>); 3] = [
            ("get", cli.get(&item).map(drop)),
            ("set", cli.set(&item, &other)),
            ("delete", cli.delete(&item).map(drop)),
        ];
        for (what, r) in ops {
            let msg = expect(scope, what, r, "keychain_denied", says, report);
            report.check(scope, msg.contains("Always Allow"), || {
                format!("{what}: Denied does not name the fix: {msg}")
            });
        }
    }

    // Back to normal: the failed writes changed nothing.
    fake.fail(None);
    if let Some(got) = report.ok(S, "get after the failures", cli.get(&item)) {
        report.check(S, exposed(&got) == Some(stored.expose()), || {
            format!(
                "after failed writes the item holds {}",
                shape(exposed(&got))
            )
        });
    }
    report.ok(S, "delete(failing)", cli.delete(&item));
}

fn expect(
    scope: &str,
    what: &str,
    r: Result<(), StoreError>,
    code: &str,
    says: &str,
    report: &mut Report,
) -> String {
    match r {
        Err(e) => {
            report.saw_error(scope, &e);
            report.check(scope, e.code() == code, || {
                format!("{what}: want {code}, got {} ({e})", e.code())
            });
            report.check(scope, e.to_string().contains(says), || {
                format!("{what}: message lacks {says:?}: {e}")
            });
            e.to_string()
        }
        Ok(()) => {
            report.fail(scope, format!("{what}: succeeded, want {code}"));
            String::new()
        }
    }
}

/// No tool at `security_path`, or a tool that fails in a way nobody documented.
fn unavailable(dir: &Path, report: &mut Report) {
    let scope = "security-cli unavailable";
    let missing = dir.join("no-such-security");
    let opts = OpenOptions {
        backend: Backend::SecurityCli,
        prompt_timeout_secs: 0,
        security_path: Some(missing.clone()),
    };
    let shown = missing.display().to_string();
    let _ = expect(
        scope,
        "open",
        store::open_with(&opts).map(drop),
        "keychain_unavailable",
        "security_path",
        report,
    );
    let _ = expect(
        scope,
        "open names the path",
        store::open_with(&opts).map(drop),
        "keychain_unavailable",
        &shown,
        report,
    );
    let _ = expect(
        scope,
        "LazyStore",
        LazyStore::with_options(opts).get().map(drop),
        "keychain_unavailable",
        "security_path",
        report,
    );

    let odd = dir.join("odd-security");
    std::fs::write(
        &odd,
        "#!/bin/sh\necho 'security: something new went wrong' >&2\nexit 3\n",
    )
    .expect("write odd tool");
    std::fs::set_permissions(&odd, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod odd tool");
    let cli = store::SecurityCliStore::new(&odd, 0);
    let _ = expect(
        scope,
        "unknown failure",
        cli.get(&ItemId::new("svc", "acct")).map(drop),
        "keychain_error",
        "something new went wrong",
        report,
    );
}

/// The stand-in logged every run: no secret (nor its hex form) in any argv.
fn no_secret_in_argv(fake: &FakeSecurity, report: &mut Report) {
    let secrets: Vec<String> = report
        .secrets
        .iter()
        .filter(|s| s.len() >= 4)
        .cloned()
        .collect();
    for run in runs(fake) {
        let argv = run.argv.join(" ");
        for s in &secrets {
            let hexed = hex::encode(s);
            report.check(
                S,
                !argv.contains(s.as_str()) && !argv.contains(&hexed),
                || {
                    format!(
                        "a secret is in the argv of a `security` run ({} args)",
                        run.argv.len()
                    )
                },
            );
        }
    }
}
