//! `keyferry --require-agent get` against `secret-tool lookup`, alternating, spawn included.

use super::*;

pub struct CliRow {
    pub label: String,
    pub times_ns: Lat,
}

pub fn cli_compare(
    bin: &Path,
    b: &AgentSetup,
    ss_home: &Path,
    token: &str,
    runs: usize,
    watchdog: &Watchdog,
) -> Vec<CliRow> {
    let kf = |extra: &[&str]| {
        let mut cmd = Command::new(bin);
        isolated_env(&mut cmd, &b.home, b.bus.as_deref());
        cmd.arg("--config")
            .arg(&b.config)
            .arg("--socket")
            .arg(&b.socket)
            .args(extra)
            .args(["get", "claude"]);
        cmd
    };
    let st = || {
        let mut cmd = Command::new("secret-tool");
        isolated_env(&mut cmd, ss_home, b.bus.as_deref());
        cmd.args(["lookup", "service", SS_SERVICE, "username", SS_USER]);
        cmd
    };
    let truth = || Command::new("true");
    type Make<'a> = Box<dyn Fn() -> Command + 'a>;
    let commands: Vec<(&str, Make<'_>, bool)> = vec![
        (
            "keyferry --require-agent get (via agent)",
            Box::new(|| kf(&["--require-agent"])),
            true,
        ),
        ("secret-tool lookup (Secret Service)", Box::new(st), true),
        (
            "keyferry --no-agent get (direct Secret Service, info)",
            Box::new(|| kf(&["--no-agent"])),
            true,
        ),
        ("/bin/true (spawn floor, info)", Box::new(truth), false),
    ];
    let mut samples: Vec<Vec<u64>> = vec![Vec::with_capacity(runs); commands.len()];
    let warm = 5;
    for i in 0..runs + warm {
        for (k, (label, make, check)) in commands.iter().enumerate() {
            let (t, out) = watchdog.run(&mut make());
            if *check {
                let got = String::from_utf8_lossy(&out.stdout);
                assert!(
                    out.status.success() && got.trim_end() == token,
                    "{label}: unexpected result (status {}, stdout {} bytes, stderr {})",
                    out.status,
                    got.len(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            if i >= warm {
                samples[k].push(t.as_nanos() as u64);
            }
        }
    }
    commands
        .iter()
        .zip(samples)
        .map(|((label, _, _), s)| CliRow {
            label: (*label).to_owned(),
            times_ns: Lat::new(s),
        })
        .collect()
}
