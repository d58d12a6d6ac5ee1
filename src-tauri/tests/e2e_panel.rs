//! End to end, the panel (issue 18): every tab of the real app under Xvfb through
//! WebKitWebDriver, in the light theme and in the GTK theme's dark variant (the computed
//! background checked, and every text's contrast against what it is drawn on); the usage
//! charts drawn from a grant history with known numbers; the reroll dialog opened from a
//! card and closed with Escape. Screenshots of every tab in both themes are saved in
//! `test-output/panel-<tab>-<theme>.png`.
//!
//! Run: `cargo test -p keyferry-tray --test e2e_panel` (Xvfb, tauri-driver 2.x).

#![cfg(target_os = "linux")]

mod support;

use serde_json::{json, Value};
use support::webdriver::{Driver, Session};
use support::{output_dir, tray_binary, wait_for, World, START_TIMEOUT, UI_TIMEOUT};
use testkit::fake_oauth::{Answer, FakeOauth};

const ACCESS: &str = "sk-ant-oat01-E2EpanelACCESSpanelACCESSp-0061";
const REFRESH: &str = "sk-ant-ort01-E2EpanelREFRESHpanelREFRES-0062";
const SETUP: &str = "sk-ant-oat01-E2EpanelSETUPsetupSETUPsetu-0063";

const TABS: [&str; 5] = ["overview", "sandboxes", "activity", "doctor", "settings"];

/// The known history: (hours back from now, requests, input, output) — two in the last
/// 24 hours, one 30 hours back.
const HISTORY: [(i64, u64, u64, u64); 3] =
    [(0, 3, 1000, 200), (2, 1, 250, 50), (30, 2, 4000, 1000)];

fn now_hour() -> i64 {
    time::OffsetDateTime::now_utc()
        .unix_timestamp()
        .div_euclid(3600)
}

/// A Claude Code login with usage figures (`claude`), a setup-token (`work`), and a grant
/// `box-1` whose history holds [`HISTORY`]: made by a headless agent, the history written
/// into its grants file while it is stopped, as a week of use would have left it.
fn world_with_history(fake: &FakeOauth) -> World {
    let world = World::start("panel");
    world.write_claude_login(ACCESS, REFRESH, 7 * 3600);
    world.write_config(&format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\nunix_socket = false\n\
         [oauth]\ntoken_url = \"{}\"\nusage_url = \"{}\"\n\
         [credentials.work]\nsources = [\"keychain:cf-work-token\"]\n",
        fake.token_url(),
        fake.usage_url()
    ));
    world.setup_token("work", SETUP);

    let mut agent = world.start_headless_agent();
    let out = world.cli(
        &[
            "grant",
            "box-1",
            "--ttl",
            "2h",
            "--daily-token-budget",
            "100000",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = agent.stop(std::time::Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "agent exit: {status:?}"
    );

    let file = world.home.join(".local/state/keyferry/grants.json");
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let history: Vec<Value> = HISTORY
        .iter()
        .rev()
        .map(|(back, requests, input, output)| {
            json!({"hour": now_hour() - back, "requests": requests,
                   "tokens": {"input_tokens": input, "output_tokens": output,
                              "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}})
        })
        .collect();
    doc["grants"][0]["history"] = Value::Array(history);
    // The totals the same requests left.
    doc["grants"][0]["requests"] = json!(HISTORY.iter().map(|h| h.1).sum::<u64>());
    doc["grants"][0]["tokens"]["input_tokens"] = json!(HISTORY.iter().map(|h| h.2).sum::<u64>());
    doc["grants"][0]["tokens"]["output_tokens"] = json!(HISTORY.iter().map(|h| h.3).sum::<u64>());
    std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
    world
}

fn shoot(s: &Session<'_>, tab: &str, theme: &str) {
    let path = output_dir().join(format!("panel-{tab}-{theme}.png"));
    s.screenshot(&path);
    let bytes = std::fs::read(&path).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG"),
        "{} is not a PNG",
        path.display()
    );
}

/// Every visible text's contrast against the first opaque background under it, by WCAG's
/// formula: how many were checked, and the pairs below 4.5:1 as "selector text: ratio".
const CONTRAST: &str = r"
const lum = (c) => { const m = c.match(/[\d.]+/g).map(Number);
  const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  return [0.2126 * f(m[0]) + 0.7152 * f(m[1]) + 0.0722 * f(m[2]), m.length > 3 ? m[3] : 1]; };
const bg = (e) => { for (; e; e = e.parentElement) { const c = getComputedStyle(e).backgroundColor;
  if (lum(c)[1] > 0.5) return c; } return getComputedStyle(document.body).backgroundColor; };
const bad = [];
let checked = 0;
for (const e of document.querySelectorAll('body *')) {
  if (!e.offsetParent && e.tagName !== 'DIALOG') continue;
  const own = [...e.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
  if (!own || e.closest('[disabled]')) continue;
  const fg = lum(getComputedStyle(e).color)[0], back = lum(bg(e))[0];
  const ratio = (Math.max(fg, back) + 0.05) / (Math.min(fg, back) + 0.05);
  checked += 1;
  if (ratio < 4.5) bad.push(`${e.tagName.toLowerCase()}.${e.className} ${e.textContent.trim().slice(0, 30)}: ${ratio.toFixed(2)}`);
}
return [checked, bad];";

fn assert_contrast(s: &Session<'_>, where_: &str) {
    let (checked, bad): (usize, Vec<String>) =
        serde_json::from_value(s.script(CONTRAST).unwrap()).unwrap();
    // A tab's texts were looked at (a check of nothing would pass).
    assert!(checked >= 8, "{where_}: only {checked} texts checked");
    assert!(
        bad.is_empty(),
        "{where_}: text below 4.5:1 contrast: {bad:#?}"
    );
}

fn background(s: &Session<'_>) -> String {
    s.script("return getComputedStyle(document.body).backgroundColor")
        .unwrap()
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The chart's bars as (tokens, height style), oldest first.
fn bars(s: &Session<'_>, chart: &str) -> Vec<(u64, String)> {
    let v = s
        .script(&format!(
            "return [...document.querySelectorAll('#grants [data-testid={chart}] .bar')]\
             .map(b => [Number(b.dataset.tokens), b.style.height])"
        ))
        .unwrap();
    serde_json::from_value(v).unwrap()
}

/// Each tab in turn: what it must show, a screenshot, the contrast check.
fn every_tab(s: &Session<'_>, world: &World, theme: &str) {
    s.tab("overview");
    let usage = s.wait_text("#cred-claude [data-testid=usage]", START_TIMEOUT, |t| {
        t.contains("37% used")
    });
    assert!(
        usage.contains("5-hour") && usage.contains("7-day"),
        "{usage}"
    );
    let note = s.wait_text("#cred-work .usage-note", UI_TIMEOUT, |t| !t.is_empty());
    assert!(
        note.starts_with("No usage figures: ") && note.matches("usage figures").count() == 1,
        "one sentence: {note}"
    );
    let summary = s.wait_text("[data-testid=grants-summary]", UI_TIMEOUT, |t| {
        t.contains("1 sandbox")
    });
    assert_eq!(
        summary,
        "1 sandbox: 1500 tokens in 4 requests in the last 24 h"
    );
    shoot(s, "overview", theme);
    assert_contrast(s, &format!("overview, {theme}"));

    s.tab("sandboxes");
    let line = s.wait_text("#grants", UI_TIMEOUT, |t| t.contains("box-1 on claude"));
    assert!(
        line.contains("box-1 on claude: 6 requests, 6500 tokens (in 5250 / out 1250)"),
        "{line}"
    );
    assert!(
        line.contains("budget 100000 tokens a day (1% used today)"),
        "{line}"
    );
    assert!(
        line.contains("last 24 h: 1500 tokens in 4 requests"),
        "{line}"
    );
    let hours = bars(s, "chart-hours");
    assert_eq!(hours.len(), 24);
    assert_eq!(hours[23], (1200, "100%".to_owned()), "{hours:?}");
    assert_eq!(hours[21], (300, "25%".to_owned()), "{hours:?}");
    assert_eq!(
        hours.iter().filter(|(t, _)| *t > 0).count(),
        2,
        "30 hours back is not in the last 24: {hours:?}"
    );
    let days = bars(s, "chart-days");
    assert_eq!(days.len(), 7);
    // The UTC days the known hours fall on, counted back from today.
    let day_of = |back: i64| (now_hour() - back).div_euclid(24);
    let today = day_of(0);
    let mut want = [0u64; 7];
    for (back, _, input, output) in HISTORY {
        let i = 6 - usize::try_from(today - day_of(back)).unwrap();
        want[i] += input + output;
    }
    let got: Vec<u64> = days.iter().map(|(t, _)| *t).collect();
    assert_eq!(got, want);
    shoot(s, "sandboxes", theme);
    assert_contrast(s, &format!("sandboxes, {theme}"));

    s.tab("activity");
    for name in ["work", "claude"] {
        let out = world.cli(&["--require-agent", "get", name], None);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    s.wait_text("#recent", UI_TIMEOUT, |t| {
        t.contains("read work") && t.contains("read claude")
    });
    let pick = |value: &str| {
        s.script(&format!(
            "const f = document.querySelector('#filter-cred'); f.value = '{value}'; \
             f.dispatchEvent(new Event('change')); return f.value"
        ))
        .unwrap()
    };
    assert_eq!(
        pick("claude"),
        json!("claude"),
        "no claude entry to filter by"
    );
    let filtered = s.text(&s.find("#recent").unwrap()).unwrap();
    assert!(
        filtered.contains("read claude") && !filtered.contains("read work"),
        "the filter kept other credentials: {filtered}"
    );
    assert_eq!(pick(""), json!(""));
    s.wait_text("#recent", UI_TIMEOUT, |t| {
        t.contains("read work") && t.contains("read claude")
    });
    shoot(s, "activity", theme);
    assert_contrast(s, &format!("activity, {theme}"));

    s.tab("doctor");
    s.click_when_ready("#run-doctor");
    s.wait_text("#doctor-summary", UI_TIMEOUT, |t| t.contains("found"));
    shoot(s, "doctor", theme);
    assert_contrast(s, &format!("doctor, {theme}"));

    s.tab("settings");
    s.wait_text("#settings-tab", UI_TIMEOUT, |t| {
        t.contains("Warn before expiry")
    });
    shoot(s, "settings", theme);
    assert_contrast(s, &format!("settings, {theme}"));
}

/// Waits until the dialog `css` is open (or closed).
fn wait_open(s: &Session<'_>, css: &str, open: bool) {
    wait_for(&format!("{css} open: {open}"), UI_TIMEOUT, || {
        let now = s.script(&format!("return document.querySelector('{css}').open"))?;
        if now == Value::Bool(open) {
            Ok(())
        } else {
            Err(format!("open: {now}"))
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn every_tab_light_and_dark_with_charts_from_a_known_history() {
    let fake = FakeOauth::plain();
    fake.set(Answer::Rotate);
    let world = world_with_history(&fake);

    let driver = Driver::start(&world);
    let s = driver.session(&world, &tray_binary(), &["--show"]);
    assert_eq!(background(&s), "rgb(246, 248, 250)", "light theme");
    // Only the Overview shows at first; the others are a click away.
    let shown = s
        .script(&format!(
            "return {TABS:?}.map(t => document.querySelector('#tab-' + t).getAttribute('aria-controls'))\
             .filter(id => !document.getElementById(id).hidden)"
        ))
        .unwrap();
    assert_eq!(shown, json!(["overview"]));
    every_tab(&s, &world, "light");

    // The keyboard: arrow keys move between tabs, Enter presses the focused button, Escape
    // closes a dialog.
    s.tab("overview");
    s.type_into("#tab-overview", "\u{E014}", false).unwrap();
    s.tab_shown("sandboxes");
    s.type_into("#new-sandbox", "\u{E007}", false).unwrap();
    wait_open(&s, "#sandbox-dialog", true);
    s.type_into("#sb-name", "\u{E00C}", false).unwrap();
    wait_open(&s, "#sandbox-dialog", false);

    // The reroll dialog: from the setup-token's card (a login has no Reroll button), its
    // target preselected; Escape closes it.
    s.tab("overview");
    let buttons = s
        .script("return [...document.querySelectorAll('[data-reroll]')].filter(b => !b.hidden).map(b => b.dataset.reroll)")
        .unwrap();
    assert_eq!(buttons, json!(["work"]));
    s.click_when_ready("#cred-work [data-reroll]");
    wait_open(&s, "#reroll-dialog", true);
    let target = s
        .script("return document.querySelector('#target').value")
        .unwrap();
    assert_eq!(target, json!("work"));
    shoot(&s, "reroll", "light");
    s.type_into("#paste", "\u{E00C}", false).unwrap();
    wait_open(&s, "#reroll-dialog", false);
    s.assert_no_secret(&[ACCESS, REFRESH, SETUP]);
    assert!(s.close(), "the app did not quit on SIGTERM");
    driver.stop();

    // The same app under the GTK theme's dark variant.
    let driver = Driver::start_with(&world, &[("GTK_THEME", "Adwaita:dark")]);
    let s = driver.session(&world, &tray_binary(), &["--show"]);
    wait_for("the dark theme", UI_TIMEOUT, || {
        let bg = background(&s);
        if bg == "rgb(13, 17, 23)" {
            Ok(())
        } else {
            Err(bg)
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    every_tab(&s, &world, "dark");
    s.assert_no_secret(&[ACCESS, REFRESH, SETUP]);
    assert!(s.close(), "the app did not quit on SIGTERM");
    driver.stop();
    world.finish();
}
