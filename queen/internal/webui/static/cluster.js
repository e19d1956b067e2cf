// Cluster: each hive as a card with its GPUs' memory and utilisation, their
// temperature and power, a chart of the last 15 minutes per GPU from the
// queen's GPU history, and the hive's workers and models.
"use strict";

// gpuChart draws utilisation and memory (both in percent) over the window
// ending now as two SVG polylines.
function gpuChart(samples, windowS, label) {
  const W = 300, H = 80, now = Date.now(), from = now - windowS * 1000;
  const x = (t) => (((new Date(t) - from) / (windowS * 1000)) * W).toFixed(1);
  const y = (pct) => (H - (Math.max(0, Math.min(100, pct)) / 100) * H).toFixed(1);
  const util = samples.map((s) => x(s.time) + "," + y(s.util_percent)).join(" ");
  const mem = samples.map((s) => x(s.time) + "," + y(s.mem_total_bytes ? (100 * s.mem_used_bytes) / s.mem_total_bytes : 0)).join(" ");
  const last = samples[samples.length - 1];
  const desc = last ? `${samples.length} samples; now ${last.util_percent}% busy, ${bytes(last.mem_used_bytes)} of ${bytes(last.mem_total_bytes)}` : "no samples yet";
  const grid = [25, 50, 75].map((p) => svg("line", { x1: 0, x2: W, y1: y(p), y2: y(p), class: "grid" }));
  // The newest readings as dots, so a chart of a hive that just joined
  // shows something at its right edge.
  const dots = last ? [svg("circle", { cx: x(last.time), cy: y(last.util_percent), r: 2.5, class: "util" }),
    svg("circle", { cx: x(last.time), cy: y(last.mem_total_bytes ? (100 * last.mem_used_bytes) / last.mem_total_bytes : 0), r: 2.5, class: "mem" })] : [];
  return svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": `${label}: ${desc}`, preserveAspectRatio: "none" },
    svg("title", {}, `${label}: ${desc}`), ...grid,
    svg("polyline", { points: mem, class: "mem" }), svg("polyline", { points: util, class: "util" }), ...dots);
}

// span says what the samples in the window range over, since a short or
// flat history is hard to read from the lines alone.
function span(samples) {
  if (samples.length < 2) return "";
  const u = samples.map((s) => s.util_percent);
  const m = samples.map((s) => (s.mem_total_bytes ? (100 * s.mem_used_bytes) / s.mem_total_bytes : 0));
  const range = (xs) => (Math.min(...xs) === Math.max(...xs) ? Math.min(...xs).toFixed(0) : Math.min(...xs).toFixed(0) + "–" + Math.max(...xs).toFixed(0)) + "%";
  const mins = Math.max(1, Math.round((new Date(samples[samples.length - 1].time) - new Date(samples[0].time)) / 60000));
  return ` · over ${samples.length} samples (${mins < 2 ? "under 2" : mins} min): busy ${range(u)}, memory ${range(m)}`;
}

function hiveCard(h, hist) {
  const inv = h.inventory || {};
  const byIndex = {};
  for (const g of (hist && hist.gpus) || []) byIndex[g.index] = g.samples || [];
  const age = h.heartbeat_at ? Math.max(0, Math.round((Date.now() - new Date(h.heartbeat_at)) / 1000)) + " s ago" : "";
  const gpus = (inv.gpus || []).map((g) => {
    const label = `GPU ${g.index} ${g.name}`;
    return el("div", { class: "gpu" },
      el("h4", {}, label),
      meter("memory", g.mem_used_bytes, g.mem_total_bytes || 1, `${bytes(g.mem_used_bytes)} / ${bytes(g.mem_total_bytes)}`),
      meter("busy", g.util_percent, 100, `${g.util_percent}%`),
      el("p", { class: "muted" }, [g.temperature_c ? `${g.temperature_c} °C` : "", g.power_watts ? `${g.power_watts} W` : ""].filter(Boolean).join(" · ")),
      gpuChart(byIndex[g.index] || [], (hist && hist.window_s) || 900, label + " last 15 minutes"),
      el("p", { class: "legend muted" }, el("span", { class: "k-util" }, "■ busy %"), " ", el("span", { class: "k-mem" }, "■ memory %"),
        " · last 15 min", span(byIndex[g.index] || [])));
  });
  const ram = inv.ram && inv.ram.total_bytes ? `${bytes(inv.ram.total_bytes - inv.ram.free_bytes)} / ${bytes(inv.ram.total_bytes)} RAM` : "";
  const workers = (h.workers || []).map((w) => el("li", {}, el("span", { class: "mono" }, w.worker_id), ` ${w.model_id} `, el("span", { class: w.state }, w.state),
    w.gpus && w.gpus.length ? ` on GPU ${w.gpus.join(",")}` : ""));
  const models = (h.models || []).map((m) => el("li", {}, el("span", { class: "mono" }, m.model_id), ` ${bytes(m.size_bytes)}`));
  return el("article", { class: "card", "aria-label": "hive " + h.id },
    el("h3", {}, h.id, " ", el("span", { class: "pill done" }, "live"), " ", el("span", { class: "muted" }, `v${h.version || "?"} · heartbeat ${age}`)),
    el("p", { class: "muted" }, `${h.slots_free} of ${h.slots} job slots free · ${h.infer_running || 0} inferences` +
      (inv.cpu && inv.cpu.cores ? ` · ${inv.cpu.cores} cores, load ${inv.cpu.load1}` : "") + (ram ? " · " + ram : "")),
    el("div", { class: "gpus" }, gpus.length ? gpus : el("p", { class: "muted" }, "no GPUs")),
    el("div", { class: "cols" },
      el("div", {}, el("h4", {}, "Workers"), workers.length ? el("ul", {}, workers) : el("p", { class: "muted" }, "none")),
      el("div", {}, el("h4", {}, "Models"), models.length ? el("ul", {}, models) : el("p", { class: "muted" }, "none"))));
}

rb.pages.cluster = {
  title: "Cluster",
  async refresh() {
    const list = (await api("GET", "/v1/hives")).hives || [];
    hiveOptions(list);
    const hist = await Promise.all(list.map((h) => api("GET", `/v1/hives/${encodeURIComponent(h.id)}/gpu-history`).catch(() => null)));
    $("hives").replaceChildren(...list.map((h, i) => hiveCard(h, hist[i])));
    const gpus = list.reduce((n, h) => n + ((h.inventory && h.inventory.gpus) || []).length, 0);
    $("cluster-summary").textContent = list.length ? `${list.length} ${list.length === 1 ? "hive" : "hives"}, ${gpus} ${gpus === 1 ? "GPU" : "GPUs"}, updated ${new Date().toLocaleTimeString()}` : "No hive is online.";
    $("hivetable").tBodies[0].replaceChildren(...list.map((h) => el("tr", {},
      el("td", { class: "mono" }, h.id), el("td", {}, `${h.slots_free} of ${h.slots}`),
      el("td", { class: "mono" }, ((h.inventory && h.inventory.gpus) || []).map((g) => `${g.index}: ${g.name} ${bytes(g.mem_used_bytes)} / ${bytes(g.mem_total_bytes)}, ${g.util_percent}%`).join("\n") || "none"),
      el("td", {}, (h.models || []).map((m) => m.model_id).join(", ")),
      el("td", { class: "mono" }, (h.workers || []).map((w) => `${w.worker_id} ${w.model_id} ${w.state}`).join("\n")),
      el("td", {}, Object.entries(h.labels || {}).map(([k, v]) => k + "=" + v).join(", ")))));
  },
};
