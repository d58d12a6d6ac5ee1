//! The window's rows: grants, collapsed credentials, usage bars.

use super::*;

#[test]
fn a_grant_row_says_what_it_spent_and_when_it_ends() {
    let g = crate::domain::GrantInfo {
        name: "vm-1".into(),
        credential: "claude".into(),
        created: ts(now() - time::Duration::hours(1)),
        expires: ts(now() + time::Duration::hours(2)),
        requests: 3,
        input_tokens: 10,
        output_tokens: 5,
        cache_creation_input_tokens: 1,
        cache_read_input_tokens: 2,
        last_use: None,
        max_concurrent: None,
        daily_token_budget: None,
        history: Vec::new(),
    };
    let row = crate::tray::GrantRow::of(&g, now());
    assert_eq!(row.name, "vm-1");
    assert_eq!(
        row.line,
        "vm-1 on claude: 3 requests, 18 tokens (in 10 / out 5), expires in 2 h"
    );
}

#[test]
fn credentials_nothing_provides_collapse_into_one_line() {
    let broken = CredentialStatus {
        error: Some(ErrorBody {
            code: ErrorCode::KeychainLocked,
            message: "locked".into(),
        }),
        ..missing("work")
    };
    let s = state(vec![
        cred("claude", Health::Ok, Some(30 * D)),
        missing("codex"),
        missing("gemini"),
        broken,
    ]);
    let v = s.view(now());
    let cards: Vec<&str> = v.credentials.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(cards, ["claude", "work"], "a keychain error stays a card");
    assert_eq!(v.not_set_up, ["codex", "gemini"]);
}

#[test]
fn usage_shows_as_a_menu_line_and_bars_or_says_why_not() {
    use crate::domain::{SubscriptionUsage, UsageWindow};
    let mut st = state(vec![cred("claude", Health::Ok, Some(3600))]);
    let known = |five: f64| CredentialUsage {
        name: "claude".into(),
        state: UsageState::Known(SubscriptionUsage {
            five_hour: Some(UsageWindow {
                utilization: five,
                resets_at: Some(now() + time::Duration::minutes(62)),
            }),
            seven_day: Some(UsageWindow {
                utilization: 12.5,
                resets_at: None,
            }),
        }),
    };
    assert!(st.set_usage(vec![known(37.0)]));
    assert!(
        !st.set_usage(vec![known(37.0)]),
        "same figures: nothing to redraw"
    );
    let menu = st.menu(now());
    assert_eq!(
        menu.get("usage:claude")
            .map(|e| (e.label.as_str(), e.enabled)),
        Some(("claude usage: 5-hour 37% · 7-day 12%", false))
    );
    let row = &st.view(now()).credentials[0];
    assert_eq!(row.usage.len(), 2);
    assert_eq!(
        (
            row.usage[0].label,
            row.usage[0].percent,
            row.usage[0].resets.as_deref()
        ),
        ("5-hour", 37, Some("resets in 1 h 2 min"))
    );
    assert_eq!(
        (row.usage[1].percent, row.usage[1].resets.as_deref()),
        (12, None)
    );
    assert_eq!(row.usage_note, None);
    // A setup-token: no menu line, and the card says why.
    st.set_usage(vec![CredentialUsage {
        name: "claude".into(),
        state: UsageState::Unavailable(ErrorBody::new(
            ErrorCode::NoUsageScope,
            "the token lacks the user:profile scope",
        )),
    }]);
    assert!(st.menu(now()).get("usage:claude").is_none());
    let row = &st.view(now()).credentials[0];
    assert!(row.usage.is_empty());
    assert!(row.usage_note.as_deref().unwrap().contains("user:profile"));
}
