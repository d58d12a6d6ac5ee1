//! The window, driven as a user would: `tauri-driver` (which runs Debian's
//! `WebKitWebDriver`) and a small W3C WebDriver client over plain HTTP/1.1.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};

use super::{pid_alive, require, wait_for, Proc, World, START_TIMEOUT, UI_TIMEOUT};

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// `tauri-driver`: `KF_E2E_TAURI_DRIVER`, else on `PATH`, else `$CARGO_HOME/bin` or
/// `~/.cargo/bin`.
///
/// # Panics
/// Not found (says how to install it), or `WebKitWebDriver` is missing (names the Debian
/// package).
#[must_use]
pub fn tauri_driver() -> PathBuf {
    require(&[("WebKitWebDriver", "webkit2gtk-driver")]);
    let candidates = [
        std::env::var_os("KF_E2E_TAURI_DRIVER").map(PathBuf::from),
        super::which("tauri-driver"),
        std::env::var_os("CARGO_HOME").map(|h| PathBuf::from(h).join("bin/tauri-driver")),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/tauri-driver")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "tauri-driver is not installed (not on PATH, not in ~/.cargo/bin). Install it with \
                 `cargo install tauri-driver --locked --version '^2'`, or point KF_E2E_TAURI_DRIVER at it \
                 (see src-tauri/DEPS.md)"
            )
        })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free TCP port")
}

/// A running `tauri-driver` (and its `WebKitWebDriver`), in this test's world.
pub struct Driver {
    proc: Proc,
    port: u16,
}

impl Driver {
    /// Starts tauri-driver on free ports and waits (bounded) for `GET /status` to answer.
    ///
    /// # Panics
    /// It is missing or does not come up (with its log).
    #[must_use]
    pub fn start(world: &World) -> Self {
        Self::start_with(world, &[])
    }

    /// [`Driver::start`] with `env` added to the driver's environment, which the app it
    /// launches inherits (`GTK_THEME=Adwaita:dark`).
    ///
    /// # Panics
    /// As [`Driver::start`].
    #[must_use]
    pub fn start_with(world: &World, env: &[(&str, &str)]) -> Self {
        let program = tauri_driver();
        let mut last = String::new();
        for attempt in 0..3 {
            let (port, native) = (free_port(), free_port());
            let mut cmd = world.command(&program);
            cmd.envs(env.iter().copied());
            cmd.arg("--port")
                .arg(port.to_string())
                .arg("--native-port")
                .arg(native.to_string());
            let mut proc = world.spawn("tauri-driver", cmd, &format!("tauri-driver-{attempt}.log"));
            let up = wait_for(
                "tauri-driver to answer GET /status",
                Duration::from_secs(20),
                || {
                    if let Some(s) = proc.exited() {
                        return Ok(Err(format!("tauri-driver exited ({s})")));
                    }
                    http(port, "GET", "/status", None, Duration::from_secs(5))?;
                    // The answer must come from this test's WebKitWebDriver: had its port
                    // been taken meanwhile, tauri-driver would forward to another one.
                    let own = format!("WebKitWebDriver --port={native} ");
                    if world
                        .leftovers()
                        .iter()
                        .any(|(_, args)| args.contains(&own))
                    {
                        Ok(Ok(()))
                    } else {
                        Ok(Err(format!(
                            "no WebKitWebDriver of this test listens on {native}"
                        )))
                    }
                },
            );
            match up {
                Ok(Ok(())) => return Self { proc, port },
                Ok(Err(e)) | Err(e) => {
                    last = format!("{e}; its log:\n{}", proc.log_text());
                    proc.stop(Duration::from_secs(5));
                }
            }
        }
        panic!("tauri-driver did not start: {last}");
    }

    /// Opens a session: tauri-driver starts the app (`tauri:options.application`) with
    /// `args`, and WebKitWebDriver attaches to its webview.
    ///
    /// # Panics
    /// The session cannot be created within [`START_TIMEOUT`] (with tauri-driver's log, which
    /// holds the app's output).
    #[must_use]
    pub fn session<'w>(&self, world: &'w World, app: &Path, args: &[&str]) -> Session<'w> {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "tauri:options": {"application": app, "args": args}
        }}});
        let value =
            http(self.port, "POST", "/session", Some(&caps), START_TIMEOUT).unwrap_or_else(|e| {
                panic!(
                    "creating a WebDriver session for {}: {e}\nprocesses of this test now: {:#?}",
                    app.display(),
                    world.leftovers()
                )
            });
        let id = value["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {value}"))
            .to_owned();
        Session {
            world,
            port: self.port,
            id,
            open: true,
        }
    }

    /// SIGTERM (never SIGKILL first: WebKitWebDriver would linger holding pipes).
    pub fn stop(mut self) {
        self.proc.stop(Duration::from_secs(10));
    }
}

/// One WebDriver session: the app's main window.
pub struct Session<'w> {
    world: &'w World,
    port: u16,
    id: String,
    open: bool,
}

/// A found element.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Session<'_> {
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        http(
            self.port,
            method,
            &format!("/session/{}{path}", self.id),
            body,
            UI_TIMEOUT,
        )
    }

    /// The first element matching `css`.
    ///
    /// # Errors
    /// None matches ("no such element"), or the call fails.
    pub fn find(&self, css: &str) -> Result<Element, String> {
        let v = self.call(
            "POST",
            "/element",
            Some(&json!({"using": "css selector", "value": css})),
        )?;
        element(&v)
    }

    /// Every element matching `css`.
    ///
    /// # Errors
    /// The call fails.
    pub fn find_all(&self, css: &str) -> Result<Vec<Element>, String> {
        let v = self.call(
            "POST",
            "/elements",
            Some(&json!({"using": "css selector", "value": css})),
        )?;
        v.as_array()
            .ok_or_else(|| format!("find elements {css}: {v}"))?
            .iter()
            .map(element)
            .collect()
    }

    /// The first element matching `css` inside `parent`.
    ///
    /// # Errors
    /// None matches, or the call fails.
    pub fn find_in(&self, parent: &Element, css: &str) -> Result<Element, String> {
        let v = self.call(
            "POST",
            &format!("/element/{}/element", parent.0),
            Some(&json!({"using": "css selector", "value": css})),
        )?;
        element(&v)
    }

    /// The element's rendered text (empty when hidden).
    ///
    /// # Errors
    /// The element went stale, or the call fails.
    pub fn text(&self, e: &Element) -> Result<String, String> {
        let v = self.call("GET", &format!("/element/{}/text", e.0), None)?;
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("element text: {v}"))
    }

    /// A real click (WebKitWebDriver scrolls it into view and sends the mouse events).
    ///
    /// # Errors
    /// The element is not interactable, went stale, or the call fails.
    pub fn click(&self, e: &Element) -> Result<(), String> {
        self.call("POST", &format!("/element/{}/click", e.0), Some(&json!({})))
            .map(drop)
    }

    /// Types `text` into the field matching `css`, after clearing it. WebDriver's special
    /// keys work too (`"\u{E00C}"` is Escape).
    ///
    /// # Errors
    /// No such field, or the call fails.
    pub fn type_into(&self, css: &str, text: &str, clear: bool) -> Result<(), String> {
        let e = self.find(css)?;
        if clear {
            self.call("POST", &format!("/element/{}/clear", e.0), Some(&json!({})))?;
        }
        self.call(
            "POST",
            &format!("/element/{}/value", e.0),
            Some(&json!({ "text": text })),
        )
        .map(drop)
    }

    /// Opens the panel's tab `name` (`overview`, `sandboxes`, `activity`, `doctor`,
    /// `settings`) and waits until it shows.
    pub fn tab(&self, name: &str) {
        self.click_when_ready(&format!("#tab-{name}"));
        self.tab_shown(name);
    }

    /// Waits until tab `name` alone is selected and its panel alone shown.
    pub fn tab_shown(&self, name: &str) {
        wait_for(&format!("the {name} tab to show"), UI_TIMEOUT, || {
            // That tab alone selected, its panel alone shown.
            let v = self.script(
                "return [[...document.querySelectorAll('[role=tab][aria-selected=true]')].map(t => t.id), \
                 [...document.querySelectorAll('[role=tabpanel]')].filter(p => !p.hidden).map(p => p.getAttribute('aria-labelledby'))]",
            )?;
            let want = serde_json::json!([[format!("tab-{name}")], [format!("tab-{name}")]]);
            if v == want {
                Ok(())
            } else {
                Err(format!("selected tabs and shown panels: {v}"))
            }
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Clicks the first element matching `css` once it exists and is enabled (bounded).
    ///
    /// # Panics
    /// It never becomes clickable within [`UI_TIMEOUT`].
    pub fn click_when_ready(&self, css: &str) {
        wait_for(&format!("{css} to be clickable"), UI_TIMEOUT, || {
            let e = self.find(css)?;
            let enabled = self.call("GET", &format!("/element/{}/enabled", e.0), None)?;
            if enabled != Value::Bool(true) {
                return Err(format!("{css} is disabled"));
            }
            self.click(&e)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Waits (bounded) for an element matching `css` whose rendered text satisfies `ok`;
    /// returns that text.
    ///
    /// # Panics
    /// Not within `timeout`; the message has the last text seen.
    pub fn wait_text(&self, css: &str, timeout: Duration, ok: impl Fn(&str) -> bool) -> String {
        wait_for(&format!("{css} to show the expected text"), timeout, || {
            let text = self.text(&self.find(css)?)?;
            if ok(&text) {
                Ok(text)
            } else {
                Err(format!("{css} shows {text:?}"))
            }
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `script` in the page (`return …` gives the value).
    ///
    /// # Errors
    /// The script throws, or the call fails.
    pub fn script(&self, script: &str) -> Result<Value, String> {
        self.call(
            "POST",
            "/execute/sync",
            Some(&json!({"script": script, "args": []})),
        )
    }

    /// Panics if the page's HTML holds any of `secrets` (the window may show masks and
    /// fingerprints only).
    pub fn assert_no_secret(&self, secrets: &[&str]) {
        let html = self
            .script("return document.body.innerHTML")
            .unwrap()
            .as_str()
            .unwrap_or_default()
            .to_owned();
        for s in secrets {
            assert!(!html.contains(s), "the window shows a secret");
        }
    }

    /// Waits for the page to paint what the DOM holds now (two animation frames).
    pub fn settle(&self) {
        let _ = self.call(
            "POST",
            "/execute/async",
            Some(&json!({
                "script": "const done = arguments[arguments.length - 1]; \
                           requestAnimationFrame(() => requestAnimationFrame(() => done(true)));",
                "args": []
            })),
        );
        thread::sleep(Duration::from_millis(200));
    }

    /// Scrolls the element `css` into the middle of the window.
    ///
    /// # Errors
    /// The script fails.
    pub fn scroll_to(&self, css: &str) -> Result<(), String> {
        self.script(&format!(
            "const e = document.querySelector({}); if (e) e.scrollIntoView({{block: 'center'}});",
            json!(css)
        ))
        .map(drop)
    }

    /// Saves a PNG screenshot of the window (once painted) to `path`.
    ///
    /// # Panics
    /// The screenshot cannot be taken, decoded or written.
    pub fn screenshot(&self, path: &Path) {
        self.settle();
        let v = self
            .call("GET", "/screenshot", None)
            .unwrap_or_else(|e| panic!("taking a screenshot: {e}"));
        let png = base64_decode(v.as_str().unwrap_or_default())
            .unwrap_or_else(|| panic!("the screenshot is not base64: {v}"));
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "the screenshot is not a PNG"
        );
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create the screenshot directory");
        }
        std::fs::write(path, png).expect("write the screenshot");
    }

    /// Quits the app cleanly (SIGTERM, so its agent removes the socket), then deletes the
    /// session. Returns whether the app exited on SIGTERM within 10 s.
    pub fn close(mut self) -> bool {
        self.end()
    }

    fn end(&mut self) -> bool {
        if !self.open {
            return true;
        }
        self.open = false;
        let mut clean = true;
        if let Some(pid) = self.world.app_pid() {
            // SAFETY: kill(2) only delivers a signal to a process of this test.
            unsafe { libc::kill(libc::pid_t::try_from(pid).unwrap_or(0), libc::SIGTERM) };
            clean = wait_for(
                "the app to quit on SIGTERM",
                Duration::from_secs(10),
                || {
                    if pid_alive(pid) {
                        Err(format!("pid {pid} still running"))
                    } else {
                        Ok(())
                    }
                },
            )
            .is_ok();
        }
        // WebKitWebDriver notices the browser is gone; deleting the session is then quick.
        let _ = http(
            self.port,
            "DELETE",
            &format!("/session/{}", self.id),
            None,
            Duration::from_secs(10),
        );
        clean
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        if self.open && thread::panicking() {
            let shot = super::output_dir().join(format!("e2e-{}-failure.png", self.world.name));
            if let Ok(v) = self.call("GET", "/screenshot", None) {
                if let Some(png) = v.as_str().and_then(base64_decode) {
                    if std::fs::write(&shot, png).is_ok() {
                        eprintln!("screenshot of the failed test's window: {}", shot.display());
                    }
                }
            }
        }
        self.end();
    }
}

fn element(v: &Value) -> Result<Element, String> {
    v.get(ELEMENT)
        .and_then(Value::as_str)
        .map(|s| Element(s.to_owned()))
        .ok_or_else(|| format!("not an element reference: {v}"))
}

/// One WebDriver command over HTTP/1.1 (`Connection: close`); returns `value`.
///
/// # Errors
/// Connection or protocol trouble, or a WebDriver error (`error: message`).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<Value, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let body = body.map(Value::to_string).unwrap_or_default();
    // No `Connection: close`: tauri-driver forwards request headers to WebKitWebDriver, and
    // a forwarded `close` makes it drop connections its proxy may still reuse (resets). The
    // reply is read by its length instead.
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json; charset=utf-8\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("{method} {path}: send: {e}"))?;
    let (status, payload) = read_reply(&mut stream)
        .map_err(|e| format!("{method} {path}: {e} (no complete reply within {timeout:?})"))?;
    let json: Value = serde_json::from_slice(&payload).map_err(|e| {
        format!(
            "{method} {path}: HTTP {status}, body is not JSON ({e}): {}",
            String::from_utf8_lossy(&payload)
        )
    })?;
    let value = json.get("value").cloned().unwrap_or(Value::Null);
    if status >= 400 || value.get("error").is_some() {
        return Err(format!(
            "{method} {path}: HTTP {status}: {}: {}",
            value["error"].as_str().unwrap_or("error"),
            value["message"].as_str().unwrap_or_default()
        ));
    }
    Ok(value)
}

/// Reads one HTTP/1.1 reply: (status, body), by `Content-Length`, chunks, or to EOF.
fn read_reply(stream: &mut TcpStream) -> Result<(u16, Vec<u8>), String> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let split = loop {
        if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = stream.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!(
                "connection closed before a reply ({:?})",
                String::from_utf8_lossy(&raw)
            ));
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let mut body = raw[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
    };
    let chunked = header("transfer-encoding:").is_some_and(|v| v.contains("chunked"));
    let length = header("content-length:").and_then(|v| v.parse::<usize>().ok());
    loop {
        let complete = if chunked {
            dechunk(&body).is_some()
        } else {
            length.is_some_and(|n| body.len() >= n)
        };
        if complete {
            break;
        }
        let n = stream.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            if chunked || length.is_some() {
                return Err("connection closed mid-reply".into());
            }
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    if chunked {
        body = dechunk(&body).ok_or("bad chunked body")?;
    } else if let Some(n) = length {
        body.truncate(n);
    }
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// Standard base64 (with padding, whitespace ignored).
#[must_use]
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    }
    let clean: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let trimmed: &[u8] = {
        let end = clean.iter().rposition(|&c| c != b'=').map_or(0, |i| i + 1);
        &clean[..end]
    };
    let mut out = Vec::with_capacity(trimmed.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in trimmed {
        acc = (acc << 6) | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).ok()?);
        }
    }
    Some(out)
}
