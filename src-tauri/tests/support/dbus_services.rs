//! The desktop services a test owns on its private bus, and the calls a desktop makes:
//!
//! - [`Watcher`]: `org.kde.StatusNotifierWatcher` (what a panel provides). The app's tray
//!   (libayatana-appindicator) registers its StatusNotifierItem with it.
//! - [`get_layout`] / [`click`]: a panel reading the item's `com.canonical.dbusmenu` menu and
//!   clicking an entry.

use std::collections::HashMap;
use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use dbus::arg::{ArgType, Iter, PropMap, RefArg, Variant};
use dbus::blocking::stdintf::org_freedesktop_dbus::Properties;
use dbus::blocking::Connection;
use dbus::channel::{Channel, MatchingReceiver, Sender};
use dbus::message::MatchRule;
use dbus::strings::ErrorName;
use dbus::Message;

const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to the bus at `address` (not the host's session bus).
///
/// # Errors
/// The bus does not answer.
pub fn connect(address: &str) -> Result<Connection, String> {
    let mut ch = Channel::open_private(address).map_err(|e| format!("open {address}: {e}"))?;
    ch.register()
        .map_err(|e| format!("register on {address}: {e}"))?;
    Ok(ch.into())
}

/// `Ok` once `org.freedesktop.secrets` is owned and its `default` alias resolves.
///
/// # Errors
/// Not ready yet (why).
pub fn secret_service_ready(conn: &Connection) -> Result<(), String> {
    if !has_owner(conn, "org.freedesktop.secrets") {
        return Err("org.freedesktop.secrets has no owner".into());
    }
    let service = conn.with_proxy(
        "org.freedesktop.secrets",
        "/org/freedesktop/secrets",
        CALL_TIMEOUT,
    );
    let (alias,): (dbus::Path<'static>,) = service
        .method_call("org.freedesktop.Secret.Service", "ReadAlias", ("default",))
        .map_err(|e| format!("ReadAlias(default): {e}"))?;
    if &*alias == "/" {
        Err("the default collection does not exist yet".into())
    } else {
        Ok(())
    }
}

/// `NameHasOwner(name)`.
#[must_use]
pub fn has_owner(conn: &Connection, name: &str) -> bool {
    let bus = conn.with_proxy(
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        CALL_TIMEOUT,
    );
    bus.method_call("org.freedesktop.DBus", "NameHasOwner", (name,))
        .is_ok_and(|(owned,): (bool,)| owned)
}

fn error(msg: &Message, name: &str, text: &str) -> Message {
    let text = CString::new(text).unwrap_or_default();
    msg.error(&ErrorName::from(name), &text)
}

/// Serves method calls on `conn` from a thread until dropped; `handle` answers each call
/// with the reply and any signals to send after it (`None`: "unknown method").
struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(
        address: &str,
        name: &'static str,
        mut handle: impl FnMut(&Message) -> Option<Vec<Message>> + Send + 'static,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let (address, st) = (address.to_owned(), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            let conn = match connect(&address) {
                Ok(c) => c,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            conn.start_receive(
                MatchRule::new_method_call(),
                Box::new(move |msg, c| {
                    let out = handle(&msg).unwrap_or_else(|| {
                        vec![error(
                            &msg,
                            "org.freedesktop.DBus.Error.UnknownMethod",
                            &format!(
                                "{:?}.{:?} is not served here",
                                msg.interface(),
                                msg.member()
                            ),
                        )]
                    });
                    for m in out {
                        let _ = c.send(m);
                    }
                    true
                }),
            );
            match conn.request_name(name, false, true, true) {
                Ok(
                    dbus::blocking::stdintf::org_freedesktop_dbus::RequestNameReply::PrimaryOwner,
                ) => {
                    let _ = ready_tx.send(Ok(()));
                }
                other => {
                    let _ = ready_tx.send(Err(format!("cannot own {name}: {other:?}")));
                    return;
                }
            }
            while !st.load(Ordering::SeqCst) {
                let _ = conn.process(Duration::from_millis(50));
            }
        });
        match ready_rx.recv_timeout(CALL_TIMEOUT) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => panic!("the {name} stand-in did not come up within {CALL_TIMEOUT:?}"),
        }
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn props_reply(msg: &Message, props: &dyn Fn() -> PropMap) -> Message {
    let member = msg.member().map(|m| m.to_string()).unwrap_or_default();
    match member.as_str() {
        "GetAll" => msg.method_return().append1(props()),
        "Get" => {
            let Ok((_iface, prop)) = msg.read2::<String, String>() else {
                return error(msg, "org.freedesktop.DBus.Error.InvalidArgs", "Get(ss)");
            };
            match props().remove(&prop) {
                Some(v) => msg.method_return().append1(v),
                None => error(
                    msg,
                    "org.freedesktop.DBus.Error.UnknownProperty",
                    &format!("no property {prop}"),
                ),
            }
        }
        _ => error(
            msg,
            "org.freedesktop.DBus.Error.PropertyReadOnly",
            "read-only",
        ),
    }
}

// ---- StatusNotifierWatcher ---------------------------------------------------------------

/// A StatusNotifierItem that registered with the [`Watcher`].
#[derive(Debug, Clone)]
pub struct Registration {
    /// The bus name to call the item on (the registering connection's unique name when it
    /// passed an object path, as libayatana-appindicator does).
    pub service: String,
    pub path: String,
    pub at: Instant,
}

/// Owns `org.kde.StatusNotifierWatcher` on the bus and records registrations. It claims a
/// host is registered (`IsStatusNotifierHostRegistered = true`), as a panel's watcher would,
/// so the app's tray exports its item instead of falling back to an XEmbed icon.
pub struct Watcher {
    items: Arc<Mutex<Vec<Registration>>>,
    calls: Arc<Mutex<Vec<String>>>,
    _server: Server,
}

const WATCHER: &str = "org.kde.StatusNotifierWatcher";

impl Watcher {
    /// # Panics
    /// The name cannot be owned (another watcher runs on this bus).
    #[must_use]
    pub fn start(address: &str) -> Self {
        let items: Arc<Mutex<Vec<Registration>>> = Arc::default();
        let calls: Arc<Mutex<Vec<String>>> = Arc::default();
        let (it, cl) = (Arc::clone(&items), Arc::clone(&calls));
        let props = move |items: &Arc<Mutex<Vec<Registration>>>| {
            let registered: Vec<String> = items
                .lock()
                .unwrap()
                .iter()
                .map(|r| format!("{}{}", r.service, r.path))
                .collect();
            let mut p: PropMap = HashMap::new();
            p.insert(
                "IsStatusNotifierHostRegistered".into(),
                Variant(Box::new(true)),
            );
            p.insert("ProtocolVersion".into(), Variant(Box::new(0i32)));
            p.insert(
                "RegisteredStatusNotifierItems".into(),
                Variant(Box::new(registered)),
            );
            p
        };
        let server = Server::start(address, WATCHER, move |msg| {
            let iface = msg.interface().map(|i| i.to_string()).unwrap_or_default();
            let member = msg.member().map(|m| m.to_string()).unwrap_or_default();
            cl.lock().unwrap().push(format!(
                "{iface}.{member} from {}",
                msg.sender().map(|s| s.to_string()).unwrap_or_default()
            ));
            match (iface.as_str(), member.as_str()) {
                (WATCHER | "", "RegisterStatusNotifierItem") => {
                    let service: String = msg.read1().unwrap_or_default();
                    let sender = msg.sender().map(|s| s.to_string()).unwrap_or_default();
                    let (service, path) = if service.starts_with('/') {
                        (sender, service)
                    } else {
                        (service, "/StatusNotifierItem".to_owned())
                    };
                    let full = format!("{service}{path}");
                    it.lock().unwrap().push(Registration {
                        service,
                        path,
                        at: Instant::now(),
                    });
                    // Announced as a real watcher does.
                    let signal = Message::new_signal(
                        "/StatusNotifierWatcher",
                        WATCHER,
                        "StatusNotifierItemRegistered",
                    )
                    .map(|m| m.append1(full));
                    Some(
                        [Ok(msg.method_return()), signal]
                            .into_iter()
                            .flatten()
                            .collect(),
                    )
                }
                (WATCHER | "", "RegisterStatusNotifierHost") => Some(vec![msg.method_return()]),
                ("org.freedesktop.DBus.Properties", _) => {
                    Some(vec![props_reply(msg, &|| props(&it))])
                }
                ("org.freedesktop.DBus.Introspectable", "Introspect") => {
                    Some(vec![msg.method_return().append1(WATCHER_XML)])
                }
                _ => None,
            }
        });
        Self {
            items,
            calls,
            _server: server,
        }
    }

    /// The first item that registers (bounded wait).
    ///
    /// # Errors
    /// None registered within `timeout`; lists the calls the watcher did get.
    pub fn wait_item(&self, timeout: Duration) -> Result<Registration, String> {
        super::wait_for("a StatusNotifierItem to register", timeout, || {
            self.items
                .lock()
                .unwrap()
                .first()
                .cloned()
                .ok_or_else(|| format!("calls to the watcher: {:?}", self.calls.lock().unwrap()))
        })
    }
}

const WATCHER_XML: &str = r#"<node><interface name="org.kde.StatusNotifierWatcher">
<method name="RegisterStatusNotifierItem"><arg name="service" type="s" direction="in"/></method>
<method name="RegisterStatusNotifierHost"><arg name="service" type="s" direction="in"/></method>
<property name="RegisteredStatusNotifierItems" type="as" access="read"/>
<property name="IsStatusNotifierHostRegistered" type="b" access="read"/>
<property name="ProtocolVersion" type="i" access="read"/>
<signal name="StatusNotifierItemRegistered"><arg type="s"/></signal>
<signal name="StatusNotifierItemUnregistered"><arg type="s"/></signal>
<signal name="StatusNotifierHostRegistered"/>
</interface></node>"#;

// ---- dbusmenu (the panel's side) ---------------------------------------------------------

/// One entry of a `com.canonical.dbusmenu` layout.
#[derive(Debug, Clone, Default)]
pub struct MenuEntry {
    pub id: i32,
    pub label: String,
    pub enabled: bool,
    pub visible: bool,
    /// `"separator"` for separators, else empty.
    pub kind: String,
    /// `Some(0|1)` for check items.
    pub toggle_state: Option<i64>,
    pub children: Vec<MenuEntry>,
}

impl MenuEntry {
    /// Every entry below this one, depth first.
    #[must_use]
    pub fn flatten(&self) -> Vec<&MenuEntry> {
        let mut out = Vec::new();
        for c in &self.children {
            out.push(c);
            out.extend(c.flatten());
        }
        out
    }

    /// The first entry whose label (mnemonic underscores removed) is `label`.
    #[must_use]
    pub fn find(&self, label: &str) -> Option<&MenuEntry> {
        self.flatten().into_iter().find(|e| e.text() == label)
    }

    /// The label as shown: `_` mnemonics removed, `__` kept as `_`.
    #[must_use]
    pub fn text(&self) -> String {
        self.label
            .replace("__", "\u{0}")
            .replace('_', "")
            .replace('\u{0}', "_")
    }

    /// The visible labels, one per line (for failure messages).
    #[must_use]
    pub fn labels(&self) -> String {
        self.flatten()
            .iter()
            .filter(|e| e.visible)
            .map(|e| {
                if e.kind == "separator" {
                    "----".to_owned()
                } else {
                    format!(
                        "[{}] {}{}",
                        e.id,
                        e.text(),
                        if e.enabled { "" } else { " (disabled)" }
                    )
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The item's `Menu` property: the object path of its dbusmenu.
///
/// # Errors
/// The property cannot be read.
pub fn menu_path(conn: &Connection, item: &Registration) -> Result<String, String> {
    let proxy = conn.with_proxy(item.service.as_str(), item.path.as_str(), CALL_TIMEOUT);
    let path: dbus::Path<'static> =
        proxy
            .get("org.kde.StatusNotifierItem", "Menu")
            .map_err(|e| {
                format!(
                    "Get(StatusNotifierItem.Menu) on {}{}: {e}",
                    item.service, item.path
                )
            })?;
    Ok(path.to_string())
}

/// Reads the whole menu like a panel does before showing it: `AboutToShow(0)`, then
/// `GetLayout(0, -1, [])`.
///
/// # Errors
/// A call fails or the reply does not have the dbusmenu layout type `(u(ia{sv}av))`.
pub fn get_layout(conn: &Connection, service: &str, path: &str) -> Result<MenuEntry, String> {
    let call = |member: &str| {
        Message::new_method_call(service, path, "com.canonical.dbusmenu", member)
            .map_err(|e| format!("build {member}: {e}"))
    };
    let _ = conn
        .channel()
        .send_with_reply_and_block(call("AboutToShow")?.append1(0i32), CALL_TIMEOUT);
    let reply = conn
        .channel()
        .send_with_reply_and_block(
            call("GetLayout")?.append3(0i32, -1i32, Vec::<String>::new()),
            CALL_TIMEOUT,
        )
        .map_err(|e| format!("GetLayout on {service}{path}: {e}"))?;
    let mut it = reply.iter_init();
    let _revision: u32 = it.read().map_err(|e| format!("GetLayout revision: {e}"))?;
    let mut layout = it
        .recurse(ArgType::Struct)
        .ok_or("GetLayout: no layout struct")?;
    parse_entry(&mut layout)
}

fn parse_entry(it: &mut Iter<'_>) -> Result<MenuEntry, String> {
    let id: i32 = it.read().map_err(|e| format!("layout id: {e}"))?;
    let props: PropMap = it.read().map_err(|e| format!("layout properties: {e}"))?;
    let mut entry = MenuEntry {
        id,
        label: props
            .get("label")
            .and_then(|v| v.0.as_str())
            .unwrap_or_default()
            .to_owned(),
        enabled: props
            .get("enabled")
            .and_then(|v| v.0.as_i64())
            .is_none_or(|b| b != 0),
        visible: props
            .get("visible")
            .and_then(|v| v.0.as_i64())
            .is_none_or(|b| b != 0),
        kind: props
            .get("type")
            .and_then(|v| v.0.as_str())
            .unwrap_or_default()
            .to_owned(),
        toggle_state: props.get("toggle-state").and_then(|v| v.0.as_i64()),
        children: Vec::new(),
    };
    let mut children = it
        .recurse(ArgType::Array)
        .ok_or("layout: no children array")?;
    while children.arg_type() == ArgType::Variant {
        let mut variant = children
            .recurse(ArgType::Variant)
            .ok_or("layout child: not a variant")?;
        let mut child = variant
            .recurse(ArgType::Struct)
            .ok_or("layout child: not a struct")?;
        entry.children.push(parse_entry(&mut child)?);
        children.next();
    }
    Ok(entry)
}

/// Clicks entry `id` like a panel does: `Event(id, "clicked", <int32 0>, timestamp)`.
///
/// # Errors
/// The call fails.
pub fn click(conn: &Connection, service: &str, path: &str, id: i32) -> Result<(), String> {
    let timestamp = u32::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            & 0xffff_ffff,
    )
    .unwrap_or(0);
    let msg = Message::new_method_call(service, path, "com.canonical.dbusmenu", "Event")
        .map_err(|e| format!("build Event: {e}"))?
        .append3(id, "clicked", Variant(0i32))
        .append1(timestamp);
    conn.channel()
        .send_with_reply_and_block(msg, CALL_TIMEOUT)
        .map(drop)
        .map_err(|e| format!("Event({id}, clicked) on {service}{path}: {e}"))
}

/// A panel's view of one registered tray item: its menu, read and clicked over dbusmenu.
pub struct Panel {
    conn: Connection,
    pub item: Registration,
    pub menu: String,
}

impl Panel {
    /// Connects to `address` and looks up the item's menu.
    ///
    /// # Errors
    /// The bus or the item's `Menu` property cannot be reached.
    pub fn open(address: &str, item: Registration) -> Result<Self, String> {
        let conn = connect(address)?;
        let menu = menu_path(&conn, &item)?;
        Ok(Self { conn, item, menu })
    }

    /// The whole menu now.
    ///
    /// # Errors
    /// `GetLayout` fails.
    pub fn layout(&self) -> Result<MenuEntry, String> {
        get_layout(&self.conn, &self.item.service, &self.menu)
    }

    /// Waits (bounded) for an entry whose label contains `want`; returns the menu.
    ///
    /// # Errors
    /// Not within `timeout`; the message lists the menu last seen.
    pub fn wait_for_entry(&self, want: &str, timeout: Duration) -> Result<MenuEntry, String> {
        super::wait_for(&format!("the tray menu to show {want:?}"), timeout, || {
            let l = self.layout()?;
            if l.flatten().iter().any(|e| e.text().contains(want)) {
                Ok(l)
            } else {
                Err(format!("menu:\n{}", l.labels()))
            }
        })
    }

    /// Clicks the enabled entry labelled `label`. The app rebuilds its menu when the menu's
    /// shape changes (e.g. the first "last access" line), which renumbers the entries; a
    /// click racing a rebuild is refused by dbusmenu, so the layout is read again and the
    /// click retried (bounded), as a panel would on `LayoutUpdated`.
    ///
    /// # Errors
    /// No such enabled entry, or no click landed within `timeout`.
    pub fn click_label(&self, label: &str, timeout: Duration) -> Result<(), String> {
        super::wait_for(&format!("a click on {label:?} to land"), timeout, || {
            let l = self.layout()?;
            let entry = l
                .find(label)
                .ok_or_else(|| format!("no {label:?} in the menu:\n{}", l.labels()))?;
            if !entry.enabled {
                return Err(format!("{label:?} is disabled"));
            }
            click(&self.conn, &self.item.service, &self.menu, entry.id)
        })
    }
}
