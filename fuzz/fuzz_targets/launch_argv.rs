//! Launch argv inspection (`keyferry::launch::inspect_command`) for bwrap, docker, podman
//! and anything else. Invariants: no panic; every mount is read-only or read-write; a
//! mount's paths are arguments of the command (nothing is invented).
#![no_main]

use keyferry::launch::inspect_command;
use libfuzzer_sys::fuzz_target;

const PROGRAMS: [&str; 5] = ["bwrap", "docker", "podman", "/usr/bin/docker", "other"];

fuzz_target!(|data: &[u8]| {
    let Some((&p, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let mut argv = vec![PROGRAMS[usize::from(p) % PROGRAMS.len()].to_owned()];
    argv.extend(text.split('\0').map(str::to_owned));
    let (mounts, network) = inspect_command(&argv);
    assert!(!network.is_empty());
    assert!(mounts.len() < argv.len());
    for m in &mounts {
        assert!(m.mode == "read-only" || m.mode == "read-write", "{m:?}");
        for path in [&m.source, &m.target] {
            assert!(
                path.is_empty()
                    || path == "tmpfs"
                    || argv.iter().any(|a| a.contains(path.as_str())),
                "{path:?} is in no argument of {argv:?}"
            );
        }
    }
});
