//! A stand-in desktop notification service: owns `org.freedesktop.Notifications` on a
//! private bus and records every `Notify` it receives.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use dbus::blocking::Connection;
use dbus::channel::{Channel, MatchingReceiver, Sender};
use dbus::message::MatchRule;

/// The bus name the server owns.
pub const NOTIFICATIONS_NAME: &str = "org.freedesktop.Notifications";

/// One `Notify` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub app_name: String,
    pub summary: String,
    pub body: String,
}

impl Notification {
    /// Whether summary or body contains every one of `needles`.
    #[must_use]
    pub fn contains_all(&self, needles: &[&str]) -> bool {
        let all = format!("{}\n{}", self.summary, self.body);
        needles.iter().all(|n| all.contains(n))
    }
}

/// Owns `org.freedesktop.Notifications` on a bus and records every notification; stops
/// serving when dropped.
pub struct NotificationServer {
    received: Arc<Mutex<Vec<Notification>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NotificationServer {
    /// Connects to the bus at `address` and owns the name.
    ///
    /// # Panics
    /// The bus cannot be reached or the name cannot be owned within 10 s.
    #[must_use]
    pub fn start(address: &str) -> Self {
        let received: Arc<Mutex<Vec<Notification>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (rec, st, addr) = (Arc::clone(&received), Arc::clone(&stop), address.to_owned());
        let thread = thread::spawn(move || {
            let conn = match own_name(&addr) {
                Ok(conn) => conn,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let mut next_id = 0u32;
            conn.start_receive(
                MatchRule::new_method_call(),
                Box::new(move |msg, c| {
                    let member = msg.member().map(|m| m.to_string()).unwrap_or_default();
                    let reply = match member.as_str() {
                        "Notify" => {
                            let mut it = msg.iter_init();
                            let app_name: String = it.read().unwrap_or_default();
                            let _replaces: u32 = it.read().unwrap_or_default();
                            let _icon: String = it.read().unwrap_or_default();
                            let summary: String = it.read().unwrap_or_default();
                            let body: String = it.read().unwrap_or_default();
                            rec.lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .push(Notification {
                                    app_name,
                                    summary,
                                    body,
                                });
                            next_id += 1;
                            msg.method_return().append1(next_id)
                        }
                        "GetCapabilities" => msg.method_return().append1(vec!["body".to_owned()]),
                        "GetServerInformation" => msg
                            .method_return()
                            .append3("kf-test", "keyferry", "1")
                            .append1("1.2"),
                        _ => msg.method_return(),
                    };
                    let _ = c.send(reply);
                    true
                }),
            );
            let _ = ready_tx.send(Ok(()));
            while !st.load(Ordering::SeqCst) {
                let _ = conn.process(Duration::from_millis(50));
            }
        });
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("the notification server did not start: {e}"),
            Err(e) => panic!("the notification server did not start within 10 s: {e}"),
        }
        Self {
            received,
            stop,
            thread: Some(thread),
        }
    }

    /// Everything received so far.
    #[must_use]
    pub fn received(&self) -> Vec<Notification> {
        self.received
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The first notification `matches` accepts (bounded wait).
    ///
    /// # Errors
    /// None within `timeout`; lists what did arrive.
    pub fn wait(
        &self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&Notification) -> bool,
    ) -> Result<Notification, String> {
        crate::wait_for(what, timeout, || {
            let all = self.received();
            all.iter()
                .find(|n| matches(n))
                .cloned()
                .ok_or_else(|| format!("received {all:?}"))
        })
    }

    /// The first notification whose summary or body holds every one of `needles`.
    ///
    /// # Panics
    /// None arrived within `timeout` (the message lists what did).
    #[track_caller]
    #[must_use]
    pub fn expect(&self, needles: &[&str], timeout: Duration) -> Notification {
        self.wait(&format!("a notification with {needles:?}"), timeout, |n| {
            n.contains_all(needles)
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }
}

fn own_name(address: &str) -> Result<Connection, String> {
    let mut ch = Channel::open_private(address).map_err(|e| format!("open {address}: {e}"))?;
    ch.register()
        .map_err(|e| format!("register on {address}: {e}"))?;
    let conn: Connection = ch.into();
    conn.request_name(NOTIFICATIONS_NAME, false, true, false)
        .map_err(|e| format!("own {NOTIFICATIONS_NAME}: {e}"))?;
    Ok(conn)
}

impl Drop for NotificationServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
