use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::gateway::grants_file::GrantsFile;

fn spec(name: &str, ttl_secs: u64) -> NewGrant {
    NewGrant {
        name: name.into(),
        credential: "claude".into(),
        ttl: Duration::from_secs(ttl_secs),
        max_concurrent: None,
        daily_token_budget: None,
    }
}

fn t0() -> OffsetDateTime {
    time::macros::datetime!(2026-12-01 10:00 UTC)
}

#[test]
fn verify_tells_missing_unknown_expired_revoked_apart() {
    let mut g = Grants::default();
    let (grant, p) = g.create(spec("box", 60), t0()).unwrap();
    assert_eq!(g.verify(p.expose(), t0()).unwrap().name, "box");
    assert_eq!(grant.expires, t0() + Duration::from_secs(60));
    assert_eq!(g.verify("", t0()).unwrap_err(), Denial::Missing);
    assert_eq!(g.verify("kfg_0000", t0()).unwrap_err(), Denial::Unknown);
    let later = t0() + Duration::from_secs(60);
    assert_eq!(
        g.verify(p.expose(), later).unwrap_err(),
        Denial::Expired { name: "box".into() }
    );
    g.revoke("box").unwrap();
    assert_eq!(
        g.verify(p.expose(), t0()).unwrap_err(),
        Denial::Revoked { name: "box".into() }
    );
    assert!(matches!(g.revoke("box"), Err(GrantError::NoSuchGrant(_))));
}

#[test]
fn replacing_a_grant_retires_the_old_placeholder_as_replaced() {
    let mut g = Grants::default();
    let (_, old) = g.create(spec("box", 60), t0()).unwrap();
    let (_, new) = g.create(spec("box", 60), t0()).unwrap();
    assert_eq!(g.list().len(), 1);
    let denial = g.verify(old.expose(), t0()).unwrap_err();
    assert_eq!(denial, Denial::Replaced { name: "box".into() });
    assert!(
        denial.to_string().contains("replaced by a newer grant"),
        "{denial}"
    );
    assert_eq!(g.verify(new.expose(), t0()).unwrap().name, "box");
}

#[test]
fn names_and_lifetimes_are_checked() {
    let mut g = Grants::default();
    for bad in ["", "a b", "../x", &"x".repeat(65), "név"] {
        assert!(
            matches!(g.create(spec(bad, 60), t0()), Err(GrantError::BadName(_))),
            "{bad:?}"
        );
    }
    assert!(matches!(
        g.create(spec("ok", 0), t0()),
        Err(GrantError::BadTtl { .. })
    ));
    assert!(matches!(
        g.create(spec("ok", 400 * 86400), t0()),
        Err(GrantError::BadTtl { .. })
    ));
}

#[test]
fn daily_budget_denies_until_utc_midnight() {
    let mut g = Grants::default();
    let mut s = spec("box", 3 * 86400);
    s.daily_token_budget = Some(100);
    let (_, p) = g.create(s, t0()).unwrap();
    let used = Usage {
        input_tokens: 60,
        output_tokens: 40,
        ..Usage::default()
    };
    g.record("box", &used, t0());
    assert_eq!(
        g.verify(p.expose(), t0()).unwrap_err(),
        Denial::OverBudget {
            name: "box".into(),
            retry_after_secs: 14 * 3600
        }
    );
    let tomorrow = t0() + Duration::from_secs(86400);
    assert_eq!(g.verify(p.expose(), tomorrow).unwrap().requests, 1);
    g.record(
        "box",
        &Usage {
            output_tokens: 1,
            ..Usage::default()
        },
        tomorrow,
    );
    let got = g.get("box").unwrap();
    assert_eq!(
        (got.requests, got.tokens.total(), got.day_tokens),
        (2, 101, 1)
    );
    assert_eq!(got.last_use, Some(tomorrow));
}

#[test]
fn the_file_holds_hashes_only_is_private_and_drops_expired() {
    let dir = tempfile::tempdir().unwrap();
    let gdir = dir.path().join("gw");
    let mut f = GrantsFile::open(&gdir, t0()).unwrap();
    let (_, short) = f.table.create(spec("short", 10), t0()).unwrap();
    let (_, long) = f.table.create(spec("long", 3600), t0()).unwrap();
    f.save().unwrap();
    let raw = std::fs::read_to_string(f.path()).unwrap();
    assert!(!raw.contains(short.expose()) && !raw.contains(long.expose()));
    assert!(!raw.contains(&long.expose()[4..20]));
    assert!(raw.contains(&placeholder::Hash::of(long.expose()).to_hex()));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(f.path()), 0o600);
    assert_eq!(mode(&gdir), 0o700);

    let later = t0() + Duration::from_secs(60);
    let f2 = GrantsFile::open(&gdir, later).unwrap();
    let names: Vec<_> = f2.table.list().iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["long"]);
    assert_eq!(f2.table.verify(long.expose(), later).unwrap().name, "long");
}

#[test]
fn a_hostile_grants_file_is_refused_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(crate::gateway::grants_file::FILE_NAME);
    std::fs::write(&path, "{\"grants\": 5}").unwrap();
    let e = GrantsFile::open(dir.path(), t0()).unwrap_err();
    assert!(e.to_string().contains("grants.json"), "{e}");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(9 << 20).unwrap();
    assert!(matches!(
        GrantsFile::open(dir.path(), t0()).unwrap_err(),
        crate::gateway::grants_file::GrantsFileError::TooLarge { .. }
    ));
}
