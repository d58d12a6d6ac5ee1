//! A real Docker engine of the test's own (Debian's `docker.io`): a private `dockerd` with its
//! own data root, exec root and socket, no default bridge and no iptables, so it touches
//! nothing of a Docker the machine already runs. Its containers reach only the host's
//! address on the test's own bridge. There is no registry: the image is `docker import`ed
//! from an empty folder, and `/usr` comes from the host read-only (node, sh, curl, socat).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::process::{run_bounded, run_with_timeout, Proc};
use crate::{require, require_root, wait_until, STARTUP_TIMEOUT};

/// The image every test container runs: a root of empty folders, `/usr` from the host.
pub const IMAGE: &str = "keyferry-test:1";

/// How long one `docker` command may run (a container that runs the real CLI included).
pub const DOCKER_TIMEOUT: Duration = Duration::from_secs(120);

/// A private Docker engine, stopped (containers, bridge and all) on drop.
pub struct Docker {
    dir: tempfile::TempDir,
    daemon: Proc,
    host: String,
    subnet: u8,
    claim: PathBuf,
    bridge: Option<String>,
}

impl Docker {
    /// Starts `dockerd` and imports [`IMAGE`]. Its bridge network is made only by
    /// [`Docker::bridge`], so a test can start the agent before the bridge exists (as an
    /// agent started at login always is).
    ///
    /// # Panics
    /// Not root, `dockerd` missing, or the engine not up within its deadline.
    #[must_use]
    pub fn start() -> Self {
        require_root("a Docker engine");
        require(&[("dockerd", "docker.io"), ("docker", "docker.io")]);
        let dir = tempfile::Builder::new()
            .prefix("kf-docker-")
            .tempdir()
            .expect("a temp dir for dockerd");
        let (subnet, claim) = claim_subnet();
        let host = format!("unix://{}", dir.path().join("docker.sock").display());
        let mut cmd = Command::new("dockerd");
        // A clean environment: dockerd and runc keep state under XDG_RUNTIME_DIR when it is
        // set, and a test's runtime dir vanishes with the test.
        cmd.env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("dockerd.pid"))
            .args(["-H", &host])
            .args([
                "--storage-driver=vfs",
                "--iptables=false",
                "--ip-masq=false",
            ])
            .args(["--bridge=none", "--log-level=warn"])
            .arg(format!("--host-gateway-ip={}", gateway_of(subnet)));
        let daemon = Proc::spawn("dockerd", cmd, dir.path().join("dockerd.log"), None);
        let mut docker = Self {
            dir,
            daemon,
            host,
            subnet,
            claim,
            bridge: None,
        };
        let probe = docker.host.clone();
        wait_until(STARTUP_TIMEOUT * 6, "dockerd answering", || {
            let mut c = Command::new("docker");
            c.env_clear().env("DOCKER_HOST", &probe).arg("version");
            run_bounded(&mut c, None, Duration::from_secs(10)).is_ok_and(|o| o.status.success())
        });
        docker.daemon.check_alive();
        docker.import_image();
        docker
    }

    /// `docker` against this engine, with a clean environment.
    #[must_use]
    pub fn cmd(&self) -> Command {
        let mut c = Command::new("docker");
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DOCKER_HOST", &self.host);
        c
    }

    /// `DOCKER_HOST` for this engine (for docker-compose).
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Runs `docker ARGS`, bounded; its output whatever the exit status.
    #[must_use]
    pub fn run(&self, args: &[&str]) -> Output {
        let mut c = self.cmd();
        c.args(args);
        run_with_timeout(&mut c, None, DOCKER_TIMEOUT)
    }

    /// The host's address on the test bridge: what `host.docker.internal:host-gateway`
    /// resolves to in every container. Not on any interface until [`Docker::bridge`].
    #[must_use]
    pub fn host_address(&self) -> Ipv4Addr {
        gateway_of(self.subnet)
    }

    /// Makes the bridge network (its address appears on the host only now) and returns the
    /// network's name for `--network`.
    ///
    /// # Panics
    /// `docker network create` fails.
    pub fn bridge(&mut self) -> String {
        let name = format!("kfnet{}", self.subnet);
        if self.bridge.is_none() {
            let subnet = format!("--subnet=10.215.{}.0/24", self.subnet);
            let gateway = format!("--gateway={}", self.host_address());
            let ifname = format!("com.docker.network.bridge.name=kfbr{}", self.subnet);
            let out = self.run(&["network", "create", &subnet, &gateway, "-o", &ifname, &name]);
            assert!(
                out.status.success(),
                "docker network create: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            self.bridge = Some(name.clone());
        }
        name
    }

    /// Pastes a printed `keyferry grant --recipe docker` into `sh -s` (stdin, as into a
    /// terminal: the `export` lines put the placeholder in no argv, which `sh -c SCRIPT`
    /// would), only its `IMAGE claude` filled in: [`IMAGE`] on network `net` with the
    /// host's `/usr`, `/etc/ssl` and the npm CLIs under `npm` read-only, running
    /// `claude -p ping`, then `env` after a `--env--` line. Returns all it printed and the
    /// container's environment.
    ///
    /// # Panics
    /// The recipe has no `IMAGE claude`, or the shell fails (with dockerd's log).
    #[must_use]
    pub fn paste_claude_recipe(&self, recipe: &str, net: &str, npm: &Path) -> (String, String) {
        assert!(recipe.contains("IMAGE claude"), "{recipe}");
        let filled = format!(
            "--network {net} -v /usr:/usr:ro -v /etc/ssl:/etc/ssl:ro -v {}:/opt/npm:ro \
             -e CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 -e DISABLE_AUTOUPDATER=1 \
             {IMAGE} sh -c '/opt/npm/node_modules/.bin/claude -p ping; echo --env--; env'",
            npm.display(),
        );
        let script = recipe.replace("IMAGE claude", &filled);
        let mut sh = Command::new("sh");
        sh.arg("-s")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DOCKER_HOST", &self.host);
        let out = run_with_timeout(&mut sh, Some(script.as_bytes()), DOCKER_TIMEOUT);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{all}\ndockerd: {}", self.log_text());
        let env = all
            .split("--env--")
            .nth(1)
            .unwrap_or_else(|| panic!("no --env-- line: {all}"))
            .to_owned();
        (all, env)
    }

    /// The folder the engine's files live in (for a compose project next to it).
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn import_image(&self) {
        import_image(self.cmd(), self.dir.path());
    }

    /// The daemon's log so far (for a failing test's message).
    #[must_use]
    pub fn log_text(&self) -> String {
        self.daemon.log_text()
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        let mut ps = self.cmd();
        ps.args(["ps", "-aq"]);
        if let Ok(out) = run_bounded(&mut ps, None, Duration::from_secs(20)) {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            if !ids.is_empty() {
                let mut rm = self.cmd();
                rm.args(["rm", "-f"]).args(&ids);
                let _ = run_bounded(&mut rm, None, Duration::from_secs(30));
            }
        }
        if let Some(net) = self.bridge.take() {
            let mut rm = self.cmd();
            rm.args(["network", "rm", &net]);
            let _ = run_bounded(&mut rm, None, Duration::from_secs(20));
        }
        self.daemon.stop(Duration::from_secs(20));
        // The bridge device outlives a daemon that was killed before removing it.
        let mut del = Command::new("ip");
        del.args(["link", "del", &format!("kfbr{}", self.subnet)]);
        let _ = run_bounded(&mut del, None, Duration::from_secs(10));
        unmount_under(self.dir.path());
        let _ = std::fs::remove_file(&self.claim);
    }
}

/// Imports the test image with `engine` (`docker` or `podman`, its global flags set),
/// building its tarball under `dir`.
pub(crate) fn import_image(mut engine: Command, dir: &Path) {
    let tar = image_tar(dir);
    engine.args(["import", tar.to_str().expect("utf-8 temp path"), IMAGE]);
    let out = run_with_timeout(&mut engine, None, DOCKER_TIMEOUT);
    assert!(
        out.status.success(),
        "{:?} import: {}",
        engine.get_program(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The test image as a tarball under `dir`: a root of empty folders (`/usr` comes from the
/// host at run time), for `docker import` and `podman import`.
fn image_tar(dir: &Path) -> PathBuf {
    let root = dir.join("image");
    for d in ["proc", "sys", "dev", "etc", "tmp", "root", "usr", "run"] {
        std::fs::create_dir_all(root.join(d)).expect("image folder");
    }
    for l in ["bin", "lib", "lib64", "sbin"] {
        std::os::unix::fs::symlink(format!("usr/{l}"), root.join(l)).expect("image link");
    }
    // Root's entry (tools look the uid up), and /etc/hosts before DNS as in any distro
    // image: glibc without nsswitch.conf asks DNS first, and this host's resolver is
    // unreachable from the bridge, so `host.docker.internal` took a DNS timeout.
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")
        .expect("image passwd");
    std::fs::write(root.join("etc/nsswitch.conf"), "hosts: files dns\n")
        .expect("image nsswitch.conf");
    let tar = root.with_extension("tar");
    let mut t = Command::new("tar");
    t.arg("-C").arg(&root).arg("-cf").arg(&tar).arg(".");
    let out = run_with_timeout(&mut t, None, Duration::from_secs(30));
    assert!(out.status.success(), "tar the image folder");
    tar
}

fn gateway_of(subnet: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 215, subnet, 1)
}

/// Claims a `10.215.N.0/24` that no interface uses and no other engine (of this or another
/// test process) holds: a claim is a file made with `O_EXCL` under the temp dir, naming its
/// process; a dead process's claim is taken over. The bridge itself appears only later, so
/// the interfaces alone cannot tell two engines apart.
fn claim_subnet() -> (u8, PathBuf) {
    let dir = std::env::temp_dir().join("keyferry-test-subnets");
    std::fs::create_dir_all(&dir).expect("the subnet claims folder");
    let mut c = Command::new("ip");
    c.args(["-4", "-o", "addr", "show"]);
    let used =
        String::from_utf8_lossy(&run_with_timeout(&mut c, None, Duration::from_secs(10)).stdout)
            .into_owned();
    for n in 20..=250u8 {
        if used.contains(&format!("10.215.{n}.")) {
            continue;
        }
        let claim = dir.join(n.to_string());
        let mine = std::process::id().to_string();
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&claim)
        {
            Ok(mut f) => {
                std::io::Write::write_all(&mut f, mine.as_bytes()).expect("write a claim");
                return (n, claim);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let owner = std::fs::read_to_string(&claim).unwrap_or_default();
                let dead = owner
                    .trim()
                    .parse::<u32>()
                    .is_ok_and(|pid| pid != std::process::id() && !crate::pid_alive(pid));
                if dead && std::fs::remove_file(&claim).is_ok() {
                    if let Ok(mut f) = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&claim)
                    {
                        std::io::Write::write_all(&mut f, mine.as_bytes()).expect("write a claim");
                        return (n, claim);
                    }
                }
            }
            Err(e) => panic!("claim {}: {e}", claim.display()),
        }
    }
    panic!("no free 10.215.N.0/24 (claims in {})", dir.display());
}

/// Unmounts whatever the engine left mounted under `dir` (netns files, shm), deepest first.
pub(crate) fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        let mut u = Command::new("umount");
        u.arg("-l").arg(&p);
        let _ = run_bounded(&mut u, None, Duration::from_secs(10));
    }
}
