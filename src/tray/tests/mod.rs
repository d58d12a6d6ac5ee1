//! Unit tests of the tray logic: its state, menu and events here; the window's rows in
//! `view`.

mod view;

use super::*;
use crate::credential::{Expiry, Inspection};
use crate::domain::{ErrorBody, ErrorCode};

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
}

fn ts(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap()
}

fn cred(name: &str, health: Health, left: Option<i64>) -> CredentialStatus {
    CredentialStatus {
        name: name.into(),
        health,
        source: Some("keychain:cf-claude-token".into()),
        inspection: Some(Inspection {
            kind: Kind::SetupToken,
            masked: "sk-ant-oat01-…abcd".into(),
            fingerprint: "sha256:0011223344556677".into(),
            expires_at: left.map(|s| ts(now() + time::Duration::seconds(s))),
            // Deliberately stale: the model must count from expires_at.
            expires_in_secs: left.map(|s| s + 999),
            expires_in: None,
            expiry: Expiry::Embedded,
            plan: None,
            rate_limit_tier: None,
            scopes: vec!["user:inference".into()],
            has_refresh_token: false,
        }),
        error: None,
        warnings: Vec::new(),
    }
}

fn missing(name: &str) -> CredentialStatus {
    CredentialStatus {
        name: name.into(),
        health: Health::Missing,
        source: None,
        inspection: None,
        error: Some(ErrorBody {
            code: ErrorCode::NotFound,
            message: "no token".into(),
        }),
        warnings: Vec::new(),
    }
}

fn access(op: &str, outcome: &str, code: Option<&str>, secs_ago: i64) -> Access {
    Access {
        ts: ts(now() - time::Duration::seconds(secs_ago)),
        op: op.into(),
        credential: Some("claude".into()),
        outcome: outcome.into(),
        code: code.map(ErrorCode::parse),
        peer: Peer {
            uid: 1000,
            pid: Some(4211),
            exe: Some("/usr/local/bin/cf".into()),
            sandbox: None,
        },
    }
}

fn state(creds: Vec<CredentialStatus>) -> TrayState {
    let mut s = TrayState::new(AgentLink::Embedded { pid: 7 });
    for c in creds {
        s.apply(&Event::Changed { status: c }, now());
    }
    s
}

const D: i64 = 86_400;
const H: i64 = 3_600;

#[test]
fn icon_is_the_worst_state_and_lock_wins() {
    let ok = cred("a", Health::Ok, Some(30 * D));
    let soon = cred("b", Health::Expiring, Some(2 * D));
    let gone = cred("c", Health::Expired, Some(-H));
    let broken = CredentialStatus {
        health: Health::Error,
        ..missing("d")
    };
    assert_eq!(IconState::of([&ok], false), IconState::Ok);
    assert_eq!(IconState::of([&ok, &soon], false), IconState::Expiring);
    assert_eq!(
        IconState::of([&soon, &gone, &ok], false),
        IconState::Expired
    );
    assert_eq!(IconState::of([&ok, &broken], false), IconState::Expired);
    assert_eq!(IconState::of([&gone], true), IconState::Locked);
    // An unused CLI's missing credential does not turn the icon red…
    assert_eq!(
        IconState::of([&ok, &missing("codex")], false),
        IconState::Ok
    );
    // …but nothing at all to serve does.
    assert_eq!(
        IconState::of([&missing("claude")], false),
        IconState::Expired
    );
    assert_eq!(IconState::of([], false), IconState::Ok);
    assert_eq!(IconState::Expiring.as_str(), "expiring");
    let mut s = state(vec![ok]);
    s.link = AgentLink::Down { reason: "x".into() };
    assert_eq!(s.icon(), IconState::Expired);
}

#[test]
fn countdown_texts() {
    let m = Precision::Minutes;
    assert_eq!(
        expiry_text(Some(3 * D + 4 * H + 59), m),
        "expires in 3 d 4 h"
    );
    assert_eq!(expiry_text(Some(-2 * H), m), "expired 2 h ago");
    assert_eq!(expiry_text(Some(42), m), "expires in less than 1 min");
    assert_eq!(expiry_text(Some(42), Precision::Seconds), "expires in 42 s");
    assert_eq!(expiry_text(None, m), "no expiry");
    assert_eq!(ago_text(120, m), "2 min ago");
    assert_eq!(ago_text(30, m), "just now");
    assert_eq!(ago_text(30, Precision::Seconds), "30 s ago");
    assert_eq!(ago_text(2, Precision::Seconds), "just now");
}

#[test]
fn text_change_times_match_the_texts() {
    let m = Precision::Minutes;
    // Brute force: the text must stay the same until exactly the predicted second.
    let expiry = |v: i64| expiry_text(Some(v), m);
    let age = |v: i64| ago_text(v, m);
    let cases: [(i64, bool); 9] = [
        (3 * D + 4 * H + 17, true),
        (2 * H + 5 * 60 + 3, true),
        (3 * 60, true),
        (61, true),
        (42, true),
        (0, true),
        (-(2 * H) - 7, true),
        (125, false),
        (0, false),
    ];
    for (start, decreasing) in cases {
        let value = |k: i64| if decreasing { start - k } else { start + k };
        let text = |k: i64| {
            if decreasing {
                expiry(value(k))
            } else {
                age(value(k))
            }
        };
        let wait = text_changes_in(start, decreasing, m);
        for k in 0..wait {
            assert_eq!(text(k), text(0), "start {start}, +{k}s");
        }
        assert_ne!(text(wait), text(0), "start {start}: change at +{wait}s");
    }
}

#[test]
fn credential_and_access_lines() {
    let n = now();
    let c = cred("claude", Health::Ok, Some(3 * D + 4 * H + 10));
    assert_eq!(
        credential_line(&c, n, Precision::Minutes),
        "claude: ok · expires in 3 d 4 h · keychain:cf-claude-token"
    );
    assert_eq!(
        credential_line(&missing("codex"), n, Precision::Minutes),
        "codex: not found"
    );
    let err = CredentialStatus {
        health: Health::Error,
        error: Some(ErrorBody {
            code: ErrorCode::KeychainLocked,
            message: "…".into(),
        }),
        ..missing("claude")
    };
    assert_eq!(
        credential_line(&err, n, Precision::Minutes),
        "claude: error · keychain_locked"
    );
    let m = Precision::Minutes;
    assert_eq!(
        access_line(&access("get", "allowed", None, 125), n, m),
        "cf read claude 2 min ago"
    );
    assert_eq!(
        access_line(&access("get", "refused", Some("agent_locked"), 1), n, m),
        "cf was refused claude (agent_locked) just now"
    );
    assert_eq!(
        access_line(&access("store", "stored", None, 3 * H), n, m),
        "cf stored claude 3 h ago"
    );
    let req = ApprovalRequest {
        request: 3,
        credential: "claude".into(),
        peer: access("get", "allowed", None, 0).peer,
        timeout_secs: 60,
    };
    assert_eq!(
        approval_text(&req),
        "cf (pid 4211, /usr/local/bin/cf) wants `claude`"
    );
    assert_eq!(
        approval_notification(&req),
        (
            "Allow access to claude?".to_owned(),
            "cf (pid 4211, /usr/local/bin/cf) wants `claude`. Answer in Keyferry within 60 s, or it is denied.".to_owned()
        )
    );
}

#[test]
fn menu_has_every_line_in_order_with_enabled_states() {
    let mut s = state(vec![
        cred("claude", Health::Expiring, Some(2 * D + 3 * H + 5)),
        missing("codex"),
    ]);
    s.apply(
        &Event::Access {
            access: access("get", "allowed", None, 120),
        },
        now(),
    );
    let m = s.menu(now());
    let labels: Vec<(&str, &str, bool)> = m
        .items
        .iter()
        .map(|e| (e.id.as_str(), e.label.as_str(), e.enabled))
        .collect();
    assert_eq!(
        labels,
        [
            (
                "cred:claude",
                "claude: expiring · expires in 2 d 3 h · keychain:cf-claude-token",
                true
            ),
            ("cred:codex", "codex: not found", true),
            ("sep:status", "", false),
            ("agent", "Serving from this app (pid 7)", false),
            ("last-access", "cf read claude 2 min ago", false),
            ("sep:actions", "", false),
            ("reroll", "Reroll…", true),
            ("new-sandbox", "New sandbox…", true),
            ("lock", "Lock serving", true),
            ("sep:app", "", false),
            ("open", "Open Keyferry", true),
            ("autostart", "Start at login", true),
            ("sep:quit", "", false),
            ("quit", "Quit Keyferry", true),
        ]
    );
    assert_eq!(
        m.get("autostart").unwrap().kind,
        EntryKind::Check { checked: false }
    );
    assert_eq!(
        MenuAction::from_id("cred:claude"),
        Some(MenuAction::Credential("claude".into()))
    );
    for e in &m.items {
        if e.enabled {
            let action = MenuAction::from_id(&e.id).unwrap();
            assert_eq!(action.id(), e.id);
        }
    }
    assert_eq!(MenuAction::from_id("sep:quit"), None);

    // Locking changes a label, not the shape: the menu can be updated in place.
    assert_eq!(s.apply(&Event::Locked, now()), Applied::Changed);
    s.autostart = true;
    let locked = s.menu(now());
    assert!(locked.same_shape(&m));
    assert_eq!(locked.get("lock").unwrap().label, "Unlock serving");
    assert_eq!(
        locked.get("autostart").unwrap().kind,
        EntryKind::Check { checked: true }
    );
    assert_eq!(s.icon(), IconState::Locked);
    assert_eq!(s.tooltip(now()), "Keyferry: locked, serving no tokens");

    // A down agent greys out what needs it.
    s.link = AgentLink::Down {
        reason: "socket dir is open; chmod 700 it".into(),
    };
    let down = s.menu(now());
    assert!(!down.get("reroll").unwrap().enabled);
    assert!(!down.get("lock").unwrap().enabled);
    assert!(down.get("agent").unwrap().label.contains("chmod 700"));
}

#[test]
fn events_update_state_and_approvals_come_and_go() {
    let mut s = state(vec![cred("claude", Health::Ok, Some(30 * D + 600))]);
    let same = Event::Changed {
        status: cred("claude", Health::Ok, Some(30 * D + 600)),
    };
    assert_eq!(s.apply(&same, now()), Applied::Nothing);
    assert_eq!(
        s.apply(&Event::Lagged { missed: 3 }, now()),
        Applied::Resync
    );
    let req = ApprovalRequest {
        request: 9,
        credential: "claude".into(),
        peer: access("get", "allowed", None, 0).peer,
        timeout_secs: 60,
    };
    let ev = Event::Approval {
        approval: req.clone(),
    };
    assert_eq!(s.apply(&ev, now()), Applied::Changed);
    let m = s.menu(now());
    assert_eq!(
        m.get("approvals").unwrap().label,
        "Approve: cf (pid 4211, /usr/local/bin/cf) wants `claude`…"
    );
    assert_eq!(s.view(now()).approvals[0].seconds_left, 60);
    assert_eq!(
        s.next_refresh(now()),
        Some(time::Duration::seconds(61)),
        "the approval's deadline is the next change"
    );
    assert!(!s.expire_approvals(now() + time::Duration::seconds(59)));
    assert!(s.expire_approvals(now() + time::Duration::seconds(60)));
    s.apply(&ev, now());
    assert!(s.answered(9));
    assert!(!s.answered(9));
    // A served `get` from the same process closes the request (another approver answered).
    s.apply(&ev, now());
    s.apply(
        &Event::Access {
            access: access("get", "allowed", None, 0),
        },
        now(),
    );
    assert!(s.approvals.is_empty());
    assert_eq!(s.recent.len(), 1);
    let v = s.view(now());
    assert_eq!(v.recent[0].line, "cf read claude just now");
    assert_eq!(v.credentials[0].countdown, "expires in 30 d");
}

#[test]
fn expiry_warnings_become_a_menu_line_until_the_credential_is_healthy() {
    let mut s = state(vec![cred("claude", Health::Expiring, Some(2 * D))]);
    let ev = Event::Expiring {
        name: "claude".into(),
        expires_at: ts(now() + time::Duration::days(2)),
        expires_in: "2 d".into(),
        threshold: "3d".into(),
    };
    assert_eq!(s.apply(&ev, now()), Applied::Changed);
    let m = s.menu(now());
    let line = m.get("alert").unwrap();
    assert_eq!(line.label, "claude token expires in 2 d: Reroll…");
    assert!(line.enabled);
    assert_eq!(MenuAction::from_id("alert"), Some(MenuAction::Alert));
    assert_eq!(s.alert_action(), Some(MenuAction::Reroll));
    // A Gemini login is renewed by its own CLI, not by the reroll wizard.
    let mut g = cred("gemini", Health::Expiring, Some(2 * D));
    g.inspection.as_mut().unwrap().kind = Kind::Gemini;
    s.apply(&Event::Changed { status: g }, now());
    s.apply(
        &Event::Expired {
            name: "gemini".into(),
            expires_at: ts(now()),
        },
        now(),
    );
    assert_eq!(
        s.menu(now()).get("alert").unwrap().label,
        "gemini token expired: log in again with its CLI"
    );
    assert_eq!(
        s.alert_action(),
        Some(MenuAction::Credential("gemini".into()))
    );
    s.apply(&ev, now());
    s.apply(
        &Event::Changed {
            status: cred("claude", Health::Ok, Some(365 * D)),
        },
        now(),
    );
    assert!(s.alert.is_none());
    assert!(s.menu(now()).get("alert").is_none());
}

#[test]
fn sink_failures_show_until_that_sink_is_written() {
    let mut s = state(vec![]);
    let failed = Event::SinkFailed {
        name: "claude".into(),
        path: "/p/.env".into(),
        error: ErrorBody {
            code: ErrorCode::Io,
            message: "permission denied; chmod u+w /p/.env".into(),
        },
    };
    assert_eq!(s.apply(&failed, now()), Applied::Changed);
    assert_eq!(
        s.menu(now()).get("notice").unwrap().label,
        "could not update /p/.env with claude: permission denied; chmod u+w /p/.env"
    );
    let other = Event::SinkWritten {
        name: "claude".into(),
        path: "/q/.env".into(),
    };
    assert_eq!(s.apply(&other, now()), Applied::Nothing);
    let fixed = Event::SinkWritten {
        name: "claude".into(),
        path: "/p/.env".into(),
    };
    assert_eq!(s.apply(&fixed, now()), Applied::Changed);
    assert!(s.notice.is_none());
}

#[test]
fn recent_log_is_bounded_and_seeds_last_access() {
    let mut s = state(vec![]);
    s.seed_recent((0..RECENT_MAX + 5).map(|i| access("get", "allowed", None, 1000 - i as i64)));
    assert_eq!(s.recent.len(), RECENT_MAX);
    assert_eq!(
        s.last_access.as_ref().unwrap().ts,
        ts(now() - time::Duration::seconds(1000 - (RECENT_MAX as i64 + 4)))
    );
    assert_eq!(s.menu(now()).items[0].label, "No credentials yet");
}

#[test]
fn next_refresh_follows_the_nearest_text_change() {
    let s = state(vec![
        cred("a", Health::Ok, Some(30 * D + 1000)),
        cred("b", Health::Expiring, Some(2 * H + 5 * 60 + 30)),
    ]);
    assert_eq!(s.next_refresh(now()), Some(time::Duration::seconds(31)));
    let quiet = state(vec![missing("codex")]);
    assert_eq!(quiet.next_refresh(now()), None);
}

#[test]
fn reroll_tokens_are_checked_without_revealing_them() {
    let ok = check_reroll_token(
        &Secret::new("sk-ant-oat01-abcdefghijklmnopqrstuvwxyz0123".into()),
        now(),
    )
    .unwrap();
    assert_eq!(ok.kind, Kind::SetupToken);
    assert_eq!(ok.masked, "sk-ant-oat01-…0123");
    let refresh =
        check_reroll_token(&Secret::new("sk-ant-ort01-SECRETSECRET".into()), now()).unwrap_err();
    assert!(refresh.contains("claude setup-token"), "{refresh}");
    assert!(!refresh.contains("SECRETSECRET"));
    let other = check_reroll_token(&Secret::new("hello-SECRET".into()), now()).unwrap_err();
    assert!(other.contains("not a Claude setup-token"), "{other}");
    assert!(!other.contains("SECRET"));
    let done = reroll_done(&cred("claude", Health::Ok, Some(365 * D)), now());
    assert_eq!(done.fingerprint, "sha256:0011223344556677");
    assert!(
        done.expires.ends_with("(expires in 365 d)"),
        "{}",
        done.expires
    );
    assert_eq!(done.summary, "claude token rerolled");
}

#[test]
fn unshown_notifications_fall_back_to_the_tray_line() {
    let mut st = state(vec![cred("claude", Health::Ok, Some(86_400 * 30))]);
    let shown = Event::Notified {
        summary: "Refused claude to /bin/x".into(),
        body: String::new(),
        shown: true,
    };
    assert_eq!(st.apply(&shown, now()), Applied::Nothing);
    let dropped = Event::Notified {
        summary: "Refused claude to /bin/x".into(),
        body: String::new(),
        shown: false,
    };
    assert_eq!(st.apply(&dropped, now()), Applied::Changed);
    assert!(
        st.menu(now())
            .items
            .iter()
            .any(|e| e.label.contains("Refused claude")),
        "{:?}",
        st.menu(now())
    );
}
