// Keys and usage: admins create and revoke keys with scopes and limits;
// every key sees tokens per key and model per day from GET /v1/usage, one
// request per day of the range.
"use strict";

const usage = { sig: "", at: 0 };

function day(d) { return d.toISOString().slice(0, 10); }

// usageChart stacks each day's tokens per key and model as SVG bars.
function usageChart(days, rows) {
  const series = [...new Set(rows.map((r) => `${r.key_name || r.key_id} · ${r.model}`))];
  const W = 600, H = 160, pad = 18, bw = (W / days.length) * 0.7;
  const totals = days.map((d) => rows.filter((r) => r.day === d).reduce((n, r) => n + r.prompt_tokens + r.completion_tokens, 0));
  const max = Math.max(1, ...totals);
  const bars = [];
  days.forEach((d, i) => {
    let y = H - pad;
    const x = (i * W) / days.length + ((W / days.length) - bw) / 2;
    for (const r of rows.filter((r) => r.day === d)) {
      const h = ((r.prompt_tokens + r.completion_tokens) / max) * (H - 2 * pad);
      y -= h;
      const s = `${r.key_name || r.key_id} · ${r.model}`;
      bars.push(svg("rect", { x: x.toFixed(1), y: y.toFixed(1), width: bw.toFixed(1), height: h.toFixed(1), class: "s" + (series.indexOf(s) % 8) },
        svg("title", {}, `${d} ${s}: ${num(r.prompt_tokens + r.completion_tokens)} tokens`)));
    }
    bars.push(svg("text", { x: (x + bw / 2).toFixed(1), y: H - 4, "text-anchor": "middle", class: "axis" }, d.slice(5)));
  });
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart usage", role: "img",
    "aria-label": `tokens per day, most ${num(max)} in a day` }, svg("title", {}, `tokens per day; most ${num(max)}`), ...bars);
  const legend = el("p", { class: "legend" }, series.map((s, i) => el("span", { class: "k-s" + (i % 8) }, "■ " + s + " ")));
  return [chart, series.length ? legend : el("p", { class: "muted" }, "No tokens used in this range.")];
}

async function refreshUsage(force) {
  const n = Number($("u-days").value), model = $("u-model").value.trim();
  const sig = n + "|" + model;
  if (!force && sig === usage.sig && Date.now() - usage.at < 10000) return;
  usage.sig = sig;
  usage.at = Date.now();
  const days = [];
  for (let i = n - 1; i >= 0; i--) days.push(day(new Date(Date.now() - i * 86400000)));
  const lists = await Promise.all(days.map((d) => {
    const q = new URLSearchParams({ from: d, to: d });
    if (model) q.set("model", model);
    return api("GET", "/v1/usage?" + q);
  }));
  const rows = lists.flatMap((l, i) => (l.usage || []).map((r) => Object.assign({ day: days[i] }, r)));
  $("uchart").replaceChildren(...usageChart(days, rows));
  $("usage").tBodies[0].replaceChildren(...rows.slice().reverse().map((r) => el("tr", {},
    el("td", {}, r.day), el("td", {}, r.key_name || r.key_id), el("td", {}, r.model), el("td", {}, num(r.requests)),
    el("td", {}, num(r.prompt_tokens)), el("td", {}, num(r.completion_tokens)))));
}

function limits(k) {
  return [k.rpm ? `${k.rpm} req/min` : "", k.tpm ? `${k.tpm} tokens/min` : "", k.max_concurrent ? `${k.max_concurrent} at once` : ""].filter(Boolean).join(", ") || "none";
}

rb.pages.keys = {
  title: "Keys & usage",
  async refresh() {
    let list = null;
    try {
      list = await api("GET", "/v1/keys");
    } catch (e) {
      if (e.status !== 403) throw e;
    }
    $("keys-admin").hidden = !list;
    $("keys-own").hidden = !!list;
    if (list) {
      const ks = list.keys || [];
      fill($("keys").tBodies[0], ks, () => ks.map((k) => el("tr", {},
        el("td", { class: "mono" }, k.id), el("td", {}, k.name), el("td", {}, (k.scopes || []).join(", ")), el("td", {}, limits(k)),
        el("td", {}, new Date(k.created_at).toLocaleString()),
        el("td", {}, el("button", { type: "button", "aria-label": "revoke " + k.name, onclick: async () => {
          if (!confirm(`Revoke key ${k.name} (${k.id})? Clients using it are refused at once.`)) return;
          try { await api("DELETE", "/v1/keys/" + encodeURIComponent(k.id)); tick(); } catch (err) { showError(err.message); }
        } }, "Revoke")))));
    }
    await refreshUsage(false);
  },
};

$("kform").addEventListener("submit", async (e) => {
  e.preventDefault();
  const req = { name: $("k-name").value.trim(), scopes: [...document.querySelectorAll("input[name=scope]:checked")].map((i) => i.value) };
  for (const [id, f] of [["k-rpm", "rpm"], ["k-tpm", "tpm"], ["k-conc", "max_concurrent"]]) if (Number($(id).value) > 0) req[f] = Number($(id).value);
  try {
    const k = await api("POST", "/v1/keys", req);
    $("k-secret").textContent = k.key;
    $("k-new").hidden = false;
    $("k-name").value = "";
    showError("");
    tick();
  } catch (err) {
    showError(err.message);
  }
});
$("k-copy").addEventListener("click", () => navigator.clipboard.writeText($("k-secret").textContent).catch((e) => showError("copy: " + e.message)));
for (const id of ["u-days", "u-model"]) $(id).addEventListener("change", () => refreshUsage(true).catch((e) => showError(e.message)));
$("uform").addEventListener("submit", (e) => { e.preventDefault(); refreshUsage(true).catch((er) => showError(er.message)); });
