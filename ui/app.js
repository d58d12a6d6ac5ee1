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
  show($("ui-error"), String(e));
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
  const card = el("article", { class: "card", id: `cred-${c.name}`, dataset: { testid: "credential" } },
    el("header", {},
      el("h3", { class: "name" }),
      el("span", { class: "badge" })),
    el("p", { class: "countdown" }),
    el("dl", { class: "kv details" }),
    el("div", { class: "usage", dataset: { testid: "usage" } }),
    el("p", { class: "usage-note muted" }),
    el("p", { class: "problem" }),
    el("ul", { class: "warnings" }));
  return card;
}

function updateCredential(card, c) {
  card.querySelector(".name").textContent = c.name;
  const badge = card.querySelector(".badge");
  badge.textContent = c.state;
  badge.className = `badge ${c.state}`;
  card.querySelector(".countdown").textContent = c.source ? c.countdown : "";
  const rows = [
    ["source", c.source],
    ["kind", c.kind],
    ["token", c.masked],
    ["fingerprint", c.fingerprint],
    ["expires", c.expires_at ? c.expires_at + (c.expiry_assumed ? " (assumed from when it was stored)" : "") : null],
    ["plan", c.plan],
    ["scopes", c.scopes.length ? c.scopes.join(" ") : null],
  ].filter(([, v]) => v);
  const dl = card.querySelector(".details");
  const signature = JSON.stringify(rows);
  if (dl.dataset.signature !== signature) {
    dl.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    dl.dataset.signature = signature;
  }
  const usage = card.querySelector(".usage");
  const usageSignature = JSON.stringify(c.usage);
  if (usage.dataset.signature !== usageSignature) {
    usage.replaceChildren(...c.usage.map((u) => el("div", { class: "meter" },
      el("span", { class: "label" }, `${u.label}`),
      el("progress", { max: "100", value: String(Math.min(u.percent, 100)) }),
      el("span", { class: "figure" }, `${u.percent}% used${u.resets ? `, ${u.resets}` : ""}`))));
    usage.dataset.signature = usageSignature;
  }
  show(card.querySelector(".usage-note"), c.usage_note ? `No usage figures: ${c.usage_note}` : null);
  const problem = card.querySelector(".problem");
  problem.classList.toggle("error", c.state !== "missing");
  problem.classList.toggle("muted", c.state === "missing");
  show(problem, c.error);
  const warnings = card.querySelector(".warnings");
  warnings.replaceChildren(...c.warnings.map((w) => el("li", {}, w)));
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

  $("grants-section").hidden = v.grants.length === 0;
  reconcile($("grants"), v.grants, (g) => g.name,
    (g) => el("li", { class: "grant", dataset: { testid: "grant" } },
      el("span", { class: "line" }),
      el("span", { class: "buttons" },
        el("button", {
          type: "button", class: "danger", dataset: { grant: g.name },
          onclick: async () => {
            try {
              await invoke("revoke_grant", { name: g.name });
              ok();
            } catch (e) {
              fail(e);
            }
            refresh();
          },
        }, "Revoke"))),
    (li, g) => { li.querySelector(".line").textContent = g.line; });

  reconcile($("recent"), v.recent.slice(0, 30), (a) => `${a.ts} ${a.op} ${a.peer} ${a.outcome}`,
    () => el("li", {}, el("span", { class: "line" }), el("span", { class: "muted ts" })),
    (li, a) => {
      li.className = a.refused ? "refused" : "";
      li.querySelector(".line").textContent = a.line;
      li.querySelector(".ts").textContent = a.ts;
    });
  $("recent-empty").hidden = v.recent.length > 0;

  const target = $("target");
  const names = v.credentials.map((c) => c.name).concat(v.not_set_up);
  if (target.dataset.names !== names.join(",")) {
    const selected = target.value || (names.includes("claude") ? "claude" : names[0]);
    target.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
    if (selected) target.value = selected;
    target.dataset.names = names.join(",");
  }

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
    show(errorBox, String(e));
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
  wireReroll();

  listen("kf://changed", refresh);
  listen("kf://reroll-output", (e) => {
    const out = $("setup-output");
    out.hidden = false;
    out.textContent += `${e.payload}\n`;
  });
  listen("kf://show", (e) => {
    const section = e.payload;
    const target = section.startsWith("cred:") ? $(`cred-${section.slice(5)}`)
      : section === "approvals" ? $("approvals-section") : $(section);
    if (target) target.scrollIntoView({ behavior: "smooth", block: "start" });
  });

  // Live countdowns: the view is recomputed by the library every second while visible.
  setInterval(() => {
    if (document.visibilityState === "visible") refresh();
  }, 1000);
  refresh();
}

document.addEventListener("DOMContentLoaded", wire);
