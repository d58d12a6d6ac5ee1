//! Where the gateway listens: TCP (loopback by default; an unspecified address only when
//! explicitly allowed) or a Unix socket, 0600 in a 0700 directory.

use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tokio::net::{TcpListener, UnixListener};

/// Where to listen, as written in `[gateway] listen`: `127.0.0.1:7778`, `[::1]:7778`,
/// `172.17.0.1:7778`, or `unix:/path/to/gateway.sock`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenSpec {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl FromStr for ListenSpec {
    type Err = ListenError;

    fn from_str(s: &str) -> Result<Self, ListenError> {
        if let Some(path) = s.strip_prefix("unix:") {
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(ListenError::Spec {
                    spec: s.to_owned(),
                    reason: "a Unix socket path must be absolute",
                });
            }
            return Ok(Self::Unix(path));
        }
        s.parse().map(Self::Tcp).map_err(|_| ListenError::Spec {
            spec: s.to_owned(),
            reason: "expected IP:PORT (e.g. 127.0.0.1:7778) or unix:/absolute/path",
        })
    }
}

impl std::fmt::Display for ListenSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(a) => write!(f, "{a}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A listener cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("gateway listen address {spec:?}: {reason}")]
    Spec { spec: String, reason: &'static str },
    #[error(
        "gateway listen address {0} is unspecified (every interface): bind a loopback or bridge \
         address, or set `allow_unspecified = true` if the exposure is intended"
    )]
    Unspecified(SocketAddr),
    #[error("gateway listen {spec}: {source}")]
    Bind {
        spec: String,
        #[source]
        source: std::io::Error,
    },
    #[error("gateway socket directory {}: must be a directory only its owner can enter (0700)", .0.display())]
    OpenDir(PathBuf),
    #[error("gateway socket {}: something other than a socket is in the way", .0.display())]
    NotASocket(PathBuf),
}

/// A bound listener.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix {
        listener: UnixListener,
        path: PathBuf,
    },
}

impl Listener {
    /// Binds `spec`. Needs a tokio runtime.
    ///
    /// # Errors
    /// An unspecified address without `allow_unspecified`, a bad socket directory, or a
    /// failed bind.
    pub async fn bind(spec: &ListenSpec, allow_unspecified: bool) -> Result<Self, ListenError> {
        let bind_err = |source| ListenError::Bind {
            spec: spec.to_string(),
            source,
        };
        match spec {
            ListenSpec::Tcp(addr) => {
                if addr.ip().is_unspecified() && !allow_unspecified {
                    return Err(ListenError::Unspecified(*addr));
                }
                Ok(Self::Tcp(TcpListener::bind(addr).await.map_err(bind_err)?))
            }
            ListenSpec::Unix(path) => {
                let dir = path
                    .parent()
                    .ok_or_else(|| ListenError::OpenDir(path.clone()))?;
                crate::atomic::private_dir(dir).map_err(|e| bind_err(e.source))?;
                let meta = std::fs::symlink_metadata(dir).map_err(bind_err)?;
                if !meta.is_dir()
                    || meta.permissions().mode() & 0o077 != 0
                    || meta.uid() != crate::paths::current_uid()
                {
                    return Err(ListenError::OpenDir(dir.to_owned()));
                }
                match std::fs::symlink_metadata(path) {
                    Ok(m) if m.file_type().is_socket() => {
                        std::fs::remove_file(path).map_err(bind_err)?
                    }
                    Ok(_) => return Err(ListenError::NotASocket(path.clone())),
                    Err(_) => {}
                }
                let listener = UnixListener::bind(path).map_err(bind_err)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .map_err(bind_err)?;
                Ok(Self::Unix {
                    listener,
                    path: path.clone(),
                })
            }
        }
    }

    /// Where it listens (the real port when bound to port 0).
    #[must_use]
    pub fn spec(&self) -> ListenSpec {
        match self {
            Self::Tcp(l) => l
                .local_addr()
                .map_or(ListenSpec::Unix(PathBuf::new()), ListenSpec::Tcp),
            Self::Unix { path, .. } => ListenSpec::Unix(path.clone()),
        }
    }

    /// The `ANTHROPIC_BASE_URL` a client on this listener uses (a Unix socket needs a shim
    /// or `ANTHROPIC_UNIX_SOCKET`; the URL is then just its loopback face).
    #[must_use]
    pub fn base_url(&self) -> String {
        match self.spec() {
            ListenSpec::Tcp(a) => format!("http://{a}"),
            ListenSpec::Unix(_) => "http://localhost".to_owned(),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Self::Unix { path, .. } = self {
            let _ = std::fs::remove_file(path.as_path());
        }
    }
}

/// The Unix socket's default place: next to the agent's socket.
#[must_use]
pub fn default_socket(agent_socket_dir: &Path) -> PathBuf {
    agent_socket_dir.join("gateway.sock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_unspecified_is_refused() {
        assert_eq!(
            "127.0.0.1:7778".parse::<ListenSpec>().unwrap(),
            ListenSpec::Tcp("127.0.0.1:7778".parse().unwrap())
        );
        assert_eq!(
            "unix:/run/k/gw.sock".parse::<ListenSpec>().unwrap(),
            ListenSpec::Unix("/run/k/gw.sock".into())
        );
        assert!("unix:rel.sock".parse::<ListenSpec>().is_err());
        assert!("localhost".parse::<ListenSpec>().is_err());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for any in ["0.0.0.0:0", "[::]:0"] {
            let e = rt
                .block_on(Listener::bind(&any.parse().unwrap(), false))
                .unwrap_err();
            assert!(matches!(e, ListenError::Unspecified(_)), "{e}");
        }
        let ok = rt
            .block_on(Listener::bind(&"0.0.0.0:0".parse().unwrap(), true))
            .unwrap();
        assert!(matches!(ok.spec(), ListenSpec::Tcp(a) if a.port() != 0));
    }

    #[test]
    fn unix_socket_is_private_and_never_replaces_a_file() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("run/gateway.sock");
        let l = rt
            .block_on(Listener::bind(&ListenSpec::Unix(sock.clone()), false))
            .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&sock), 0o600);
        assert_eq!(mode(sock.parent().unwrap()), 0o700);
        drop(l);
        assert!(!sock.exists());

        std::fs::write(&sock, "precious").unwrap();
        let e = rt
            .block_on(Listener::bind(&ListenSpec::Unix(sock.clone()), false))
            .unwrap_err();
        assert!(matches!(e, ListenError::NotASocket(_)), "{e}");
        assert_eq!(std::fs::read_to_string(&sock).unwrap(), "precious");

        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = rt
            .block_on(Listener::bind(
                &ListenSpec::Unix(open.join("g.sock")),
                false,
            ))
            .unwrap_err();
        assert!(matches!(e, ListenError::OpenDir(_)), "{e}");
    }
}
