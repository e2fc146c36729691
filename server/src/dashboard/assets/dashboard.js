// cbd dashboard: plain JavaScript, no framework, no build step.
//
// One page of breakers (by prefix, in name order) comes from the JSON API; a
// server-sent-event feed from the daemon's Watch machinery keeps it live. Window
// counts change without events (every report moves them), so the visible page is
// also re-read every COUNTS_REFRESH_MS. Only one page is in the DOM, so 10,000
// breakers cost what 100 do.
"use strict";

/** Breakers per page. */
const PAGE_SIZE = 100;
/** How often the visible page is re-read for window counts. */
const COUNTS_REFRESH_MS = 2000;
/** How many of the latest events the side list keeps. */
const MAX_EVENTS = 100;
/** How many logged events a fresh page replays into the side list. */
const REPLAY_EVENTS = 50;
/** Actions offered per breaker, in button order. */
const ACTIONS = [
  ["force_open", "Force open"],
  ["force_closed", "Force closed"],
  ["release", "Release"],
  ["reset", "Reset"],
];

const $ = (id) => document.getElementById(id);

/** Everything the page knows; one object so the flow is easy to follow. */
const view = {
  /** `read_only`, `token` or `open` (from /dashboard/api/mode). */
  mode: "read_only",
  /** Whether action buttons are shown (open mode, or an admin token). */
  mayAct: false,
  /** The bearer token, kept for this tab only. */
  token: sessionStorage.getItem("cbd-token") || "",
  prefix: "",
  /** Page tokens of the pages before the current one, and the current one. */
  previous: [],
  current: "",
  next: "",
  /** name -> breaker, for the breakers on this page. */
  breakers: new Map(),
  /** name -> <tr>, kept across refreshes so rows are updated in place. */
  rows: new Map(),
  /** Daemon clock minus browser clock, in ms, for the countdowns. */
  clockOffset: 0,
  /** The feed, and the highest revision it delivered. */
  feed: null,
  lastRevision: 0,
  refreshTimer: null,
};

/** The daemon's clock now, in Unix ms. */
function daemonNow() {
  return Date.now() + view.clockOffset;
}

/** Headers for API calls: the token when there is one. */
function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (view.token) h.Authorization = "Bearer " + view.token;
  return h;
}

/** GET or POST `path` and parse the JSON answer; errors carry the API's message. */
async function api(path, options) {
  const resp = await fetch(path, options || { headers: headers() });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const err = new Error(body.message || resp.status + " " + resp.statusText);
    err.code = body.code;
    err.status = resp.status;
    throw err;
  }
  return body;
}

/** Shows `text` above the table (an error in red); empty hides it. */
function notice(text, isError) {
  const n = $("notice");
  n.textContent = text || "";
  n.hidden = !text;
  n.classList.toggle("error", Boolean(isError));
}

/** Seconds left until `untilMs`, as the countdown shows them. */
function countdown(untilMs) {
  if (untilMs == null) return "";
  const left = untilMs - daemonNow();
  if (left <= 0) return "due";
  if (left < 60000) return (left / 1000).toFixed(1) + " s";
  const s = Math.round(left / 1000);
  return Math.floor(s / 60) + " m " + String(s % 60).padStart(2, "0") + " s";
}

/** A new row for `name`, with its cells and (when allowed) action buttons. */
function makeRow(name) {
  const tr = document.createElement("tr");
  tr.dataset.name = name;
  for (const cls of ["name", "state", "ovr", "generation num", "window num", "consecutive num", "open-until num"]) {
    const td = document.createElement("td");
    td.className = cls;
    tr.appendChild(td);
  }
  tr.querySelector(".name").textContent = name;
  tr.querySelector(".name").title = name;
  tr.addEventListener("animationend", () => tr.classList.remove("flash"));
  if (view.mayAct) {
    const td = document.createElement("td");
    td.className = "actions";
    for (const [action, label] of ACTIONS) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "action";
      b.dataset.action = action;
      b.textContent = label;
      b.addEventListener("click", () => act(name, action, b));
      td.appendChild(b);
    }
    tr.appendChild(td);
  }
  return tr;
}

/** Writes `b` into its row. */
function fillRow(tr, b) {
  const changed = tr.dataset.state && tr.dataset.state !== b.state;
  tr.dataset.state = b.state;
  tr.dataset.override = b.override || "";
  tr.querySelector(".state").textContent = b.state;
  tr.querySelector(".ovr").textContent = b.override || "";
  tr.querySelector(".generation").textContent = b.generation;
  tr.querySelector(".window").textContent = b.window_calls + " / " + b.window_failures + " / " + b.window_slow_calls;
  tr.querySelector(".consecutive").textContent = b.consecutive_failures;
  tr.querySelector(".open-until").textContent = countdown(b.open_until_unix_ms);
  // Buttons that would change nothing are disabled.
  const disable = { force_open: b.override === "FORCED_OPEN", force_closed: b.override === "FORCED_CLOSED", release: !b.override };
  for (const button of tr.querySelectorAll("button.action")) {
    button.disabled = Boolean(disable[button.dataset.action]);
  }
  if (changed) {
    tr.classList.remove("flash");
    void tr.offsetWidth; // restart the animation
    tr.classList.add("flash");
  }
}

/** Shows `list` (one page, in name order), reusing rows that are still there. */
function renderPage(list) {
  const body = $("rows");
  const keep = new Set(list.map((b) => b.name));
  for (const [name, tr] of view.rows) {
    if (!keep.has(name)) {
      tr.remove();
      view.rows.delete(name);
    }
  }
  const fresh = new Map();
  list.forEach((b, i) => {
    // A page read before an event the feed already showed must not undo it.
    const shown = view.breakers.get(b.name);
    if (shown && shown.mod_revision > b.mod_revision) b = shown;
    fresh.set(b.name, b);
    let tr = view.rows.get(b.name);
    if (!tr) {
      tr = makeRow(b.name);
      view.rows.set(b.name, tr);
    }
    fillRow(tr, b);
    if (body.children[i] !== tr) body.insertBefore(tr, body.children[i] || null);
  });
  view.breakers = fresh;
  $("empty").hidden = list.length > 0;
}

/** Re-reads the current page; `replay` also restarts the feed from a little before it. */
async function loadPage(replay) {
  const q = new URLSearchParams({ prefix: view.prefix, page_size: PAGE_SIZE, page_token: view.current });
  let page;
  try {
    page = await api("/dashboard/api/breakers?" + q);
  } catch (e) {
    notice("Cannot list breakers: " + e.message, true);
    return;
  }
  view.clockOffset = page.now_unix_ms - Date.now();
  view.next = page.next_page_token;
  renderPage(page.breakers);
  const first = view.previous.length * PAGE_SIZE;
  $("count").textContent = page.total_breakers + " breakers in all";
  $("page").textContent = page.breakers.length
    ? "rows " + (first + 1) + "–" + (first + page.breakers.length)
    : "";
  $("prev").disabled = view.previous.length === 0;
  $("next").disabled = !view.next;
  if (replay) {
    // Replay a few logged events into the side list (the feed skips what is gone).
    const from = Math.max(page.oldest_retained - 1, page.revision - REPLAY_EVENTS, 0);
    startFeed(from);
  }
}

/** Adds one event to the side list, newest first. */
function showEvent(e) {
  const li = document.createElement("li");
  li.dataset.revision = e.revision;
  li.dataset.name = e.name;
  li.dataset.kind = e.kind;
  const line = (cls, text) => {
    const span = document.createElement("span");
    span.className = cls;
    span.textContent = text;
    li.appendChild(span);
    li.appendChild(document.createElement("br"));
  };
  line("ev-name", e.name);
  let what;
  switch (e.kind) {
    case "STATE_CHANGED": what = e.previous_state + " \u2192 " + e.state; break;
    case "OVERRIDE_SET": what = "override " + e.override; break;
    case "OVERRIDE_CLEARED": what = "override cleared"; break;
    case "RESET": what = "reset (" + e.state + ")"; break;
    case "SPEC_PUT": what = "spec put"; break;
    case "DELETED": what = "deleted"; break;
    default: what = e.kind;
  }
  line("ev-what", what);
  if (e.reason) line("ev-reason", e.reason);
  const when = e.time_unix_ms ? new Date(e.time_unix_ms).toLocaleTimeString() : "";
  line("ev-time", when + " \u00b7 rev " + e.revision + " \u00b7 gen " + e.generation);
  const list = $("events");
  list.insertBefore(li, list.firstChild);
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}

/** One `change` event from the feed. */
function onChange(e) {
  if (e.revision <= view.lastRevision) return; // a replayed duplicate
  view.lastRevision = e.revision;
  showEvent(e);
  const tr = view.rows.get(e.name);
  if (tr && e.breaker) {
    view.breakers.set(e.name, e.breaker);
    fillRow(tr, e.breaker);
  }
  // A breaker created or deleted may join or leave this page: re-read it soon.
  if (e.kind === "SPEC_PUT" || e.kind === "DELETED") {
    clearTimeout(view.refreshTimer);
    view.refreshTimer = setTimeout(() => loadPage(false), 200);
  }
}

/** (Re)opens the feed for the prefix, with the events after revision `after`. */
function startFeed(after) {
  if (view.feed) view.feed.close();
  view.lastRevision = after;
  $("events").replaceChildren();
  const q = new URLSearchParams({ prefix: view.prefix, after: after });
  const feed = new EventSource("/dashboard/api/feed?" + q);
  view.feed = feed;
  const conn = (state) => {
    $("conn").dataset.conn = state;
    $("conn").textContent = state;
  };
  conn("connecting");
  feed.addEventListener("open", () => conn("live"));
  feed.addEventListener("change", (m) => onChange(JSON.parse(m.data)));
  feed.addEventListener("progress", () => conn("live"));
  feed.addEventListener("reset", () => {
    // The log no longer holds what this page missed: start over.
    feed.close();
    conn("reconnecting");
    setTimeout(() => loadPage(true), 500);
  });
  feed.addEventListener("error", () => {
    if (feed !== view.feed) return;
    conn("reconnecting");
    // EventSource retries by itself (resuming with Last-Event-ID) unless the
    // daemon refused the stream; then start over from a fresh page.
    if (feed.readyState === EventSource.CLOSED) setTimeout(() => loadPage(true), 1000);
  });
}

/** Runs `action` on `name` from a row's button. */
async function act(name, action, button) {
  button.disabled = true;
  try {
    const answer = await api("/dashboard/api/actions", {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify({ breaker: name, action: action }),
    });
    const tr = view.rows.get(name);
    view.breakers.set(name, answer.breaker);
    if (tr) fillRow(tr, answer.breaker);
    notice("");
  } catch (e) {
    notice(name + ": " + action.replace("_", " ") + " refused: " + e.message, true);
    button.disabled = false;
  }
}

/** Shows or hides the action column, rebuilding rows so they get or lose buttons. */
function setMayAct(mayAct) {
  if (mayAct === view.mayAct) return;
  view.mayAct = mayAct;
  document.querySelector("th.actions-col").hidden = !mayAct;
  for (const tr of view.rows.values()) tr.remove();
  view.rows.clear();
  renderPage([...view.breakers.values()]);
}

/** Asks the daemon what the token is, and shows buttons only for an admin one. */
async function checkToken() {
  if (!view.token) {
    $("whoami").textContent = "no token: read-only";
    setMayAct(false);
    return;
  }
  try {
    const who = await api("/dashboard/api/whoami");
    $("whoami").textContent = who.may_act ? "admin token: actions enabled" : who.role + " token: read-only";
    setMayAct(who.may_act);
  } catch (e) {
    $("whoami").textContent = "token refused: " + e.message;
    setMayAct(false);
  }
}

async function start() {
  let mode;
  try {
    mode = await api("/dashboard/api/mode");
  } catch (e) {
    notice("Cannot reach the daemon: " + e.message, true);
    return;
  }
  view.mode = mode.actions;
  $("version").textContent = "v" + mode.version + " (" + mode.commit + ")";
  document.body.dataset.mode = mode.actions;
  $("mode").textContent = {
    read_only: "read-only",
    token: "actions need an admin token",
    open: "actions enabled (no auth)",
  }[mode.actions] || mode.actions;
  if (mode.actions === "token") {
    $("auth").hidden = false;
    $("token").value = view.token;
    await checkToken();
  } else {
    setMayAct(mode.actions === "open");
  }
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    view.token = $("token").value.trim();
    sessionStorage.setItem("cbd-token", view.token);
    checkToken();
  });
  $("token-forget").addEventListener("click", () => {
    view.token = "";
    $("token").value = "";
    sessionStorage.removeItem("cbd-token");
    checkToken();
  });
  let typing = null;
  $("prefix").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      view.prefix = $("prefix").value;
      view.previous = [];
      view.current = "";
      loadPage(true);
    }, 250);
  });
  $("filter").addEventListener("submit", (ev) => ev.preventDefault());
  $("next").addEventListener("click", () => {
    if (!view.next) return;
    view.previous.push(view.current);
    view.current = view.next;
    loadPage(false);
  });
  $("prev").addEventListener("click", () => {
    if (!view.previous.length) return;
    view.current = view.previous.pop();
    loadPage(false);
  });
  setInterval(() => {
    for (const [name, tr] of view.rows) {
      const b = view.breakers.get(name);
      if (b) tr.querySelector(".open-until").textContent = countdown(b.open_until_unix_ms);
    }
  }, 200);
  setInterval(() => {
    if (!document.hidden) loadPage(false);
  }, COUNTS_REFRESH_MS);
  await loadPage(true);
}

start();
