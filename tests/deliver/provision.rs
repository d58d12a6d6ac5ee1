//! Provisioning a login shell's rc file: over `sh` (idempotent, masked dry run, removal,
//! a failing transport), and over `ssh` to a real sshd on 127.0.0.1 as a second Unix user
//! (needs root, as CI runs).

use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::common;
use crate::kf::sshd::Sshd;
use crate::kf::{self, assert_no_secret, ok, text, Home};
use crate::{SETUP, WAIT};

#[test]
fn provision_over_sh_is_idempotent_and_never_shows_the_token() {
    let h = Home::new();
    ok(&h.run(&["setup"], Some(SETUP), &[]));
    h.write(".bashrc", "# my bashrc\nexport EDITOR=vi\n", 0o644);
    let stop = Arc::new(AtomicBool::new(false));
    let ps = kf::sample_ps(Arc::clone(&stop));
    let via = "sh -c 'sleep 0.3; exec sh'";
    let base = [("ANTHROPIC_BASE_URL", "https://proxy.corp.example")];
    let (out, _) = ok(&h.run(&["provision", "--via", via], None, &base));
    assert!(
        out.contains("added a # keyferry-claude-auth block"),
        "{out}"
    );
    let (out, _) = ok(&h.run(&["provision", "--via", via], None, &base));
    assert!(out.contains("replaced"), "{out}");
    stop.store(true, Ordering::SeqCst);
    let rc = std::fs::read_to_string(h.path(".bashrc")).unwrap();
    assert_eq!(
        rc,
        format!(
            "# my bashrc\nexport EDITOR=vi\n# keyferry-claude-auth\nexport CLAUDE_CODE_OAUTH_TOKEN='{SETUP}'\n\
             export ANTHROPIC_BASE_URL='https://proxy.corp.example'\n# end-keyferry-claude-auth\n"
        )
    );
    assert_eq!(
        std::fs::metadata(h.path(".bashrc")).unwrap().mode() & 0o777,
        0o600
    );
    let seen = ps.join().unwrap();
    assert!(seen.contains("sleep 0.3"), "ps sampled during the run");
    assert_no_secret(&seen, &[SETUP]);
    // A dry run shows the block masked; --remove takes it out again.
    let (_, err) = ok(&h.run(&["provision", "--via", "sh", "--dry-run"], None, &[]));
    assert!(
        err.contains("export CLAUDE_CODE_OAUTH_TOKEN='sk-ant-oat01-…1111'"),
        "{err}"
    );
    ok(&h.run(&["provision", "--via", "sh", "--remove"], None, &[]));
    assert_eq!(
        std::fs::read_to_string(h.path(".bashrc")).unwrap(),
        "# my bashrc\nexport EDITOR=vi\n"
    );
    // A failing transport is an error that says the block was not written.
    let out = h.run(&["provision", "--via", "false"], None, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("was not written"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn provision_over_ssh_to_a_real_sshd() {
    common::require_root("sshd, and a second Unix user created with useradd");
    common::require(&[
        ("ssh", "openssh-client"),
        ("ssh-keygen", "openssh-client"),
        ("runuser", "util-linux"),
    ]);
    let user = "kfother";
    kf::ensure_user(user);
    let sshd = Sshd::start(user);
    let h = Home::new();
    ok(&h.run(&["setup"], Some(SETUP), &[]));
    let rc_name = format!(".kf-test-rc-{}", std::process::id());
    let rc_arg = format!("~/{rc_name}");
    let remote_rc = std::path::PathBuf::from(format!("/home/{user}/{rc_name}"));
    std::fs::write(&remote_rc, "# theirs\n").unwrap();
    let chown = common::run_with_timeout(
        Command::new("chown").args([&format!("{user}:{user}"), remote_rc.to_str().unwrap()]),
        None,
        WAIT,
    );
    assert!(chown.status.success(), "{}", text(&chown.stderr));
    let stop = Arc::new(AtomicBool::new(false));
    let ps = kf::sample_ps(Arc::clone(&stop));
    let via = sshd.via(user);
    let (out, err) = ok(&h.run(
        &[
            "provision",
            "--via",
            &via,
            "--rc",
            &rc_arg,
            "--marker",
            "cf-claude-auth",
        ],
        None,
        &[],
    ));
    assert!(
        out.contains("added a # cf-claude-auth block"),
        "{out}\n{err}"
    );
    ok(&h.run(
        &[
            "provision",
            "--via",
            &via,
            "--rc",
            &rc_arg,
            "--marker",
            "cf-claude-auth",
        ],
        None,
        &[],
    ));
    stop.store(true, Ordering::SeqCst);
    let text_rc = std::fs::read_to_string(&remote_rc).unwrap();
    assert_eq!(text_rc.matches("# cf-claude-auth").count(), 1, "{text_rc}");
    assert!(
        text_rc.starts_with("# theirs\n# cf-claude-auth\n") && text_rc.contains(SETUP),
        "{text_rc}"
    );
    let meta = std::fs::metadata(&remote_rc).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    let uid =
        text(&common::run_with_timeout(Command::new("id").args(["-u", user]), None, WAIT).stdout)
            .trim()
            .parse::<u32>()
            .unwrap();
    assert_eq!(meta.uid(), uid, "written as the sandbox user");
    // The user's login shell sees the token.
    let out = common::run_with_timeout(
        Command::new("runuser").args([
            "-u",
            user,
            "--",
            "sh",
            "-c",
            &format!(". ~/{rc_name}; printf %s \"$CLAUDE_CODE_OAUTH_TOKEN\""),
        ]),
        None,
        WAIT,
    );
    assert_eq!(text(&out.stdout), SETUP);
    let seen = ps.join().unwrap();
    assert!(seen.contains("127.0.0.1"), "ps sampled the ssh run");
    assert_no_secret(&seen, &[SETUP]);
    ok(&h.run(
        &[
            "provision",
            "--via",
            &via,
            "--rc",
            &rc_arg,
            "--marker",
            "cf-claude-auth",
            "--remove",
        ],
        None,
        &[],
    ));
    assert_eq!(std::fs::read_to_string(&remote_rc).unwrap(), "# theirs\n");
    let _ = std::fs::remove_file(&remote_rc);
}
