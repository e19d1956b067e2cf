// Queue and jobs: the live job list with filters, one job's narration
// streamed with resume (progress as bars, data as tables) and cancel, and
// the inference queue per model (GET /v1/queue): what runs, what waits and in what order.
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
  }, f.abort.signal).catch((e) => {
    if (e.name === "AbortError") return;
    appendLog($("nlog"), el("div", { class: "lvl-error" }, e.message));
    $("nstate").textContent = e.status === 404 ? "not found" : "unreachable";
    $("nstate").className = "pill failed";
  });
  if (location.hash !== "#/jobs/" + encodeURIComponent(id)) history.replaceState(null, "", "#/jobs/" + encodeURIComponent(id));
}

function closeJob() {
  if (jobs.follow) jobs.follow.abort.abort();
  jobs.follow = null;
  $("narration").hidden = true;
  history.replaceState(null, "", "#/jobs");
}

function queueView(queues) {
  if (!queues.length) return el("p", { class: "muted" }, "No inference request is waiting or running.");
  return el("div", { class: "cards" }, queues.map((q) =>
    el("article", { class: "card", "aria-label": "queue of " + q.model },
      el("h4", {}, q.model, " ", el("span", { class: "muted" },
        `${q.running} running${q.capacity ? " of " + q.capacity : ""}, ${q.waiting.length} waiting`)),
      el("ol", {}, q.waiting.map((w) => el("li", {},
        w.job_id ? el("a", { href: "#/jobs/" + w.job_id, class: "mono" }, w.job_id) : el("span", { class: "muted" }, "another key's request"),
        ` ${w.owner_name || w.owner || ""}${w.priority ? " · priority " + w.priority : ""} · since ${new Date(w.created_at).toLocaleTimeString()}`))))));
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
    const [list, ql] = await Promise.all([api("GET", "/v1/jobs?" + q), api("GET", "/v1/queue")]);
    const queues = ql.queues || [];
    fill($("queue"), queues.map((q) => [q.model, q.running, q.capacity, ...q.waiting.map((w) => w.job_id + w.position)]), () => [queueView(queues)]);
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
