//! A cf-style launcher (tests/fixtures/cf-launcher.sh, written from seed 000) looks the token
//! up through `cfauth` and provisions a "VM" over the transport's stdin: locally over `sh`
//! into another HOME, and over `ssh` to a real sshd on 127.0.0.1 as a second Unix user
//! (needs root, as CI runs).
//! The block matches the seed's shape exactly and never appears in any process's argv.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::kf::sshd::Sshd;
use crate::kf::{self, assert_no_secret, ok, text, Home};
use crate::{expect, install_link, ENVKEY, TOKEN};

const LAUNCHER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cf-launcher.sh");
const BASE: &str = "https://proxy.corp.example/v1";
/// A quote inside a value must survive the shell quoting.
const HEADERS: &str = "X-Corp-Auth: it's-me";

/// `cf-launcher.sh TRANSPORT…` with the `cfauth` link first on PATH.
fn launch(h: &Home, transport: &[&str], envs: &[(&str, &str)]) -> Output {
    let bin = install_link(h);
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = h.command("bash");
    cmd.arg(LAUNCHER)
        .args(transport)
        .env("PATH", path)
        .envs(envs.iter().copied());
    crate::common::run_with_timeout(&mut cmd, None, crate::common::COMMAND_TIMEOUT)
}

/// Seed 000's block, with both optional lines.
fn block(token: &str) -> String {
    format!(
        "# cf-claude-auth\nexport ANTHROPIC_API_KEY='{token}'\n\
         export ANTHROPIC_BASE_URL='{BASE}'\n\
         export ANTHROPIC_CUSTOM_HEADERS='X-Corp-Auth: it'\\''s-me'\n# end-cf-claude-auth\n"
    )
}

/// What a login shell in the VM sees after sourcing the rc file.
fn sourced(home: &Path, var: &str) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(". ~/.bashrc; printf %s \"${var}\""))
        .env("HOME", home)
        .output()
        .unwrap();
    text(&out.stdout)
}

#[test]
fn the_launcher_provisions_the_seed_block_over_sh_idempotently() {
    let h = Home::new();
    let vm = h.path("vm");
    std::fs::create_dir_all(&vm).unwrap();
    let rc = vm.join(".bashrc");
    std::fs::write(&rc, "# vm bashrc\nexport EDITOR=vi\n").unwrap();
    let vm_home = format!("HOME={}", vm.display());
    // The VM's sh waits a little so `ps` is sampled while the block is in flight.
    let transport = ["env", &vm_home, "sh", "-c", "sleep 0.3; exec sh"];
    // No token anywhere: the soft failure, the VM untouched, the launcher carries on.
    let out = launch(&h, &transport, &[]);
    expect(&out, 0, "", "cf auth: no Claude API token found\n");
    assert_eq!(
        std::fs::read_to_string(&rc).unwrap(),
        "# vm bashrc\nexport EDITOR=vi\n"
    );
    ok(&h.run(&["cfauth", "setup"], Some(TOKEN), &[]));
    let stop = Arc::new(AtomicBool::new(false));
    let ps = kf::sample_ps(Arc::clone(&stop));
    let forward = [
        ("ANTHROPIC_BASE_URL", BASE),
        ("ANTHROPIC_CUSTOM_HEADERS", HEADERS),
    ];
    for _ in 0..2 {
        expect(&launch(&h, &transport, &forward), 0, "", "");
        assert_eq!(
            std::fs::read_to_string(&rc).unwrap(),
            format!("# vm bashrc\nexport EDITOR=vi\n{}", block(TOKEN))
        );
    }
    stop.store(true, Ordering::SeqCst);
    let seen = ps.join().unwrap();
    assert!(seen.contains("sleep 0.3"), "ps sampled during the run");
    assert_no_secret(&seen, &[TOKEN]);
    assert_eq!(std::fs::metadata(&rc).unwrap().mode() & 0o777, 0o600);
    assert_eq!(sourced(&vm, "ANTHROPIC_API_KEY"), TOKEN);
    assert_eq!(sourced(&vm, "ANTHROPIC_CUSTOM_HEADERS"), HEADERS);
    // Without the host's proxy variables only the key is exported; the env override wins.
    let out = launch(&h, &transport, &[("CF_CLAUDE_API_KEY", ENVKEY)]);
    expect(&out, 0, "", "");
    assert_eq!(
        std::fs::read_to_string(&rc).unwrap(),
        format!(
            "# vm bashrc\nexport EDITOR=vi\n# cf-claude-auth\nexport ANTHROPIC_API_KEY='{ENVKEY}'\n# end-cf-claude-auth\n"
        )
    );
    // `keyferry provision` adopts cf's block: same marker, replaced in place, same shape
    // (an API key exports ANTHROPIC_API_KEY).
    let via = format!("env {vm_home} sh");
    ok(&h.run(
        &["provision", "--via", &via, "--marker", "cf-claude-auth"],
        None,
        &[("CF_CLAUDE_API_KEY", ENVKEY), ("ANTHROPIC_BASE_URL", BASE)],
    ));
    let text_rc = std::fs::read_to_string(&rc).unwrap();
    assert_eq!(
        text_rc,
        format!(
            "# vm bashrc\nexport EDITOR=vi\n# cf-claude-auth\nexport ANTHROPIC_API_KEY='{ENVKEY}'\n\
             export ANTHROPIC_BASE_URL='{BASE}'\n# end-cf-claude-auth\n"
        )
    );
}

#[test]
fn through_a_locked_agent_the_launcher_provisions_nothing() {
    let h = Home::new();
    ok(&h.run(&["cfauth", "setup"], Some(TOKEN), &[]));
    let vm = h.path("vm");
    std::fs::create_dir_all(&vm).unwrap();
    let vm_home = format!("HOME={}", vm.display());
    let _agent = h.start_agent();
    ok(&h.run(&["lock"], None, &[]));
    let out = launch(&h, &["env", &vm_home, "sh"], &[]);
    expect(
        &out,
        0,
        "",
        "cf auth: the agent is locked and serves no tokens; run `keyferry unlock`\n",
    );
    assert!(!vm.join(".bashrc").exists());
    ok(&h.run(&["unlock"], None, &[]));
    expect(&launch(&h, &["env", &vm_home, "sh"], &[]), 0, "", "");
    assert!(std::fs::read_to_string(vm.join(".bashrc"))
        .unwrap()
        .contains(TOKEN));
}

#[test]
fn the_launcher_provisions_a_remote_vm_over_ssh() {
    crate::common::require_root("sshd, and a second Unix user created with useradd");
    crate::common::require(&[("ssh", "openssh-client"), ("ssh-keygen", "openssh-client")]);
    // Its own user: this test owns that user's ~/.bashrc, as cf owns the VM's.
    let user = "kfcfvm";
    kf::ensure_user(user);
    let sshd = Sshd::start(user);
    let rc = std::path::PathBuf::from(format!("/home/{user}/.bashrc"));
    std::fs::write(&rc, "# theirs\n").unwrap();
    let chown = crate::common::run_with_timeout(
        Command::new("chown").args([&format!("{user}:{user}"), rc.to_str().unwrap()]),
        None,
        crate::common::COMMAND_TIMEOUT,
    );
    assert!(chown.status.success(), "{}", text(&chown.stderr));
    let h = Home::new();
    ok(&h.run(&["cfauth", "setup"], Some(TOKEN), &[]));
    let via = sshd.via(user);
    let transport: Vec<&str> = via.split(' ').collect();
    let forward = [
        ("ANTHROPIC_BASE_URL", BASE),
        ("ANTHROPIC_CUSTOM_HEADERS", HEADERS),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let ps = kf::sample_ps(Arc::clone(&stop));
    for _ in 0..2 {
        expect(&launch(&h, &transport, &forward), 0, "", "");
        assert_eq!(
            std::fs::read_to_string(&rc).unwrap(),
            format!("# theirs\n{}", block(TOKEN))
        );
    }
    stop.store(true, Ordering::SeqCst);
    let seen = ps.join().unwrap();
    assert!(
        seen.contains("kfcfvm@127.0.0.1 sh"),
        "ps sampled during the run"
    );
    assert_no_secret(&seen, &[TOKEN]);
    let meta = std::fs::metadata(&rc).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    let owner = crate::common::run_with_timeout(
        Command::new("id").args(["-u", user]),
        None,
        crate::common::COMMAND_TIMEOUT,
    );
    assert_eq!(text(&owner.stdout).trim(), meta.uid().to_string());
}
