//! Every output seed 000 shows for cfauth, byte for byte, through the link and as
//! `keyferry cfauth`, with no agent running (the sources read directly).

use crate::kf::{assert_no_secret, text, Home};
use crate::{expect, keychain_item, Cfauth, ENVKEY, FILETOK, TOKEN, TOKEN2};

const NOT_FOUND: &str = "cf auth: no Claude API token found\n";
const UNSAFE: &str = "cf: token file ~/.config/cf/claude-token has unsafe permissions (644) — expected 600, skipping\n\
                      fix: chmod 600 ~/.config/cf/claude-token\n";

#[test]
fn the_lookup_order_and_its_messages_match_the_seed() {
    let h = Home::new();
    for cf in Cfauth::both(&h) {
        let ctx = format!("{cf:?}");
        std::fs::remove_file(h.path(".config/cf/claude-token")).ok();
        // 4. Nothing anywhere: the soft failure, exit 3, nothing on stdout.
        expect(&cf.run(&h, &["status"], None, &[]), 3, "", NOT_FOUND);
        expect(&cf.run(&h, &["get"], None, &[]), 3, "", NOT_FOUND);
        // 3. A 644 token file is skipped with the exact warning, then not found.
        h.write(".config/cf/claude-token", &format!("{FILETOK}\n"), 0o644);
        let out = cf.run(&h, &["status"], None, &[]);
        expect(&out, 3, "", &format!("{UNSAFE}{NOT_FOUND}"));
        // At 600 it is the active source.
        h.write(".config/cf/claude-token", &format!("{FILETOK}\n"), 0o600);
        let out = cf.run(&h, &["status"], None, &[]);
        expect(
            &out,
            0,
            "cf auth: source=file:~/.config/cf/claude-token\n",
            "",
        );
        expect(
            &cf.run(&h, &["get"], None, &[]),
            0,
            &format!("{FILETOK}\n"),
            "",
        );
        // 2. The keychain, stored by `setup` from stdin.
        let out = cf.run(&h, &["setup"], Some(&format!("{TOKEN}\n")), &[]);
        expect(
            &out,
            0,
            "cf auth: token stored in keychain:cf-claude-token\n",
            "",
        );
        assert_eq!(keychain_item(&h), TOKEN, "{ctx}");
        let out = cf.run(&h, &["status"], None, &[]);
        expect(&out, 0, "cf auth: source=keychain:cf-claude-token\n", "");
        expect(
            &cf.run(&h, &["get"], None, &[]),
            0,
            &format!("{TOKEN}\n"),
            "",
        );
        // 1. The environment override, highest priority.
        let env = [("CF_CLAUDE_API_KEY", ENVKEY)];
        let out = cf.run(&h, &["status"], None, &env);
        expect(&out, 0, "cf auth: source=env:CF_CLAUDE_API_KEY\n", "");
        expect(
            &cf.run(&h, &["get"], None, &env),
            0,
            &format!("{ENVKEY}\n"),
            "",
        );
        // clear removes the keychain item; the file is next again.
        expect(
            &cf.run(&h, &["clear"], None, &[]),
            0,
            "cf auth: keychain token cleared\n",
            "",
        );
        assert_eq!(keychain_item(&h), "", "{ctx}");
        let out = cf.run(&h, &["status"], None, &[]);
        expect(
            &out,
            0,
            "cf auth: source=file:~/.config/cf/claude-token\n",
            "",
        );
        let out = cf.run(&h, &["clear"], None, &[]);
        expect(&out, 0, "cf auth: no keychain token to clear\n", "");
    }
}

#[test]
fn claude_codes_own_login_is_never_what_cfauth_serves() {
    let h = Home::new();
    h.write(
        ".claude/.credentials.json",
        r#"{"claudeAiOauth":{"accessToken":"sk-ant-oat01-CFAUTHloginQQQQrrrrSSSStttt-5555","refreshToken":"sk-ant-ort01-CFAUTHloginUUUUvvvv-6666","expiresAt":4102444800000,"scopes":["user:inference"]}}"#,
        0o600,
    );
    // `keyferry get` finds it (the chain's last source); cf's lookup does not.
    let out = h.run(&["get"], None, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for cf in Cfauth::both(&h) {
        expect(&cf.run(&h, &["status"], None, &[]), 3, "", NOT_FOUND);
        expect(&cf.run(&h, &["get"], None, &[]), 3, "", NOT_FOUND);
    }
}

#[test]
fn reroll_reminds_to_revoke_first_then_stores_the_new_token() {
    let h = Home::new();
    for (cf, new) in Cfauth::both(&h).into_iter().zip([TOKEN, TOKEN2]) {
        let out = cf.run(&h, &["reroll"], Some(new), &[]);
        expect(
            &out,
            0,
            "cf auth: token stored in keychain:cf-claude-token\n",
            "cf auth: revoke the old token at claude.ai/settings before storing the new one\n",
        );
        assert_eq!(keychain_item(&h), new);
        // An empty paste changes nothing, and still reminds first.
        let out = cf.run(&h, &["reroll"], Some("\n"), &[]);
        expect(
            &out,
            1,
            "",
            "cf auth: revoke the old token at claude.ai/settings before storing the new one\n\
             cf auth: no token given; nothing was changed\n",
        );
        assert_eq!(keychain_item(&h), new);
    }
}

#[test]
fn usage_errors_print_the_seed_synopsis_and_never_touch_the_keychain() {
    let h = Home::new();
    for cf in Cfauth::both(&h) {
        let out = cf.run(&h, &["setup"], Some(TOKEN), &[]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        for args in [
            &[][..],
            &["bogus"],
            &["status", "now"],
            &["--help", "now"],
            &["clear", "-f"],
        ] {
            let out = cf.run(&h, args, None, &[]);
            expect(&out, 2, "", "usage: cfauth [setup|reroll|status|clear]\n");
        }
        assert_eq!(keychain_item(&h), TOKEN);
    }
}

#[test]
fn a_warning_about_the_environment_hiding_a_new_token_never_shows_either_token() {
    let h = Home::new();
    for cf in Cfauth::both(&h) {
        let out = cf.run(
            &h,
            &["setup"],
            Some(TOKEN),
            &[("CF_CLAUDE_API_KEY", ENVKEY)],
        );
        expect(
            &out,
            0,
            "cf auth: token stored in keychain:cf-claude-token\n",
            "cf auth: warning: env:CF_CLAUDE_API_KEY takes precedence over the stored token; unset it to use the new one\n",
        );
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert_no_secret(&all, &[TOKEN, ENVKEY]);
    }
}
