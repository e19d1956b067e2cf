// Playground: chat with a model through the OpenAI-compatible API with
// streamed tokens, stop mid-generation, time to first token and tokens per
// second, and the same request as curl, Python and Go code.
"use strict";

const play = { history: [], abort: null, lang: "curl" };

function chatBody(stream) {
  const messages = [];
  if ($("pl-system").value.trim()) messages.push({ role: "system", content: $("pl-system").value.trim() });
  messages.push(...play.history);
  const body = { model: $("pl-model").value, messages, max_tokens: Number($("pl-max").value) || undefined,
    temperature: $("pl-temp").value === "" ? undefined : Number($("pl-temp").value) };
  if (stream) { body.stream = true; body.stream_options = { include_usage: true }; }
  return body;
}

// code shows the request being sent (or the next one) in the chosen language.
function showCode() {
  const hist = play.history.length ? play.history : [{ role: "user", content: $("pl-msg").value || "Hello!" }];
  const saved = play.history;
  play.history = hist;
  const body = chatBody(true);
  play.history = saved;
  const base = location.origin + "/v1";
  const q = JSON.stringify;
  let text = "";
  if (play.lang === "curl") {
    text = `curl -N ${base}/chat/completions \\\n  -H "Authorization: Bearer $RBEE_API_KEY" \\\n  -H "Content-Type: application/json" \\\n  -d '${JSON.stringify(body, null, 2).replace(/'/g, "'\\''")}'`;
  } else if (play.lang === "python") {
    text = `import os\nfrom openai import OpenAI\n\nclient = OpenAI(base_url=${q(base)}, api_key=os.environ["RBEE_API_KEY"])\n` +
      `stream = client.chat.completions.create(\n    model=${q(body.model)},\n    messages=[\n` +
      body.messages.map((m) => `        {"role": ${q(m.role)}, "content": ${q(m.content)}},\n`).join("") +
      `    ],\n` + (body.max_tokens ? `    max_tokens=${body.max_tokens},\n` : "") + (body.temperature != null ? `    temperature=${body.temperature},\n` : "") +
      `    stream=True,\n)\nfor chunk in stream:\n    if chunk.choices:\n        print(chunk.choices[0].delta.content or "", end="", flush=True)\n`;
  } else {
    const role = { system: "SystemMessage", user: "UserMessage", assistant: "AssistantMessage" };
    text = `package main\n\nimport (\n\t"context"\n\t"fmt"\n\t"os"\n\n\t"github.com/openai/openai-go/v3"\n\t"github.com/openai/openai-go/v3/option"\n)\n\n` +
      `func main() {\n\tclient := openai.NewClient(option.WithBaseURL(${q(base)}), option.WithAPIKey(os.Getenv("RBEE_API_KEY")))\n` +
      `\tstream := client.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{\n\t\tModel: ${q(body.model)},\n` +
      `\t\tMessages: []openai.ChatCompletionMessageParamUnion{\n` + body.messages.map((m) => `\t\t\topenai.${role[m.role] || "UserMessage"}(${q(m.content)}),\n`).join("") + `\t\t},\n` +
      (body.max_tokens ? `\t\tMaxTokens: openai.Int(${body.max_tokens}),\n` : "") + (body.temperature != null ? `\t\tTemperature: openai.Float(${body.temperature}),\n` : "") +
      `\t})\n\tfor stream.Next() {\n\t\tif c := stream.Current(); len(c.Choices) > 0 {\n\t\t\tfmt.Print(c.Choices[0].Delta.Content)\n\t\t}\n\t}\n` +
      `\tif err := stream.Err(); err != nil {\n\t\tfmt.Fprintln(os.Stderr, err)\n\t\tos.Exit(1)\n\t}\n}\n`;
  }
  $("pl-code").textContent = text;
}

function bubble(role, text) {
  const b = el("div", { class: "msg " + role }, el("span", { class: "role" }, role), el("div", { class: "content" }, text));
  $("transcript").append(b);
  return b.querySelector(".content");
}

async function send() {
  const msg = $("pl-msg").value.trim();
  if (!msg || play.abort) return;
  if (!$("pl-model").value) { showError("No model to chat with: download one on the Models page."); return; }
  play.history.push({ role: "user", content: msg });
  bubble("user", msg);
  $("pl-msg").value = "";
  const out = bubble("assistant", "");
  out.classList.add("streaming");
  showCode();
  play.abort = new AbortController();
  $("pl-send").disabled = true;
  $("pl-stop").disabled = false;
  const start = performance.now();
  let first = 0, chunks = 0, usage = null, text = "";
  const stats = () => {
    const now = performance.now();
    const toks = usage ? usage.completion_tokens : chunks;
    const gen = first ? (now - first) / 1000 : 0;
    $("pl-stats").textContent = (first ? `first token ${Math.round(first - start)} ms · ` : "waiting for the first token… ") +
      `${toks} tokens` + (gen > 0 && toks > 1 ? ` · ${((toks - 1) / gen).toFixed(1)} tokens/s` : "");
  };
  try {
    const resp = await fetch("/v1/chat/completions", { method: "POST", signal: play.abort.signal,
      headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }), body: JSON.stringify(chatBody(true)) });
    if (!resp.ok) {
      let data = null;
      try { data = await resp.json(); } catch (e) { /* not JSON */ }
      throw apiError(resp, data);
    }
    let whole = false;
    await sseFrames(resp, (f) => {
      if (f.data === "[DONE]") { whole = true; return false; }
      const c = JSON.parse(f.data);
      // A generation that fails after its first tokens says so in the
      // stream (OpenAI's error shape), then ends it.
      if (c.error) throw new Error(c.error.message || "the generation failed");
      if (c.usage) usage = c.usage;
      const d = c.choices && c.choices[0] && c.choices[0].delta;
      if (d && d.content) {
        if (!first) first = performance.now();
        chunks++;
        text += d.content;
        out.textContent = text;
      }
      stats();
      return true;
    });
    if (!whole) throw new Error("the answer broke off before its end");
    play.history.push({ role: "assistant", content: text });
  } catch (e) {
    if (e.name === "AbortError") {
      out.append(el("em", { class: "muted" }, " [stopped]"));
      if (text) play.history.push({ role: "assistant", content: text });
    } else {
      out.append(el("em", { class: "failed" }, " " + e.message));
      play.history.pop();
    }
  } finally {
    stats();
    out.classList.remove("streaming");
    play.abort = null;
    $("pl-send").disabled = false;
    $("pl-stop").disabled = true;
  }
}

rb.pages.playground = {
  title: "Playground",
  loaded: false,
  async refresh() {
    const list = (await api("GET", "/v1/models")).data || [];
    const sel = $("pl-model"), had = sel.value;
    const ids = list.map((m) => m.id);
    if (ids.join() !== [...sel.options].map((o) => o.value).join()) {
      sel.replaceChildren(...ids.map((id) => el("option", { value: id }, id)));
      if (ids.includes(had)) sel.value = had;
    }
    if (!this.loaded) { this.loaded = true; showCode(); }
  },
};

$("chatform").addEventListener("submit", (e) => { e.preventDefault(); send(); });
$("pl-msg").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); send(); } });
$("pl-stop").addEventListener("click", () => { if (play.abort) play.abort.abort(); });
$("pl-clear").addEventListener("click", () => { play.history = []; $("transcript").replaceChildren(); $("pl-stats").textContent = ""; showCode(); });
for (const id of ["pl-model", "pl-max", "pl-temp", "pl-system", "pl-msg"]) $(id).addEventListener("change", showCode);
for (const tab of document.querySelectorAll("[role=tab]")) {
  tab.addEventListener("click", () => {
    play.lang = tab.dataset.lang;
    for (const t of document.querySelectorAll("[role=tab]")) t.setAttribute("aria-selected", String(t === tab));
    showCode();
  });
}
$("pl-copy").addEventListener("click", async () => {
  try { await navigator.clipboard.writeText($("pl-code").textContent); $("pl-copy").textContent = "Copied"; } catch (e) { showError("copy: " + e.message); }
  setTimeout(() => { $("pl-copy").textContent = "Copy"; }, 1500);
});
