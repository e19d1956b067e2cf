// Queue and jobs: the live job list with filters, one job's narration
// streamed with resume (progress as bars, data as tables) and cancel, and
// the inference queue per model as far as the job list shows it.
"use strict";

const jobs = { follow: null };

function openJob(id) {
  if (jobs.follow && jobs.follow.id === id) return;
  if (jobs.follow) jobs.follow.abort.abort();
  jobs.follow = { id, abort: new AbortController() };
  $("narration").hidden = false;
  $("njob").textContent = id;
  $("nstate").textContent = "live";
  $("nstate").className = "pill running";
  $("nlog").replaceChildren();
  const f = jobs.follow;
  followJob(id, (kind, ev) => {
    appendLog($("nlog"), narrationLine(kind, ev));
    if (kind === "end") { $("nstate").textContent = ev.state; $("nstate").className = "pill " + ev.state; }
  }, f.abort.signal).catch((e) => appendLog($("nlog"), el("div", { class: "lvl-error" }, e.message)));
  if (location.hash !== "#/jobs/" + encodeURIComponent(id)) history.replaceState(null, "", "#/jobs/" + encodeURIComponent(id));
}

function closeJob() {
  if (jobs.follow) jobs.follow.abort.abort();
  jobs.follow = null;
  $("narration").hidden = true;
  history.replaceState(null, "", "#/jobs");
}

function queueView(list) {
  const waiting = list;
  if (!waiting.length) return el("p", { class: "muted" }, "No inference request is waiting or running.");
  const byModel = {};
  for (const j of waiting) (byModel[(j.request && j.request.model) || "?"] ||= []).push(j);
  return el("div", { class: "cards" }, Object.entries(byModel).sort().map(([model, js]) => {
    js.sort((a, b) => new Date(a.created_at) - new Date(b.created_at));
    const queued = js.filter((j) => j.state === "queued").length;
    return el("article", { class: "card", "aria-label": "queue of " + model },
      el("h4", {}, model, " ", el("span", { class: "muted" }, `${js.length - queued} running, ${queued} waiting`)),
      el("ol", {}, js.map((j) => el("li", {}, el("a", { href: "#/jobs/" + j.job_id, class: "mono" }, j.job_id), " ",
        el("span", { class: j.state }, j.state), ` ${j.owner_name || j.owner || ""} · since ${new Date(j.created_at).toLocaleTimeString()}`))));
  }));
}

rb.pages.jobs = {
  title: "Queue & jobs",
  enter(args) { if (args[0]) openJob(args[0]); else if (jobs.follow) closeJob(); },
  leave() { if (jobs.follow) jobs.follow.abort.abort(); jobs.follow = null; $("narration").hidden = true; },
  async refresh() {
    const q = new URLSearchParams({ limit: "100" });
    if ($("jf-state").value) q.set("state", $("jf-state").value);
    if ($("jf-op").value) q.set("operation", $("jf-op").value);
    if ($("jf-hive").value.trim()) q.set("hive", $("jf-hive").value.trim());
    const states = ["queued", "dispatched", "running"];
    const [list, ...infer] = await Promise.all([api("GET", "/v1/jobs?" + q),
      ...states.map((s) => api("GET", `/v1/jobs?operation=infer&state=${s}&limit=10000`))]);
    const waiting = infer.flatMap((l) => l.jobs || []);
    fill($("queue"), waiting.map((j) => [j.job_id, j.state]), () => [queueView(waiting)]);
    const js = list.jobs || [];
    fill($("jobs").tBodies[0], js.map((j) => [j.job_id, j.state, j.attempt, j.error]), () => js.map((j) => el("tr", { class: "job" },
      el("td", { class: "mono" }, el("a", { href: "#/jobs/" + j.job_id }, j.job_id)), el("td", {}, j.operation), el("td", {}, j.hive || ""),
      el("td", { class: j.state }, j.state + (j.attempt > 1 ? ` (attempt ${j.attempt})` : "")),
      el("td", {}, new Date(j.created_at).toLocaleTimeString()), el("td", {}, since(j.created_at, j.finished_at)),
      el("td", {}, j.error || ""))));
  },
};

$("ncancel").addEventListener("click", async () => {
  if (!jobs.follow) return;
  try { await api("DELETE", "/v1/jobs/" + encodeURIComponent(jobs.follow.id)); } catch (err) { showError(err.message); }
});
$("nclose").addEventListener("click", closeJob);
for (const id of ["jf-state", "jf-op", "jf-hive"]) $(id).addEventListener("change", tick);
$("jobfilter").addEventListener("submit", (e) => { e.preventDefault(); tick(); });

$("submit").addEventListener("submit", async (e) => {
  e.preventDefault();
  let req = {};
  try {
    req = $("op-fields").value.trim() ? JSON.parse($("op-fields").value) : {};
  } catch (err) {
    showError("fields: not JSON: " + err.message);
    return;
  }
  req.operation = $("op").value;
  if ($("op-hive").value.trim()) req.hive = $("op-hive").value.trim();
  try {
    const out = await api("POST", "/v1/jobs", req);
    showError("");
    location.hash = "#/jobs/" + encodeURIComponent(out.job_id);
  } catch (err) {
    showError(err.message);
  }
});
