//! A stand-in desktop notification service: owns `org.freedesktop.Notifications` on a
//! private bus and records every `Notify(summary, body)` it receives.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dbus::blocking::Connection;
use dbus::channel::{Channel, MatchingReceiver};
use dbus::message::MatchRule;

pub struct NotificationServer {
    pub received: Arc<Mutex<Vec<(String, String)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NotificationServer {
    pub fn start(address: &str) -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (rec, st, addr) = (Arc::clone(&received), Arc::clone(&stop), address.to_owned());
        let thread = std::thread::spawn(move || {
            let mut ch = Channel::open_private(&addr).expect("open the private bus");
            ch.register().expect("register on the bus");
            let conn: Connection = ch.into();
            conn.request_name("org.freedesktop.Notifications", false, true, false)
                .expect("own org.freedesktop.Notifications");
            conn.start_receive(
                MatchRule::new_method_call(),
                Box::new(move |msg, c| {
                    if msg.member().as_deref() == Some("Notify") {
                        let mut it = msg.iter_init();
                        let _app: Option<String> = it.read().ok();
                        let _id: Option<u32> = it.read().ok();
                        let _icon: Option<String> = it.read().ok();
                        let summary: String = it.read().unwrap_or_default();
                        let body: String = it.read().unwrap_or_default();
                        rec.lock().unwrap().push((summary, body));
                        let _ = dbus::channel::Sender::send(c, msg.method_return().append1(1u32));
                    } else {
                        let _ = dbus::channel::Sender::send(c, msg.method_return());
                    }
                    true
                }),
            );
            ready_tx.send(()).unwrap();
            while !st.load(Ordering::SeqCst) {
                let _ = conn.process(Duration::from_millis(50));
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("notification server up");
        Self {
            received,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits (bounded) for a notification whose summary or body contains every `needle`.
    pub fn wait_for(&self, needles: &[&str], within: Duration) -> Option<(String, String)> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let found = self
                .received
                .lock()
                .unwrap()
                .iter()
                .find(|(s, b)| {
                    let all = format!("{s}\n{b}");
                    needles.iter().all(|n| all.contains(n))
                })
                .cloned();
            if found.is_some() {
                return found;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for NotificationServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
