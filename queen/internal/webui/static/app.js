// The console's start: the API key form and the router. The pages are in
// cluster.js, models.js, play.js, jobs.js and keys.js; shared parts in
// core.js.
"use strict";

function keyState() { $("keystate").textContent = rb.key ? "key set" : "no key"; }

$("keyform").addEventListener("submit", (e) => {
  e.preventDefault();
  rb.key = $("key").value.trim();
  if (rb.key) localStorage.setItem("rbee-key", rb.key); else localStorage.removeItem("rbee-key");
  $("key").value = "";
  keyState();
  tick();
});

// Moving to another page moves the keyboard focus to its content, as a
// page load would; a change within a page (opening a job) leaves it.
window.addEventListener("hashchange", () => {
  const was = rb.page;
  route();
  if (rb.page !== was) $("main").focus({ preventScroll: true });
});
keyState();
route();
