//! Debian's nginx as the equivalent header-rewriting reverse proxy: a temporary config,
//! run in the foreground on loopback, stopped (process group) on drop.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Nginx {
    child: Child,
    pub url: String,
    /// Under a wrapper: nginx's own pid file, so only nginx is asked to stop (the wrapper,
    /// the group's leader, then writes its report).
    pid_file: Option<std::path::PathBuf>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Nginx {
    /// `None` when nginx is not installed (`apt-get install nginx-light`).
    pub fn start(dir: &Path, upstream: SocketAddr, token: &str) -> Option<Self> {
        Self::start_under(dir, upstream, token, &[])
    }

    /// As [`Nginx::start`], under `wrap` (profile mode): then one process, no master, so
    /// the wrapper (valgrind, perf stat) sees the worker itself.
    pub fn start_under(
        dir: &Path,
        upstream: SocketAddr,
        token: &str,
        wrap: &[String],
    ) -> Option<Self> {
        let bin = testkit::which("nginx")
            .or_else(|| Some("/usr/sbin/nginx".into()))
            .filter(|p| p.exists())?;
        let port = free_port();
        let d = dir.display();
        let user = if keyferry::paths::current_uid() == 0 {
            "user root;"
        } else {
            ""
        };
        let processes = if wrap.is_empty() {
            "worker_processes 2;"
        } else {
            "master_process off; worker_processes 1;"
        };
        let conf = format!(
            "{user}
daemon off;
{processes}
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  upstream api {{ server {upstream}; keepalive 1024; keepalive_requests 1000000; }}
  server {{
    listen 127.0.0.1:{port};
    client_max_body_size 32m;
    location / {{
      proxy_pass http://api;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header Host {upstream};
      proxy_set_header Authorization \"Bearer {token}\";
      proxy_set_header x-api-key \"\";
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 600s;
    }}
  }}
}}
"
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let mut cmd = match wrap.split_first() {
            Some((w, args)) => {
                let mut c = Command::new(w);
                c.args(args).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.args([
            "-p",
            &d.to_string(),
            "-e",
            &format!("{d}/error.log"),
            "-c",
            &format!("{d}/nginx.conf"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
        testkit::isolate(&mut cmd);
        let child = cmd.spawn().ok()?;
        let deadline = Instant::now() + Duration::from_secs(if wrap.is_empty() { 10 } else { 60 });
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not start: see {d}/error.log"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            pid_file: (!wrap.is_empty()).then(|| dir.join("nginx.pid")),
        })
    }

    /// Every process of the group (master and workers).
    pub fn pids(&self) -> Vec<u32> {
        let pgid = self.child.id();
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let fields: Vec<&str> = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            if fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid) {
                out.push(pid);
            }
        }
        out
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let own = self
            .pid_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok()?.trim().parse::<u32>().ok());
        match own {
            Some(pid) => testkit::signal_pid(pid, libc::SIGQUIT),
            None => testkit::signal_group(self.child.id(), libc::SIGQUIT),
        }
        let deadline = Instant::now() + Duration::from_secs(if own.is_some() { 60 } else { 5 });
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        testkit::signal_group(self.child.id(), libc::SIGKILL);
        let _ = self.child.wait();
    }
}
