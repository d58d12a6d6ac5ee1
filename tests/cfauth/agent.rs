//! With an agent running, cfauth goes through it: its lock refuses cf's lookup, and the
//! audit log records every access by the `keyferry` executable behind the link.

use keyferry::domain::{Access, AuditOutcome, Op};

use crate::kf::{ok, Home};
use crate::{expect, keychain_item, Cfauth, TOKEN};

const LOCKED: &str = "cf auth: the agent is locked and serves no tokens; run `keyferry unlock`\n";

fn audit(h: &Home) -> Vec<Access> {
    let (log, _) = ok(&h.run(&["log", "--json", "-n", "200"], None, &[]));
    log.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// How many `op` records for `claude` ended in `outcome`, asked by the real binary.
fn count(log: &[Access], op: &str, outcome: &str) -> usize {
    log.iter()
        .filter(|a| {
            a.op == Op::from(op)
                && a.credential.as_deref() == Some("claude")
                && a.outcome == AuditOutcome::from(outcome)
                && a.peer.exe.as_deref() == Some(env!("CARGO_BIN_EXE_keyferry"))
        })
        .count()
}

#[test]
fn through_a_running_agent_cfauth_is_audited_and_the_lock_refuses_it() {
    let h = Home::new();
    let both = Cfauth::both(&h);
    let _agent = h.start_agent();
    let before = audit(&h);
    for cf in &both {
        let out = cf.run(&h, &["setup"], Some(TOKEN), &[]);
        expect(
            &out,
            0,
            "cf auth: token stored in keychain:cf-claude-token\n",
            "",
        );
        let out = cf.run(&h, &["status"], None, &[]);
        expect(&out, 0, "cf auth: source=keychain:cf-claude-token\n", "");
        expect(
            &cf.run(&h, &["get"], None, &[]),
            0,
            &format!("{TOKEN}\n"),
            "",
        );
    }
    assert_eq!(keychain_item(&h), TOKEN);
    let log = audit(&h);
    // Direct reads are never audited, so these records prove the agent served cfauth.
    let gets = count(&log, "get", "allowed") - count(&before, "get", "allowed");
    assert_eq!(gets, 4, "{log:#?}");
    assert_eq!(count(&log, "store", "stored"), 2, "{log:#?}");
    ok(&h.run(&["lock"], None, &[]));
    for cf in &both {
        expect(&cf.run(&h, &["status"], None, &[]), 6, "", LOCKED);
        expect(&cf.run(&h, &["get"], None, &[]), 6, "", LOCKED);
    }
    let refused: usize = audit(&h)
        .iter()
        .filter(|a| a.op == Op::Get && a.outcome != AuditOutcome::Allowed)
        .count();
    assert_eq!(refused, 4);
    ok(&h.run(&["unlock"], None, &[]));
    for cf in &both {
        expect(
            &cf.run(&h, &["clear"], None, &[]),
            0,
            "cf auth: keychain token cleared\n",
            "",
        );
        expect(
            &cf.run(&h, &["status"], None, &[]),
            3,
            "",
            "cf auth: no Claude API token found\n",
        );
        let out = cf.run(&h, &["setup"], Some(TOKEN), &[]);
        expect(
            &out,
            0,
            "cf auth: token stored in keychain:cf-claude-token\n",
            "",
        );
    }
    assert_eq!(count(&audit(&h), "clear", "cleared"), 2);
}

#[test]
fn through_the_agent_a_644_token_file_still_gets_the_seed_warning() {
    let h = Home::new();
    let both = Cfauth::both(&h);
    h.write(".config/cf/claude-token", &format!("{TOKEN}\n"), 0o644);
    let _agent = h.start_agent();
    for cf in &both {
        expect(
            &cf.run(&h, &["status"], None, &[]),
            3,
            "",
            "cf: token file ~/.config/cf/claude-token has unsafe permissions (644) — expected 600, skipping\n\
             fix: chmod 600 ~/.config/cf/claude-token\n\
             cf auth: no Claude API token found\n",
        );
    }
    // Refused by the agent's chain, not read directly: the agent recorded both lookups.
    let log = audit(&h);
    let misses = log
        .iter()
        .filter(|a| a.op == Op::Get && a.outcome != AuditOutcome::Allowed)
        .count();
    assert_eq!(misses, 2, "{log:#?}");
}
