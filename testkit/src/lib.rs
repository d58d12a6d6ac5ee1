//! Shared fixtures for Keyferry's integration tests, the tray's end-to-end tests and the
//! benchmark, built from real parts and torn down with the test:
//!
//! - [`process`]: bounded runs, process groups, children that die with the test, [`Proc`];
//! - [`wait`]: polls with an overall deadline that fail naming what they waited for;
//! - [`env`]: required binaries (naming their Debian packages), [`require_root`], unique names;
//! - [`bus`]: [`PrivateBus`], a `dbus-daemon` with no service activation;
//! - [`keyring`]: [`SecretServiceFixture`], a real `gnome-keyring-daemon` on a private bus;
//! - [`notifications`] (Linux): [`NotificationServer`], a stand-in desktop notification
//!   service;
//! - [`docker`] (Linux): [`docker::Docker`], a private Docker engine with its own bridge;
//! - [`bench_upstream`]: the gateway benchmark's fast upstream (no recording);
//! - [`podman`] (Linux): [`podman::Podman`], a Podman store of the test's own;
//! - [`fake_api`]: [`FakeApi`] and [`fake_api::Upstream`], the one loopback stand-in for
//!   the Anthropic API (scripted answers, plain http or TLS with a test CA);
//! - [`fake_oauth`]: [`FakeOauth`], a loopback stand-in for Anthropic's OAuth token and usage
//!   endpoints (plain http, or TLS with a test CA);
//! - [`codex`]: the real Codex CLI as a party: its `auth.lock` held as it holds it
//!   ([`codex::AuthLock`]) and `codex exec` on a login against a TLS [`FakeApi`].
//!
//! Needs the Debian packages `dbus`, `gnome-keyring` and `libsecret-tools` (and `keyutils`
//! for [`keyctl`]).

pub mod fake_security;
use std::time::Duration;

pub mod bench_upstream;
pub mod bus;
pub mod codex;
#[cfg(target_os = "linux")]
pub mod docker;
pub mod env;
pub mod fake_api;
pub mod fake_oauth;
pub mod keyring;
pub mod logins;
#[cfg(target_os = "linux")]
pub mod notifications;
#[cfg(target_os = "linux")]
pub mod podman;
pub mod process;
pub mod wait;

pub use bus::{plain_launcher, Launcher, PrivateBus};
pub use env::{is_root, require, require_root, unique_name, which};
pub use fake_api::FakeApi;
pub use fake_oauth::FakeOauth;
pub use keyring::{keyctl, require_binaries, SecretServiceFixture, DEBIAN_PACKAGES, SECRETS_NAME};
#[cfg(target_os = "linux")]
pub use notifications::{Notification, NotificationServer};
pub use process::{
    group_alive, isolate, pid_alive, read_lossy, run_bounded, run_with_timeout, signal_group,
    signal_pid, Proc,
};
pub use wait::{wait_for, wait_some, wait_until, Deadline};

/// How long a daemon gets to come up before a fixture gives up.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a helper command (`secret-tool`, `dbus-send`, `keyctl`) may run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
