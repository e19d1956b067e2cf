// rbee's browser UI: lists hives and jobs, submits jobs and follows a job's
// narration live. It speaks the queen's public HTTP API only; the SSE stream
// is read with fetch so that the API key travels in the Authorization
// header, and a dropped connection resumes with Last-Event-ID.
"use strict";

const $ = (id) => document.getElementById(id);
let key = localStorage.getItem("rbee-key") || "";
let follow = null; // the job whose narration is shown: {id, abort}

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function showError(msg) {
  const el = $("error");
  el.textContent = msg;
  el.hidden = !msg;
}

// api calls the queen and returns the decoded JSON body; errors carry the
// queen's {"error": {"code", "message"}} text.
async function api(method, path, body) {
  const opts = { method, headers: headers(body ? { "Content-Type": "application/json" } : {}) };
  if (body) opts.body = JSON.stringify(body);
  const resp = await fetch(path, opts);
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (!resp.ok) {
    const msg = data && data.error ? data.error.message : resp.status + " " + resp.statusText;
    const err = new Error(msg);
    err.status = resp.status;
    throw err;
  }
  return data;
}

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(k == null ? "" : String(k)));
  return e;
}

const gib = (b) => (b / (1 << 30)).toFixed(1) + " GiB";
const since = (a, b) => {
  if (!a || !b) return "";
  const ms = new Date(b) - new Date(a);
  return ms < 1000 ? ms + " ms" : (ms / 1000).toFixed(1) + " s";
};

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

async function refreshHives() {
  const list = await api("GET", "/v1/hives");
  const body = $("hives").tBodies[0];
  body.replaceChildren(...(list.hives || []).map((h) => {
    const inv = h.inventory || {};
    const gpus = (inv.gpus || []).map((g) => `${g.index}: ${g.name} ${gib(g.mem_used_bytes)} / ${gib(g.mem_total_bytes)}, ${g.util_percent}%`).join("\n") || "none";
    const cpu = inv.cpu ? `${inv.cpu.cores || ""} cores` : "";
    const ram = inv.ram ? `${gib(inv.ram.total_bytes - inv.ram.free_bytes)} / ${gib(inv.ram.total_bytes)} RAM` : "";
    const models = (h.models || []).map((m) => m.model_id).join(", ");
    const workers = (h.workers || []).map((w) => `${w.worker_id} ${w.model_id} ${w.state}`).join("\n");
    const labels = Object.entries(h.labels || {}).map(([k, v]) => k + "=" + v).join(", ");
    return el("tr", {}, el("td", { class: "mono" }, h.id), el("td", {}, `${h.slots_free} of ${h.slots}`),
      el("td", { class: "mono" }, gpus), el("td", {}, cpu + (cpu && ram ? ", " : "") + ram),
      el("td", {}, models), el("td", { class: "mono" }, workers), el("td", {}, labels));
  }));
}

async function refreshJobs() {
  const state = $("state").value;
  const list = await api("GET", "/v1/jobs?limit=50" + (state ? "&state=" + encodeURIComponent(state) : ""));
  const body = $("jobs").tBodies[0];
  body.replaceChildren(...(list.jobs || []).map((j) => el("tr", { class: "job", onclick: () => openJob(j.job_id) },
    el("td", { class: "mono" }, j.job_id), el("td", {}, j.operation), el("td", {}, j.hive || ""),
    el("td", { class: j.state }, j.state + (j.attempt > 1 ? ` (attempt ${j.attempt})` : "")),
    el("td", {}, new Date(j.created_at).toLocaleTimeString()), el("td", {}, since(j.created_at, j.finished_at)),
    el("td", {}, j.error || ""), el("td", {}, "view"))));
}

async function refresh() {
  await refreshHealth();
  try {
    await Promise.all([refreshHives(), refreshJobs()]);
    showError("");
  } catch (e) {
    showError(e.status === 401 || e.status === 403 ? "The queen wants an API key with the read scope: " + e.message : e.message);
  }
}

// line renders one narration event.
function line(kind, ev) {
  const t = ev.time ? new Date(ev.time).toLocaleTimeString() : "";
  const span = el("div", { class: "lvl-" + (ev.level || "info") },
    el("span", { class: "meta" }, `${t} #${ev.seq} ${ev.actor || ""} ${ev.action || ""} `), ev.message || "");
  if (ev.progress && ev.progress.total) {
    const pct = Math.min(100, (100 * ev.progress.done) / ev.progress.total);
    const bar = el("span", { class: "bar" }, el("span", {}));
    bar.firstChild.style.width = pct.toFixed(1) + "%";
    span.append(" ", bar, ` ${pct.toFixed(0)}% of ${ev.progress.total} ${ev.progress.unit || ""}`);
  }
  if (kind === "data" && ev.data !== undefined) span.append(el("div", {}, JSON.stringify(ev.data, null, 2)));
  if (kind === "end") span.append(` → ${ev.state}${ev.error ? ": " + ev.error : ""}`);
  return span;
}

// stream follows a job's SSE stream to [DONE], resuming after drops.
async function stream(id, signal) {
  const log = $("nlog");
  let last = 0;
  for (let tries = 0; !signal.aborted; tries++) {
    try {
      const h = headers({ Accept: "text/event-stream" });
      if (last) h["Last-Event-ID"] = String(last);
      const resp = await fetch(`/v1/jobs/${encodeURIComponent(id)}/stream`, { headers: h, signal });
      if (!resp.ok) {
        let msg = resp.status + "";
        try { msg = (await resp.json()).error.message; } catch (e) { /* not JSON */ }
        log.append(el("div", { class: "lvl-error" }, msg));
        return;
      }
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const frame = buf.slice(0, i);
          buf = buf.slice(i + 2);
          let fid = 0, kind = "narration", data = "";
          for (const l of frame.split("\n")) {
            if (l.startsWith("id: ")) fid = Number(l.slice(4));
            else if (l.startsWith("event: ")) kind = l.slice(7);
            else if (l.startsWith("data: ")) data += l.slice(6);
          }
          if (data === "[DONE]") return;
          if (!data) continue; // a heartbeat comment
          if (fid) last = fid;
          const ev = JSON.parse(data);
          const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
          log.append(line(kind, ev));
          if (atEnd) log.scrollTop = log.scrollHeight;
          if (kind === "end") {
            $("nstate").textContent = ev.state;
            $("nstate").className = "pill " + ev.state;
          }
        }
      }
    } catch (e) {
      if (signal.aborted) return;
    }
    await new Promise((r) => setTimeout(r, Math.min(5000, 250 * (tries + 1))));
  }
}

function openJob(id) {
  if (follow) follow.abort.abort();
  follow = { id, abort: new AbortController() };
  $("narration").hidden = false;
  $("njob").textContent = id;
  $("nstate").textContent = "live";
  $("nstate").className = "pill running";
  $("nlog").replaceChildren();
  stream(id, follow.abort.signal);
  $("narration").scrollIntoView({ behavior: "smooth" });
}

$("keyform").addEventListener("submit", (e) => {
  e.preventDefault();
  key = $("key").value.trim();
  if (key) localStorage.setItem("rbee-key", key); else localStorage.removeItem("rbee-key");
  $("key").value = "";
  refresh();
});

$("submit").addEventListener("submit", async (e) => {
  e.preventDefault();
  let req = {};
  try {
    req = $("fields").value.trim() ? JSON.parse($("fields").value) : {};
  } catch (err) {
    showError("fields: not JSON: " + err.message);
    return;
  }
  req.operation = $("op").value;
  if ($("hive").value.trim()) req.hive = $("hive").value.trim();
  try {
    const out = await api("POST", "/v1/jobs", req);
    showError("");
    openJob(out.job_id);
    refreshJobs();
  } catch (err) {
    showError(err.message);
  }
});

$("ncancel").addEventListener("click", async () => {
  if (!follow) return;
  try { await api("DELETE", "/v1/jobs/" + encodeURIComponent(follow.id)); } catch (err) { showError(err.message); }
});
$("nclose").addEventListener("click", () => {
  if (follow) follow.abort.abort();
  follow = null;
  $("narration").hidden = true;
});
$("state").addEventListener("change", refreshJobs);

refresh();
setInterval(refresh, 2000);
