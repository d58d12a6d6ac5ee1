//! Secret Service interop with the real `secret-tool`: the keyring-crate attributes,
//! duplicates (Ambiguous) and non-UTF-8 data.

use keyferry::store::{ItemId, Store, StoreError};
use keyferry::Secret;

use crate::common::SecretServiceFixture;
use crate::report::{exposed, shape, Report};

/// The cfauth / keyring-crate compatibility contract, with the real `secret-tool`.
pub(crate) fn interop(
    fx: &SecretServiceFixture,
    ss: &dyn Store,
    prefix: &str,
    report: &mut Report,
) {
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
