// Keyferry's window. Plain JS, no bundler; talks to the app only through its own commands.
// Every text comes from the library's view model (countdowns included): this file only
// places it in the page.
"use strict";

const { invoke } = window.__TAURI__.core;
const { listen } = window.__TAURI__.event;

const $ = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) {
    if (c !== null && c !== undefined) node.append(c);
  }
  return node;
}

function show(node, text) {
  if (text === null || text === undefined || text === "") {
    node.hidden = true;
    node.textContent = "";
  } else {
    node.hidden = false;
    node.textContent = text;
  }
}

// A failed action's message stays until the next action succeeds (the view's own notice
// is redrawn every second and would hide it).
function fail(e) {
  show($("ui-error"), says(e));
}

// A command's error as one sentence: a string, or a typed error's message.
function says(e) {
  if (typeof e === "string") return e;
  return e && e.message ? e.message : String(e);
}

function ok() {
  show($("ui-error"), null);
}

// Keyed list update: creates missing rows, updates the rest in place, drops the gone ones,
// so a row's buttons survive the once-a-second redraw.
function reconcile(container, items, key, create, update) {
  const existing = new Map([...container.children].map((n) => [n.dataset.key, n]));
  const wanted = new Set();
  items.forEach((item, index) => {
    const k = String(key(item));
    wanted.add(k);
    let node = existing.get(k);
    if (!node) {
      node = create(item);
      node.dataset.key = k;
    }
    update(node, item);
    if (container.children[index] !== node) container.insertBefore(node, container.children[index] || null);
  });
  for (const [k, node] of existing) if (!wanted.has(k)) node.remove();
}

// ---- credentials ----------------------------------------------------------------------

function credentialCard(c) {
  return el("article", { class: "card", id: `cred-${c.name}`, dataset: { testid: "credential" } },
    el("header", {},
      el("h3", { class: "name" }),
      el("span", { class: "badge" }),
      el("span", { class: "countdown grow" }),
      el("button", {
        type: "button", class: "secondary small reroll", dataset: { reroll: c.name },
        onclick: () => openReroll(c.name),
      }, "Reroll…")),
    el("p", { class: "source muted" }),
    el("p", { class: "token muted" }),
    el("div", { class: "usage", dataset: { testid: "usage" } }),
    el("p", { class: "usage-note muted" }),
    el("p", { class: "problem" }),
    el("ul", { class: "warnings" }),
    el("details", {},
      el("summary", {}, "Details"),
      el("dl", { class: "kv details" })));
}

function updateCredential(card, c) {
  card.querySelector(".name").textContent = c.name;
  const badge = card.querySelector(".badge");
  badge.textContent = c.state;
  badge.className = `badge ${c.state}`;
  card.querySelector(".countdown").textContent = c.source ? c.countdown : "";
  card.querySelector(".reroll").hidden = !c.rerollable;
  card.querySelector(".source").textContent = [c.source, c.kind, c.plan].filter(Boolean).join(" · ");
  show(card.querySelector(".token"), [c.masked, c.fingerprint].filter(Boolean).join(" · "));
  const rows = [
    ["expires", c.expires_at ? c.expires_at + (c.expiry_assumed ? " (assumed from when it was stored)" : "") : null],
    ["scopes", c.scopes.length ? c.scopes.join(" ") : null],
  ].filter(([, v]) => v);
  const dl = card.querySelector(".details");
  const signature = JSON.stringify(rows);
  if (dl.dataset.signature !== signature) {
    dl.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    dl.dataset.signature = signature;
  }
  card.querySelector("details").hidden = rows.length === 0;
  const usage = card.querySelector(".usage");
  const usageSignature = JSON.stringify(c.usage);
  if (usage.dataset.signature !== usageSignature) {
    usage.replaceChildren(...c.usage.map((u) => {
      const fill = el("span", { class: `fill${u.percent >= 90 ? " hot" : u.percent >= 70 ? " warm" : ""}` });
      fill.style.width = `${Math.min(u.percent, 100)}%`;
      return el("div", { class: "meter", dataset: { window: u.label } },
        el("span", { class: "label" }, u.label),
        el("span", { class: "track", role: "meter", "aria-valuemin": "0", "aria-valuemax": "100",
          "aria-valuenow": String(Math.min(u.percent, 100)), "aria-label": `${u.label} window` }, fill),
        el("span", { class: "figure" }, `${u.percent}% used${u.resets ? `, ${u.resets}` : ""}`));
    }));
    usage.dataset.signature = usageSignature;
  }
  show(card.querySelector(".usage-note"), c.usage_note);
  const problem = card.querySelector(".problem");
  problem.classList.toggle("error", c.state !== "missing");
  problem.classList.toggle("muted", c.state === "missing");
  show(problem, c.error);
  const warnings = card.querySelector(".warnings");
  warnings.replaceChildren(...c.warnings.map((w) => el("li", {}, w)));
}

// ---- sandboxes ------------------------------------------------------------------------

// A bar chart from the library's bars (heights are already 0–100 of the tallest).
function chart(bars, caption, testid) {
  const first = bars.length ? bars[0].label : "";
  const last = bars.length ? bars[bars.length - 1].label : "";
  return el("figure", { class: "chart", dataset: { testid } },
    el("figcaption", { class: "muted" }, caption),
    el("div", { class: "bars", role: "img", "aria-label": `${caption}, ${first} to ${last}` },
      ...bars.map((b) => {
        const bar = el("span", { class: "bar", title: b.title, dataset: { tokens: String(b.tokens) } });
        bar.style.height = `${b.height}%`;
        return bar;
      })),
    el("div", { class: "axis muted" }, el("span", {}, first), el("span", {}, last)));
}

function grantCard(g) {
  return el("li", { class: "grant card", dataset: { testid: "grant" } },
    el("div", { class: "row" },
      el("span", { class: "line grow" }),
      el("button", {
        type: "button", class: "danger small", dataset: { grant: g.name },
        onclick: async () => {
          try {
            await invoke("revoke_grant", { name: g.name });
            ok();
          } catch (e) {
            fail(e);
          }
          refresh();
        },
      }, "Revoke")),
    el("p", { class: "limits muted small-text" }),
    el("div", { class: "charts" }),
    el("p", { class: "chart-note muted small-text" }));
}

function updateGrant(li, g) {
  li.querySelector(".line").textContent = g.line;
  show(li.querySelector(".limits"), g.limits);
  li.querySelector(".chart-note").textContent = g.chart_note;
  const charts = li.querySelector(".charts");
  const signature = JSON.stringify([g.hours, g.days]);
  if (charts.dataset.signature !== signature) {
    charts.replaceChildren(chart(g.hours, "Tokens per hour, last 24 h", "chart-hours"),
      chart(g.days, "Per day", "chart-days"));
    charts.dataset.signature = signature;
  }
}

// ---- approvals ------------------------------------------------------------------------

function approvalRow(a) {
  const answer = (decision) => async () => {
    try {
      await invoke("approve", { request: a.request, decision });
      ok();
    } catch (e) {
      fail(e);
    }
    refresh();
  };
  return el("li", { class: "approval", dataset: { testid: "approval" } },
    el("span", { class: "text" }),
    el("span", { class: "muted left" }),
    el("span", { class: "buttons" },
      el("button", { type: "button", onclick: answer("allow_once"), dataset: { decision: "allow_once" } }, "Allow once"),
      el("button", { type: "button", class: "secondary", onclick: answer("always_allow"), dataset: { decision: "always_allow" } }, "Always allow"),
      el("button", { type: "button", class: "danger", onclick: answer("deny"), dataset: { decision: "deny" } }, "Deny")));
}

function updateApproval(row, a) {
  row.querySelector(".text").textContent = a.text;
  row.querySelector(".left").textContent = `denied in ${a.seconds_left} s unless answered`;
}

// ---- the whole view -------------------------------------------------------------------

let current = null;

// Fills a <select> with `values` (after its first "all"/placeholder options when `keep`),
// keeping the selection; only when the list changed, so an open dropdown stays open.
function fillSelect(select, values, keep = 0) {
  const signature = values.join("\n");
  if (select.dataset.values === signature) return;
  const selected = select.value;
  const fixed = [...select.options].slice(0, keep);
  select.replaceChildren(...fixed, ...values.map((v) => el("option", { value: v }, v)));
  if ([...select.options].some((o) => o.value === selected)) select.value = selected;
  select.dataset.values = signature;
}

function renderActivity(v) {
  fillSelect($("filter-cred"), [...new Set(v.recent.map((a) => a.credential).filter(Boolean))].sort(), 1);
  fillSelect($("filter-peer"), [...new Set(v.recent.map((a) => a.peer))].sort(), 1);
  const cred = $("filter-cred").value;
  const peer = $("filter-peer").value;
  const rows = v.recent.filter((a) => (!cred || a.credential === cred) && (!peer || a.peer === peer));
  reconcile($("recent"), rows.slice(0, 50), (a) => `${a.ts} ${a.op} ${a.peer} ${a.outcome}`,
    () => el("li", {}, el("span", { class: "line" }), el("span", { class: "muted ts" })),
    (li, a) => {
      li.className = a.refused ? "refused" : "";
      li.querySelector(".line").textContent = a.line;
      li.querySelector(".ts").textContent = a.ts;
    });
  show($("recent-empty"), rows.length ? null
    : v.recent.length ? "Nothing matches the filter." : "No token served yet.");
}

function render(v) {
  current = v;
  $("agent-line").textContent = v.agent_line;
  const lock = $("lock");
  lock.textContent = v.locked ? "Unlock serving" : "Lock serving";
  lock.disabled = v.agent.kind === "down";
  document.body.classList.toggle("locked", v.locked);
  $("locked-banner").hidden = !v.locked;
  show($("alert"), v.alert);
  show($("notice"), v.notice);

  $("approvals-section").hidden = v.approvals.length === 0;
  reconcile($("approvals"), v.approvals, (a) => a.request, approvalRow, updateApproval);

  reconcile($("credentials"), v.credentials, (c) => c.name, credentialCard, updateCredential);
  show($("not-set-up"), v.not_set_up.length ? `Not set up: ${v.not_set_up.join(", ")}` : null);
  $("grants-summary").textContent = v.grants_summary;

  show($("gateway-line"), v.gateway_line);
  reconcile($("grants"), v.grants, (g) => g.name, grantCard, updateGrant);
  $("grants-empty").hidden = v.grants.length > 0;
  $("tab-sandboxes").textContent = v.grants.length ? `Sandboxes (${v.grants.length})` : "Sandboxes";

  renderActivity(v);

  const names = v.credentials.map((c) => c.name).concat(v.not_set_up);
  const fresh = !$("target").dataset.values;
  fillSelect($("target"), names);
  if (fresh && names.includes("claude")) $("target").value = "claude";
  fillSelect($("sb-credential"), v.credentials.filter((c) => c.source).map((c) => c.name));

  $("autostart").checked = v.autostart;
  const s = v.settings;
  // Form fields follow the agent unless the user is editing them.
  if (!$("settings-form").contains(document.activeElement)) {
    $("set-notifications").checked = s.notifications;
    $("set-notify-access").checked = s.notify_on_access;
    $("set-thresholds").value = s.expiry_thresholds.join(", ");
  }
  $("settings").replaceChildren(
    el("dt", {}, "approval timeout"), el("dd", {}, `${s.approval_timeout_secs} s`));
  $("config-path").textContent = s.config_path || "config.toml";
}

// ---- tabs and dialogs -----------------------------------------------------------------

const TABS = ["overview", "sandboxes", "activity", "doctor-tab", "settings-tab"];

function selectTab(id, focus = false) {
  for (const t of TABS) {
    const on = t === id;
    $(t).hidden = !on;
    const button = document.querySelector(`[role=tab][data-tab="${t}"]`);
    button.setAttribute("aria-selected", String(on));
    button.tabIndex = on ? 0 : -1;
    if (on && focus) button.focus();
  }
}

function wireTabs() {
  const buttons = [...document.querySelectorAll("[role=tab]")];
  for (const b of buttons) {
    b.addEventListener("click", () => selectTab(b.dataset.tab));
    // Arrow keys move between tabs (the WAI-ARIA tabs pattern); Tab leaves the list.
    b.addEventListener("keydown", (e) => {
      const i = buttons.indexOf(b);
      const to = e.key === "ArrowRight" ? i + 1 : e.key === "ArrowLeft" ? i - 1 : null;
      if (to === null) return;
      e.preventDefault();
      selectTab(buttons[(to + buttons.length) % buttons.length].dataset.tab, true);
    });
  }
  for (const b of document.querySelectorAll("[data-goto]")) {
    b.addEventListener("click", () => selectTab(b.dataset.goto, true));
  }
  for (const b of document.querySelectorAll("[data-close]")) {
    b.addEventListener("click", () => $(b.dataset.close).close());
  }
  selectTab("overview");
}

function openReroll(name) {
  if (name) $("target").value = name;
  const d = $("reroll-dialog");
  if (!d.open) d.showModal();
}

// What the tray menu (and a second launch) asks the window to show.
window.kfShow = (section) => {
  if (section === "reroll") return openReroll(null);
  if (section === "new-sandbox") {
    selectTab("sandboxes");
    return openSandbox();
  }
  if (section === "approvals") {
    $("approvals-section").scrollIntoView({ block: "start" });
    return;
  }
  if (section.startsWith("cred:")) {
    selectTab("overview");
    const card = $(`cred-${section.slice(5)}`);
    if (card) card.scrollIntoView({ block: "start" });
    return;
  }
  if (TABS.includes(section)) selectTab(section);
};

// ---- new sandbox ----------------------------------------------------------------------

function openSandbox() {
  const d = $("sandbox-dialog");
  $("sandbox-form").hidden = false;
  $("sb-result").hidden = true;
  show($("sb-error"), null);
  if (!d.open) d.showModal();
  $("sb-name").focus();
}

function recipeCard(r) {
  const note = el("span", { class: "muted small-text copied", role: "status" });
  return el("article", { class: "recipe", dataset: { testid: `recipe-${r.recipe}` } },
    el("header", { class: "row" },
      el("h3", { class: "grow" }, r.label),
      note,
      el("button", {
        type: "button", class: "secondary small", dataset: { copy: r.recipe },
        onclick: async () => {
          try {
            await invoke("copy_recipe", { recipe: r.recipe });
            note.textContent = "Copied.";
            ok();
          } catch (e) {
            note.textContent = "";
            fail(e);
          }
        },
      }, "Copy")),
    el("pre", {}, r.shown));
}

function wireSandbox() {
  $("new-sandbox").addEventListener("click", openSandbox);
  $("sandbox-dialog").addEventListener("close", () => {
    // The full texts go (zeroized) with the dialog; the grant stays.
    invoke("forget_recipes");
    $("sb-recipes").replaceChildren();
  });
  $("sandbox-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    for (const f of $("sandbox-form").querySelectorAll("[aria-invalid]")) f.removeAttribute("aria-invalid");
    guarded($("sb-create"), $("sb-error"), async () => {
      const form = {
        credential: $("sb-credential").value,
        name: $("sb-name").value,
        lifetime: $("sb-lifetime").value,
        daily_token_budget: $("sb-budget").value,
        max_concurrent: $("sb-concurrent").value,
      };
      let made;
      try {
        made = await invoke("new_sandbox", { form });
      } catch (e) {
        const field = e && e.field ? $("sandbox-form").querySelector(`[name=${e.field}]`) : null;
        if (field) {
          field.setAttribute("aria-invalid", "true");
          field.focus();
        }
        throw e;
      }
      $("sb-made").textContent = `${made.replaced ? "Replaced" : "Made"} sandbox ${made.name} on ${made.credential}, `
        + `until ${made.expires}; its placeholder is ${made.masked}. Revoke it on the Sandboxes tab.`;
      show($("sb-homes"), made.homes.length ? `Wrote its home folders: ${made.homes.join(", ")}` : null);
      $("sb-recipes").replaceChildren(...made.recipes.map(recipeCard));
      $("sandbox-form").hidden = true;
      $("sb-result").hidden = false;
      $("sandbox-form").reset();
      refresh();
    });
  });
}

async function refresh() {
  try {
    render(await invoke("view"));
  } catch (e) {
    fail(e);
  }
}

// ---- doctor ---------------------------------------------------------------------------

async function runDoctor() {
  const button = $("run-doctor");
  button.disabled = true;
  $("doctor-summary").textContent = "Checking…";
  try {
    const report = await invoke("doctor");
    $("doctor").replaceChildren(...report.checks.map((c) => el("li", { class: `state-${c.state}` },
      el("span", { class: "mark" }, c.state === "skip" ? "--" : c.state.toUpperCase()),
      el("span", { class: "check" }, c.name),
      el("span", { class: "detail" }, c.detail),
      c.fix ? el("span", { class: "fix" }, `fix: ${c.fix}`) : null)));
    const failed = report.checks.filter((c) => c.state === "fail").length;
    $("doctor-summary").textContent = failed === 0 ? "No problems found."
      : `${failed} problem(s) found; each line marked FAIL says how to fix it.`;
    ok();
  } catch (e) {
    $("doctor-summary").textContent = "";
    fail(e);
  } finally {
    button.disabled = false;
  }
}

// ---- reroll wizard --------------------------------------------------------------------

function candidateReady(c) {
  show($("capture-error"), null);
  show($("candidate"), `Captured a ${c.kind} token ${c.masked} (${c.fingerprint}). Store it below.`);
  $("store").disabled = false;
  $("discard").disabled = false;
}

async function guarded(button, errorBox, action) {
  button.disabled = true;
  show(errorBox, null);
  try {
    await action();
  } catch (e) {
    show(errorBox, says(e));
  } finally {
    button.disabled = false;
  }
}

function wireReroll() {
  $("revoke").addEventListener("click", () => guarded($("revoke"), $("revoke-error"), async () => {
    const url = await invoke("open_revoke_page");
    show($("revoke-result"), `Opened ${url} in your browser. Revoke the old token there.`);
  }));

  $("run-setup").addEventListener("click", () => guarded($("run-setup"), $("capture-error"), async () => {
    const out = $("setup-output");
    out.textContent = "";
    out.hidden = false;
    candidateReady(await invoke("run_setup_token"));
  }));

  $("cancel-setup").addEventListener("click", () => invoke("cancel_setup_token"));

  $("settings-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    guarded($("save-settings"), $("settings-error"), async () => {
      const settings = {
        notifications: $("set-notifications").checked,
        notify_on_access: $("set-notify-access").checked,
        expiry_thresholds: $("set-thresholds").value.split(",").map((t) => t.trim()).filter(Boolean),
      };
      await invoke("save_settings", { settings });
      show($("settings-saved"), "Saved.");
      $("save-settings").blur();
      await refresh();
    });
  });

  $("use-paste").addEventListener("click", () => guarded($("use-paste"), $("capture-error"), async () => {
    const field = $("paste");
    const token = field.value.trim();
    field.value = "";
    if (!token) throw new Error("paste the token first");
    candidateReady(await invoke("paste_token", { token }));
  }));

  $("store").addEventListener("click", () => guarded($("store"), $("store-error"), async () => {
    const done = await invoke("store_token", { name: $("target").value });
    const dl = $("stored");
    dl.replaceChildren(
      el("dt", {}, "stored"), el("dd", {}, `${done.name} in ${done.source || "the keychain"}`),
      el("dt", {}, "token"), el("dd", {}, done.masked),
      el("dt", {}, "fingerprint"), el("dd", { dataset: { testid: "fingerprint" } }, done.fingerprint),
      el("dt", {}, "expires"), el("dd", {}, done.expires));
    dl.hidden = false;
    show($("candidate"), null);
    $("discard").disabled = true;
    refresh();
  }).then(() => { $("store").disabled = !$("candidate").textContent; }));

  $("discard").addEventListener("click", async () => {
    await invoke("discard_token");
    show($("candidate"), null);
    $("store").disabled = true;
    $("discard").disabled = true;
  });
}

// ---- wiring ---------------------------------------------------------------------------

function wire() {
  $("run-doctor").addEventListener("click", runDoctor);
  $("lock").addEventListener("click", async () => {
    try {
      await invoke("set_locked", { locked: !(current && current.locked) });
      ok();
    } catch (e) {
      fail(e);
    }
    refresh();
  });
  $("autostart").addEventListener("change", async (e) => {
    try {
      await invoke("set_autostart", { enabled: e.target.checked });
      ok();
    } catch (err) {
      fail(err);
    }
    refresh();
  });
  wireTabs();
  wireReroll();
  wireSandbox();

  listen("kf://changed", refresh);
  listen("kf://reroll-output", (e) => {
    const out = $("setup-output");
    out.hidden = false;
    out.textContent += `${e.payload}\n`;
  });
  listen("kf://show", (e) => window.kfShow(e.payload));
  for (const f of ["filter-cred", "filter-peer"]) $(f).addEventListener("change", () => current && renderActivity(current));

  // Live countdowns: the view is recomputed by the library every second while visible.
  setInterval(() => {
    if (document.visibilityState === "visible") refresh();
  }, 1000);
  refresh();
}

document.addEventListener("DOMContentLoaded", wire);
