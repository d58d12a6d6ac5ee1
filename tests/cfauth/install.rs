//! `keyferry cfauth install [DIR]`: one link to the running executable, never replacing
//! someone else's file, and a link that works as `cfauth`.

use std::os::unix::fs::PermissionsExt;

use crate::kf::Home;
use crate::{expect, Cfauth, TOKEN};

#[test]
fn install_links_cfauth_once_and_refuses_to_replace_other_files() {
    let h = Home::new();
    let exe = env!("CARGO_BIN_EXE_keyferry");
    // Default: ~/.local/bin, created on demand; a PATH without it gets a note.
    let out = h.run(&["cfauth", "install"], None, &[]);
    let link = h.path(".local/bin/cfauth");
    expect(
        &out,
        0,
        &format!("cfauth: linked {} -> {exe}\n", link.display()),
        &format!(
            "cfauth: note: {} is not on your PATH; add it so `cf` finds cfauth\n",
            h.path(".local/bin").display()
        ),
    );
    assert_eq!(std::fs::read_link(&link).unwrap().to_str(), Some(exe));
    // Again: nothing to do, and the link is untouched.
    let path = format!("{}:/usr/bin:/bin", h.path(".local/bin").display());
    let out = h.run(&["cfauth", "install"], None, &[("PATH", &path)]);
    expect(
        &out,
        0,
        &format!(
            "cfauth: {} already links to {exe}; nothing changed\n",
            link.display()
        ),
        "",
    );
    // The link works as cfauth, also found on PATH by name.
    let cf = Cfauth::Link(link.clone());
    let out = cf.run(&h, &["setup"], Some(TOKEN), &[]);
    expect(
        &out,
        0,
        "cf auth: token stored in keychain:cf-claude-token\n",
        "",
    );
    let mut by_name = h.command("cfauth");
    by_name.arg("status").env("PATH", &path);
    let out = crate::common::run_with_timeout(&mut by_name, None, crate::common::COMMAND_TIMEOUT);
    expect(&out, 0, "cf auth: source=keychain:cf-claude-token\n", "");
    // Someone else's script, a link elsewhere, a directory: refused and left alone.
    let theirs = h.write("opt/cfauth", "#!/bin/sh\necho theirs\n", 0o755);
    let other = h.write("elsewhere/keyferry", "#!/bin/sh\n", 0o755);
    std::fs::create_dir_all(h.path("links")).unwrap();
    std::os::unix::fs::symlink(&other, h.path("links/cfauth")).unwrap();
    std::fs::create_dir_all(h.path("dirs/cfauth")).unwrap();
    for dir in ["opt", "links", "dirs"] {
        let d = h.path(dir);
        let out = h.run(&["cfauth", "install", d.to_str().unwrap()], None, &[]);
        expect(
            &out,
            1,
            "",
            &format!(
                "cfauth: {}/cfauth exists and is not a link to {exe}; remove it or choose another directory (keyferry cfauth install DIR)\n",
                d.display()
            ),
        );
    }
    assert_eq!(
        std::fs::read_to_string(&theirs).unwrap(),
        "#!/bin/sh\necho theirs\n"
    );
    assert_eq!(
        std::fs::metadata(&theirs).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(std::fs::read_link(h.path("links/cfauth")).unwrap(), other);
    assert!(h.path("dirs/cfauth").is_dir());
}
