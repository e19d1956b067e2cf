// The console's shared parts: the API key, calls to the queen's public API,
// the SSE reader with resume, small DOM and SVG helpers and the page router.
// Every page is a script of its own that registers itself in rb.pages.
"use strict";

const $ = (id) => document.getElementById(id);
// rb is the console's state; refreshed counts the refreshes that ended well
// (tests wait on it to know a page shows fresh data).
const rb = { key: localStorage.getItem("rbee-key") || "", pages: {}, page: null, timer: null, refreshed: 0 };

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (rb.key) h["Authorization"] = "Bearer " + rb.key;
  return h;
}

// showError shows msg in the page's error bar, or hides it. An error of
// the periodic refresh (refresh true) goes when a refresh succeeds; one of
// the user's own action stays until the next action or page.
function showError(msg, refresh) {
  $("error").textContent = msg || "";
  $("error").hidden = !msg;
  rb.refreshFailed = !!(msg && refresh);
}

// apiError turns a refused request into an Error with the queen's message
// (its {"error": {"code", "message"}} shape) and the status.
function apiError(resp, data) {
  const msg = data && data.error ? data.error.message : resp.status + " " + resp.statusText;
  const err = new Error(msg);
  err.status = resp.status;
  return err;
}

// api calls the queen and returns the decoded JSON body.
async function api(method, path, body) {
  const opts = { method, headers: headers(body ? { "Content-Type": "application/json" } : {}) };
  if (body) opts.body = JSON.stringify(body);
  const resp = await fetch(path, opts);
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (!resp.ok) throw apiError(resp, data);
  return data;
}

// el builds an element: attributes (on* become listeners) and children.
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat()) e.append(k instanceof Node ? k : document.createTextNode(k == null ? "" : String(k)));
  return e;
}

// fill replaces a node's children only when what they show has changed, so
// a refresh does not take the keyboard focus away from a button in them.
function fill(node, sig, make) {
  const s = JSON.stringify(sig);
  if (node.dataset.sig === s) return;
  node.dataset.sig = s;
  node.replaceChildren(...make());
}

const SVGNS = "http://www.w3.org/2000/svg";
function svg(tag, attrs, ...kids) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
}

function bytes(b) {
  if (!b) return "0 B";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
  return (i ? b.toFixed(1) : b) + " " + u[i];
}
const since = (a, b) => {
  if (!a || !b) return "";
  const ms = new Date(b) - new Date(a);
  return ms < 1000 ? ms + " ms" : (ms / 1000).toFixed(1) + " s";
};
const num = (n) => (n == null ? "" : Number(n).toLocaleString());

// meter is a labelled bar for a share of something.
function meter(label, value, max, text) {
  return el("div", { class: "meterrow" }, el("span", {}, label),
    el("meter", { min: 0, max, value, "aria-label": label, low: max * 0.7, high: max * 0.9, optimum: 0 }), el("span", { class: "mono" }, text));
}

// table renders a job's data result: a list of records as rows, one record
// as name/value rows, anything else as JSON.
function dataTable(v) {
  const cell = (x) => (x !== null && typeof x === "object" ? JSON.stringify(x) : x);
  if (Array.isArray(v) && v.length && v.every((r) => r && typeof r === "object" && !Array.isArray(r))) {
    const cols = [...new Set(v.flatMap((r) => Object.keys(r)))];
    return el("table", { class: "data" }, el("thead", {}, el("tr", {}, cols.map((c) => el("th", {}, c)))),
      el("tbody", {}, v.map((r) => el("tr", {}, cols.map((c) => el("td", {}, cell(r[c])))))));
  }
  if (v && typeof v === "object" && !Array.isArray(v)) {
    return el("table", { class: "data" }, el("tbody", {}, Object.entries(v).map(([k, x]) => el("tr", {}, el("th", {}, k), el("td", {}, cell(x))))));
  }
  return el("pre", {}, JSON.stringify(v, null, 2));
}

// sseFrames reads an SSE response and calls onFrame({id, event, data}) for
// each frame with data; it returns when the body ends.
async function sseFrames(resp, onFrame) {
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value.replace(/\r\n/g, "\n");
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const frame = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const f = { id: "", event: "message", data: "" };
      for (const l of frame.split("\n")) {
        if (l.startsWith("id:")) f.id = l.slice(3).trim();
        else if (l.startsWith("event:")) f.event = l.slice(6).trim();
        else if (l.startsWith("data:")) f.data += (f.data ? "\n" : "") + l.slice(5).replace(/^ /, "");
      }
      if (f.data && onFrame(f) === false) return;
    }
  }
}

// followJob streams a job's narration to [DONE], calling onEvent(kind, ev).
// A dropped connection is resumed with Last-Event-ID, so no event is shown
// twice or lost. It returns the end event, or null when aborted.
async function followJob(id, onEvent, signal) {
  let last = "";
  let end = null;
  for (let tries = 0; !signal || !signal.aborted; tries++) {
    try {
      const h = headers({ Accept: "text/event-stream" });
      if (last) h["Last-Event-ID"] = last;
      const resp = await fetch(`/v1/jobs/${encodeURIComponent(id)}/stream`, { headers: h, signal });
      // 204: the job had ended at the event we resumed after.
      if (resp.status === 204) return end;
      if (!resp.ok) {
        let data = null;
        try { data = await resp.json(); } catch (e) { /* not JSON */ }
        throw Object.assign(apiError(resp, data), { fatal: true });
      }
      let finished = false;
      await sseFrames(resp, (f) => {
        if (f.data === "[DONE]") { finished = true; return false; }
        if (f.id) last = f.id;
        const ev = JSON.parse(f.data);
        if (f.event === "end") end = ev;
        onEvent(f.event, ev);
        return true;
      });
      if (finished) return end;
    } catch (e) {
      if (e.fatal) throw e;
      if (signal && signal.aborted) return null;
    }
    await new Promise((r) => setTimeout(r, Math.min(5000, 250 * (tries + 1))));
  }
  return null;
}

// runJob submits a job and follows it; it resolves to {id, end, data}, the
// last data event's data being the job's result.
async function runJob(req, onEvent, signal) {
  const created = await api("POST", "/v1/jobs", req);
  let data;
  const end = await followJob(created.job_id, (kind, ev) => {
    if (kind === "data") data = ev.data;
    if (onEvent) onEvent(kind, ev, created.job_id);
  }, signal);
  return { id: created.job_id, end, data };
}

// narrationLine renders one event: progress as a bar, data as a table.
function narrationLine(kind, ev) {
  const t = ev.time ? new Date(ev.time).toLocaleTimeString() : "";
  const line = el("div", { class: "lvl-" + (ev.level || "info") },
    el("span", { class: "meta" }, `${t} #${ev.seq} ${ev.actor || ""} ${ev.action || ""} `), ev.message || "");
  if (ev.progress) {
    const p = ev.progress;
    const pct = p.total ? Math.min(100, (100 * p.done) / p.total) : null;
    line.append(" ", el("progress", { max: 100, value: pct == null ? null : pct.toFixed(1), "aria-label": "progress" }),
      pct == null ? ` ${num(p.done)} ${p.unit || ""}` : ` ${pct.toFixed(0)}% of ${num(p.total)} ${p.unit || ""}`);
  }
  if (ev.payload) line.append(el("div", { class: "mono" }, ev.payload));
  if (kind === "data" && ev.data !== undefined) line.append(dataTable(ev.data));
  if (kind === "end") line.append(` → ${ev.state}${ev.error ? ": " + ev.error : ""}`);
  return line;
}

// appendLog adds a node to a scrolling log, keeping it at the bottom when
// the reader was there.
function appendLog(log, node) {
  const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  log.append(node);
  if (atEnd) log.scrollTop = log.scrollHeight;
}

// hiveOptions fills the hive pickers from the last hive list, keeping what
// each had chosen.
function hiveOptions(hives) {
  for (const s of document.querySelectorAll("select.hivesel")) {
    const was = s.value;
    s.replaceChildren(...hives.map((h) => el("option", { value: h.id }, h.id)));
    if (hives.some((h) => h.id === was)) s.value = was;
  }
}

// The router: #/<page>[/<arg>] shows one page; each page's refresh runs on
// entry and every two seconds while it is shown.
function route() {
  const [name, ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  const page = rb.pages[name] ? name : "cluster";
  if (!rb.pages[name]) { history.replaceState(null, "", "#/cluster"); }
  for (const s of document.querySelectorAll(".page")) s.hidden = s.id !== "page-" + page;
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.page === page) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  const p = rb.pages[page];
  if (rb.page !== page) {
    if (rb.page && rb.pages[rb.page].leave) rb.pages[rb.page].leave();
    showError("");
    rb.page = page;
    document.title = "rbee · " + p.title;
  }
  // A link cut short or typed by hand may not decode: it is taken as it is
  // (a job of that id is not found) rather than stop the console.
  const args = rest.map((s) => { try { return decodeURIComponent(s); } catch (e) { return s; } });
  if (p.enter) p.enter(args);
  tick();
}

async function tick() {
  clearTimeout(rb.timer);
  const name = rb.page, p = rb.pages[name];
  try {
    await refreshHealth();
    if (p && p.refresh) await p.refresh();
    if (rb.page === name) rb.refreshed++;
    if (rb.refreshFailed) showError("");
  } catch (e) {
    showError(e.status === 401 || e.status === 403 ? "The queen wants an API key with the right scope: " + e.message : e.message, true);
  }
  rb.timer = setTimeout(tick, 2000);
}

async function refreshHealth() {
  try {
    const r = await fetch("/readyz");
    $("health").textContent = r.ok ? "ready" : "not ready";
    $("health").className = "pill " + (r.ok ? "done" : "failed");
  } catch (e) {
    $("health").textContent = "unreachable";
    $("health").className = "pill failed";
  }
}
