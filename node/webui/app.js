// The exo-node web UI: a streaming chat against /v1/chat/completions and a live cluster view
// from /v1/cluster. No framework, no network access beyond this node.
"use strict";
const $ = (id) => document.getElementById(id);
const history = [];
let controller = null;

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("apikey").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  const body = document.createElement("div");
  body.className = "body";
  if (role === "user") body.textContent = text; else body.innerHTML = renderMarkdown(text);
  div.appendChild(body);
  $("messages").appendChild(div);
  $("messages").scrollTop = $("messages").scrollHeight;
  return div;
}

async function loadModels() {
  try {
    const res = await fetch("/v1/models", { headers: headers() });
    const data = await res.json();
    const select = $("model");
    const previous = select.value;
    select.innerHTML = "";
    for (const m of (data.data || [])) {
      const option = document.createElement("option");
      option.value = m.id; option.textContent = m.id;
      select.appendChild(option);
    }
    if (previous) select.value = previous;
    $("status").textContent = data.data && data.data.length ? "" : "no model loaded yet";
  } catch (e) {
    $("status").textContent = "cannot reach the node: " + e;
  }
}

async function send(text) {
  history.push({ role: "user", content: text });
  addMessage("user", text);
  const div = addMessage("assistant", "");
  div.id = "answer-" + history.length;
  const body = div.querySelector(".body");
  const meta = document.createElement("div");
  meta.className = "meta";
  div.appendChild(meta);
  controller = new AbortController();
  $("send").disabled = true; $("stop").disabled = false;
  let answer = "";
  const started = performance.now();
  let tokens = 0;
  try {
    const res = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), signal: controller.signal,
      body: JSON.stringify({
        model: $("model").value, messages: history, stream: true,
        stream_options: { include_usage: true },
        temperature: Number($("temperature").value), max_tokens: Number($("maxtokens").value),
      }),
    });
    if (!res.ok) {
      const err = await res.json().catch(() => ({}));
      throw new Error((err.error && err.error.message) || ("HTTP " + res.status));
    }
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let finish = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
        if (!event.startsWith("data: ")) continue;
        const data = event.slice(6);
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.usage) tokens = chunk.usage.completion_tokens;
        for (const choice of chunk.choices || []) {
          if (choice.delta && choice.delta.content) answer += choice.delta.content;
          if (choice.finish_reason) finish = choice.finish_reason;
        }
        body.innerHTML = renderMarkdown(answer);
        $("messages").scrollTop = $("messages").scrollHeight;
      }
    }
    const seconds = (performance.now() - started) / 1000;
    meta.textContent = tokens + " tokens, " + (tokens / seconds).toFixed(1) + " tok/s, " + finish;
    div.dataset.done = "true";
    history.push({ role: "assistant", content: answer });
  } catch (e) {
    if (e.name === "AbortError") {
      meta.textContent = "stopped";
      history.push({ role: "assistant", content: answer });
    } else {
      div.classList.add("error");
      body.textContent = "Error: " + e.message;
      history.pop();
    }
    div.dataset.done = "true";
  } finally {
    controller = null;
    $("send").disabled = false; $("stop").disabled = true;
  }
}

function formatBytes(n) {
  if (!n) return "0 B";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + units[i];
}

function bar(parts) {
  const div = document.createElement("div");
  div.className = "bar";
  for (const [cls, fraction, title] of parts) {
    const span = document.createElement("span");
    span.className = cls;
    span.style.width = Math.max(0, Math.min(100, fraction * 100)).toFixed(2) + "%";
    span.title = title;
    div.appendChild(span);
  }
  return div;
}

async function refreshCluster() {
  try {
    const res = await fetch("/v1/cluster", { headers: headers() });
    if (!res.ok) return;
    const view = await res.json();
    const nodes = $("nodes");
    nodes.innerHTML = "";
    const totalLayers = (view.plan && view.plan.layers) || 0;
    for (const node of view.nodes || []) {
      const card = document.createElement("div");
      card.className = "node";
      const name = document.createElement("div");
      name.className = "name";
      name.textContent = node.name + (node.id === view.coordinator ? " (coordinator)" : "");
      card.appendChild(name);
      const address = document.createElement("div");
      address.className = "muted";
      address.textContent = node.address + " · " + ((node.capabilities || {}).accelerator || "cpu") +
                            " · " + ((node.capabilities || {}).cpu_threads || "?") + " threads";
      card.appendChild(address);
      const mem = node.memory || {};
      const total = mem.total_bytes || 1;
      const used = Math.max(0, total - (mem.available_bytes || 0) - (mem.model_bytes || 0) - (mem.kv_cache_bytes || 0));
      const label = document.createElement("div");
      label.className = "muted";
      label.textContent = "memory: model " + formatBytes(mem.model_bytes) + ", KV " +
                          formatBytes(mem.kv_cache_bytes) + ", of " + formatBytes(mem.total_bytes);
      card.appendChild(label);
      card.appendChild(bar([["model", (mem.model_bytes || 0) / total, "model weights"],
                            ["kv", (mem.kv_cache_bytes || 0) / total, "KV cache"],
                            ["used", used / total, "other use"]]));
      if (node.layers && totalLayers) {
        const layers = document.createElement("div");
        layers.className = "muted";
        layers.textContent = "layers " + node.layers.begin + "–" + node.layers.end + " of " + totalLayers;
        card.appendChild(layers);
        const b = bar([["", node.layers.begin / totalLayers, ""],
                       ["layers", (node.layers.end - node.layers.begin) / totalLayers, "layers"]]);
        card.appendChild(b);
      }
      const tps = document.createElement("div");
      tps.className = "tps";
      tps.textContent = (node.tokens_per_second || 0).toFixed(1) + " tokens/s";
      card.appendChild(tps);
      nodes.appendChild(card);
    }
    const live = view.live || {};
    $("cluster-summary").textContent = (view.nodes || []).length + " node(s) · " +
        (live.running || 0) + " running, " + (live.queued || 0) + " queued · " +
        (live.tokens_per_second || 0).toFixed(1) + " tokens/s";
    const plan = $("plan");
    plan.innerHTML = "";
    for (const stage of (view.plan && view.plan.stages) || []) {
      const line = document.createElement("div");
      line.className = "muted";
      line.textContent = view.plan.model + ": layers " + stage.layer_begin + "–" + stage.layer_end + " on " + stage.node;
      plan.appendChild(line);
    }
    if (!plan.childNodes.length) plan.textContent = "no model placed";
  } catch (e) {
    $("cluster-summary").textContent = "cluster view unavailable";
  }
}

$("apikey").value = localStorage.getItem("exo-api-key") || "";
$("apikey").addEventListener("change", () => {
  localStorage.setItem("exo-api-key", $("apikey").value.trim());
  loadModels(); refreshCluster();
});
$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("input").value.trim();
  if (!text || controller) return;
  $("input").value = "";
  send(text);
});
$("input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("composer").requestSubmit(); }
});
$("stop").addEventListener("click", () => { if (controller) controller.abort(); });
$("clear").addEventListener("click", () => { history.length = 0; $("messages").innerHTML = ""; });
loadModels();
refreshCluster();
setInterval(refreshCluster, 1000);
setInterval(loadModels, 5000);
