// Models and workers: download a model with a progress bar from the
// download job's progress events, delete one, read its GGUF facts; spawn a
// worker on chosen GPUs, stop it, follow its log. Every action is a job on
// POST /v1/jobs; the lists come from the hives' heartbeats.
"use strict";

const models = { hives: [], log: null };

function mlog(kind, ev) { appendLog($("mlog"), narrationLine(kind, ev)); }

// act runs one job from this page, its narration in the page's log.
async function act(req, onEvent) {
  $("mlog").replaceChildren(el("div", { class: "meta" }, `${req.operation} on ${req.hive || "any hive"}`));
  try {
    const r = await runJob(req, (kind, ev) => { mlog(kind, ev); if (onEvent) onEvent(kind, ev); });
    if (r.end && r.end.state !== "done") throw new Error(`${req.operation} ${r.end.state}: ${r.end.error || ""}`);
    return r;
  } finally {
    if (rb.page === "models") rb.pages.models.refresh().catch(() => {});
  }
}

function ggufFacts(m) {
  return [m.architecture, m.parameters ? (m.parameters >= 1e9 ? (m.parameters / 1e9).toFixed(1) + " B" : m.parameters >= 1e6 ? (m.parameters / 1e6).toFixed(1) + " M" : num(m.parameters)) + " params" : "", m.quantization,
    m.context_length ? `ctx ${num(m.context_length)}` : "", m.vram_estimate_bytes ? `~${bytes(m.vram_estimate_bytes)} VRAM` : ""].filter(Boolean).join(" · ");
}

// spawnGPUs offers the chosen hive's GPUs as checkboxes.
function spawnGPUs() {
  const h = models.hives.find((x) => x.id === $("sp-hive").value);
  const gpus = (h && h.inventory && h.inventory.gpus) || [];
  const box = $("sp-gpus");
  fill(box, [h && h.id, gpus.map((g) => [g.index, g.name])], () => [el("legend", {}, "GPUs"), ...(gpus.length ? gpus.map((g) => el("label", { class: "inline" },
    el("input", { type: "checkbox", value: String(g.index) }), ` ${g.index}: ${g.name} (${bytes(g.mem_total_bytes)})`))
    : [el("span", { class: "muted" }, "none on this hive")])]);
  const ms = (h && h.models) || [];
  const sel = $("sp-model"), had = sel.value;
  fill(sel, ms.map((m) => m.model_id), () => ms.map((m) => el("option", { value: m.model_id }, m.model_id)));
  if (ms.some((m) => m.model_id === had)) sel.value = had;
}

async function workerLog(hive, id) {
  models.log = { hive, id };
  $("wlog-box").hidden = false;
  $("wlog-id").textContent = id;
  await refreshWorkerLog();
}

// refreshWorkerLog asks the hive for the worker's record and recent output
// (a worker_get job) and shows them.
async function refreshWorkerLog() {
  const l = models.log;
  if (!l) return;
  try {
    const r = await runJob({ operation: "worker_get", hive: l.hive, worker_id: l.id });
    if (models.log !== l) return;
    const d = r.data || {};
    const lines = [`${d.worker_id} ${d.model_id} ${d.backend} ${d.state} ${d.url || ""}${d.error ? " error: " + d.error : ""}`];
    // A hive may send recent output with the record; else say where the
    // whole output is, by the data dir its heartbeat names.
    const h = models.hives.find((x) => x.id === l.hive);
    const dir = (h && h.inventory && h.inventory.disk && h.inventory.disk.path) || "<data dir>";
    if (d.logs) lines.push("", ...d.logs); else lines.push("", `(hive ${l.hive} sends no log lines; the worker's whole output is in ${dir}/workers/${l.id}.log on the hive)`);
    const log = $("wlog");
    const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.textContent = lines.join("\n");
    if (atEnd) log.scrollTop = log.scrollHeight;
  } catch (e) {
    $("wlog").textContent = e.message;
  }
}

rb.pages.models = {
  title: "Models & workers",
  tick: 0,
  async refresh() {
    const hives = (await api("GET", "/v1/hives")).hives || [];
    models.hives = hives;
    hiveOptions(hives);
    spawnGPUs();
    const ms = hives.flatMap((h) => (h.models || []).map((m) => Object.assign({ hive: h.id }, m)));
    fill($("models").tBodies[0], ms, () => ms.map((m) => el("tr", {},
      el("td", { class: "mono" }, m.model_id), el("td", {}, m.hive), el("td", {}, bytes(m.size_bytes)),
      el("td", {}, ggufFacts(m)), el("td", { class: "mono small" }, m.source || "", m.sha256 ? el("div", {}, "sha256 " + m.sha256.slice(0, 16) + "…") : ""),
      el("td", {}, el("button", { type: "button", "aria-label": `spawn a worker for ${m.model_id} on ${m.hive}`, onclick: () => { $("sp-hive").value = m.hive; spawnGPUs(); $("sp-model").value = m.model_id; $("sp-ctx").focus(); } }, "Spawn…"), " ",
        el("button", { type: "button", "aria-label": `delete ${m.model_id} on ${m.hive}`, onclick: () => {
          if (confirm(`Delete ${m.model_id} from ${m.hive}?`)) act({ operation: "model_delete", hive: m.hive, model_id: m.model_id }).catch((e) => showError(e.message));
        } }, "Delete")))));
    const ws = hives.flatMap((h) => (h.workers || []).map((w) => Object.assign({ hive: h.id }, w)));
    fill($("workers").tBodies[0], ws, () => ws.map((w) => el("tr", { "data-worker": w.worker_id },
      el("td", { class: "mono" }, w.worker_id), el("td", {}, w.hive), el("td", {}, w.model_id), el("td", {}, w.backend),
      el("td", { class: "state " + w.state }, w.state + (w.restarts ? ` (${w.restarts} restarts)` : "") + (w.error ? ": " + w.error : "")),
      el("td", {}, (w.gpus || []).join(", ") || "CPU"), el("td", {}, w.ctx_size || ""), el("td", { class: "mono" }, w.url || ""),
      el("td", {}, el("button", { type: "button", "aria-label": `log of ${w.worker_id}`, onclick: () => workerLog(w.hive, w.worker_id) }, "Log"), " ",
        el("button", { type: "button", "aria-label": `stop ${w.worker_id}`, onclick: () => act({ operation: "worker_stop", hive: w.hive, worker_id: w.worker_id }).catch((e) => showError(e.message)) }, "Stop")))));
    if (models.log && $("wlog-follow").checked && this.tick++ % 3 === 0) refreshWorkerLog();
  },
};

$("sp-hive").addEventListener("change", spawnGPUs);
$("wlog-close").addEventListener("click", () => { models.log = null; $("wlog-box").hidden = true; });

$("dlform").addEventListener("submit", async (e) => {
  e.preventDefault();
  const req = { operation: "model_download", hive: $("dl-hive").value, source: $("dl-source").value.trim() };
  if ($("dl-id").value.trim()) req.model_id = $("dl-id").value.trim();
  if ($("dl-sha").value.trim()) req.sha256 = $("dl-sha").value.trim().toLowerCase();
  const bar = $("dl-progress"), status = $("dl-status");
  bar.value = 0;
  status.textContent = "starting…";
  try {
    const r = await act(req, (kind, ev) => {
      if (ev.progress && ev.progress.total) {
        bar.value = Math.min(100, (100 * ev.progress.done) / ev.progress.total);
        status.textContent = `${bar.value.toFixed(0)}% · ${bytes(ev.progress.done)} of ${bytes(ev.progress.total)}`;
      } else if (ev.progress) {
        status.textContent = `${bytes(ev.progress.done)}`;
      }
    });
    bar.value = 100;
    const m = r.data || {};
    status.textContent = `done: ${m.model_id || ""} ${m.size_bytes ? bytes(m.size_bytes) : ""} ${ggufFacts(m)}`;
  } catch (err) {
    bar.value = 0;
    status.textContent = "failed: " + err.message;
  }
});

$("spform").addEventListener("submit", async (e) => {
  e.preventDefault();
  const req = { operation: "worker_spawn", hive: $("sp-hive").value, model_id: $("sp-model").value };
  if ($("sp-backend").value.trim()) req.backend = $("sp-backend").value.trim();
  if (Number($("sp-ctx").value) > 0) req.ctx_size = Number($("sp-ctx").value);
  const gpus = [...$("sp-gpus").querySelectorAll("input:checked")].map((i) => Number(i.value));
  if (gpus.length) req.gpus = gpus;
  $("sp-status").textContent = "spawning…";
  try {
    const r = await act(req);
    const w = r.data || {};
    $("sp-status").textContent = `worker ${w.worker_id} ${w.state} at ${w.url}`;
  } catch (err) {
    $("sp-status").textContent = "failed: " + err.message;
  }
});
