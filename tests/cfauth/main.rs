//! `cfauth`, the drop-in for cf's token helper (seed 000), driven as the real binary both
//! through a `cfauth` link and as `keyferry cfauth`: every output the seed shows, byte for
//! byte with its exit status ([`seed`]); through a running agent, audited and stopped by its
//! lock ([`agent`]); `install` ([`install`]); and a cf-style launcher provisioning a "VM"
//! over `sh` and over `ssh` ([`launcher`]).

// Real Secret Service and sshd: these run on Linux only.
#![cfg(target_os = "linux")]

#[path = "../common/mod.rs"]
mod common;
#[path = "../kf/mod.rs"]
mod kf;

mod agent;
mod install;
mod launcher;
mod seed;

use std::path::PathBuf;
use std::process::Output;

use kf::{text, Home};

const TOKEN: &str = "sk-ant-oat01-CFAUTHsetupAAAAbbbbCCCCdddd-1111";
const TOKEN2: &str = "sk-ant-oat01-CFAUTHrerollEEEEffffGGGGhhhh-2222";
const FILETOK: &str = "sk-ant-oat01-CFAUTHfileIIIIjjjjKKKKllll-3333";
const ENVKEY: &str = "sk-ant-api03-CFAUTHenvMMMMnnnnOOOOpppp-4444";

/// How cfauth is invoked: through the link `install` made, or as a subcommand.
#[derive(Debug, Clone)]
enum Cfauth {
    Link(PathBuf),
    Sub,
}

impl Cfauth {
    /// Both ways, the link made by `keyferry cfauth install ~/bin`.
    fn both(h: &Home) -> [Self; 2] {
        [Self::Link(install_link(h)), Self::Sub]
    }

    fn run(&self, h: &Home, args: &[&str], stdin: Option<&str>, envs: &[(&str, &str)]) -> Output {
        let mut cmd = match self {
            Self::Link(p) => h.command(p),
            Self::Sub => {
                let mut c = h.kf();
                c.arg("cfauth");
                c
            }
        };
        cmd.args(args).envs(envs.iter().copied());
        common::run_with_timeout(&mut cmd, stdin.map(str::as_bytes), common::COMMAND_TIMEOUT)
    }
}

/// `keyferry cfauth install ~/bin` (once; later calls find the link in place).
fn install_link(h: &Home) -> PathBuf {
    let dir = h.path("bin");
    let out = h.run(&["cfauth", "install", dir.to_str().unwrap()], None, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    dir.join("cfauth")
}

/// Exactly this exit status, stdout and stderr.
#[track_caller]
fn expect(out: &Output, code: i32, stdout: &str, stderr: &str) {
    assert_eq!(
        (
            out.status.code(),
            text(&out.stdout).as_str(),
            text(&out.stderr).as_str()
        ),
        (Some(code), stdout, stderr)
    );
}

/// The keychain item cf reads: `service=cf-claude-token, account=$USER`.
fn keychain_item(h: &Home) -> String {
    let out = h.ss.secret_tool(
        &["lookup", "service", "cf-claude-token", "username", kf::USER],
        None,
    );
    text(&out.stdout).trim().to_owned()
}
