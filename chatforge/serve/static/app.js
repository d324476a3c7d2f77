// The chat page: chat, a completion playground for base models and a tokenizer view, over the server's
// OpenAI-style API. No build step and no libraries: plain DOM, fetch with a streamed SSE body, and a small
// Markdown renderer that escapes HTML before it adds any markup.
"use strict";

const $ = (id) => document.getElementById(id);

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

// ---------------------------------------------------------------- settings and history (localStorage)

const FIELDS = ["system", "temperature", "top_p", "max_tokens", "seed", "alternatives", "api_key", "search", "model"];
const settings = JSON.parse(localStorage.getItem("chatforge.settings") || "{}");
let chats = JSON.parse(localStorage.getItem("chatforge.chats") || "[]");
let current = null;

function value(id) {
  const input = $(id);
  return input.type === "checkbox" ? input.checked : input.value;
}

function saveSettings() {
  for (const id of FIELDS) settings[id] = value(id);
  localStorage.setItem("chatforge.settings", JSON.stringify(settings));
  for (const out of document.querySelectorAll("output[for]")) out.textContent = $(out.htmlFor).value;
}

function saveChats() {
  try {
    localStorage.setItem("chatforge.chats", JSON.stringify(chats));
  } catch {  // over the storage quota: the per-token alternatives are the bulk, keep them for this chat only
    for (const chat of chats) if (chat !== current) for (const m of chat.messages) delete m.tokens;
    try { localStorage.setItem("chatforge.chats", JSON.stringify(chats)); } catch { /* history stays in memory */ }
  }
}

// ---------------------------------------------------------------- the API

function headers(json = true) {
  const h = json ? { "Content-Type": "application/json" } : {};
  if (settings.api_key) h.Authorization = `Bearer ${settings.api_key}`;
  return h;
}

async function errorMessage(res) {
  try {
    const body = await res.json();
    return body.error?.message || `${res.status} ${res.statusText}`;
  } catch {
    return `${res.status} ${res.statusText}`;
  }
}

async function post(path, body, signal) {
  const res = await fetch(path, { method: "POST", headers: headers(), body: JSON.stringify(body), signal });
  if (!res.ok) throw new Error(await errorMessage(res));
  return res;
}

// Server-sent events: `data: {json}` lines separated by blank lines, ending with `data: [DONE]`.
async function* events(res) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { done, value: bytes } = await reader.read();
    if (done) return;
    buffer += decoder.decode(bytes, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        yield chunk;
      }
    }
  }
}

function sampling() {
  const body = {
    model: settings.model,
    temperature: Number(settings.temperature),
    top_p: Number(settings.top_p),
    max_tokens: Number(settings.max_tokens),
    stream: true,
    stream_options: { include_usage: true },
  };
  if (settings.seed !== "") body.seed = Number(settings.seed);
  return body;
}

// Live speed: decode tokens/s counts from the first token on, so the wait for the prompt is not in it.
function clock() {
  const t0 = performance.now();
  return {
    first: null, last: null, n: 0,
    add(tokens) {
      const now = performance.now();
      if (this.first === null) this.first = now;
      this.last = now;
      this.n += tokens;
    },
    stats() {
      if (this.first === null) return null;
      const seconds = (this.last - this.first) / 1000;
      const tokS = this.n > 1 && seconds > 0 ? (this.n - 1) / seconds : null;
      return { tokens: this.n, ttft_ms: this.first - t0, tok_s: tokS };
    },
  };
}

function statsText(s) {
  if (!s) return "";
  const speed = s.tok_s === null ? "" : `${s.tok_s.toFixed(1)} tok/s · `;
  return `${speed}${Math.round(s.ttft_ms)} ms to first token · ${s.tokens} tokens`;
}

// ---------------------------------------------------------------- Markdown (escape first, then add markup)

function escapeHtml(s) {
  return s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

// Code spans are the odd parts of the split; emphasis and links apply to the escaped text between them.
function inline(text) {
  return text.split(/`([^`\n]+)`/).map((part, i) => i % 2 ? `<code>${escapeHtml(part)}</code>` : escapeHtml(part)
    .replace(/\*\*(\S(?:.*?\S)?)\*\*/g, "<strong>$1</strong>")
    .replace(/(^|[^*\w])\*(\S(?:.*?\S)?)\*(?!\*)/g, "$1<em>$2</em>")
    .replace(/\[([^\]]+)\]\((https?:\/\/[^\s)]+)\)/g, '<a href="$2" target="_blank" rel="noopener noreferrer">$1</a>'))
    .join("");
}

const FENCE = /^\s*```\s*([\w+#.-]*)\s*$/;
const HEADING = /^(#{1,6})\s+(.*)$/;
const RULE = /^\s*([-*_])(\s*\1){2,}\s*$/;
const QUOTE = /^\s*>\s?(.*)$/;
const ITEM = /^\s*([-*+]|\d+[.)])\s+(.*)$/;

function markdown(src) {
  const lines = src.split("\n");
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if ((m = line.match(FENCE))) {
      const code = [];
      for (i++; i < lines.length && !/^\s*```\s*$/.test(lines[i]); i++) code.push(lines[i]);
      i++;  // the closing fence, absent while a reply is still streaming
      const lang = m[1] ? ` data-lang="${escapeHtml(m[1])}"` : "";
      out.push(`<pre${lang}><code>${escapeHtml(code.join("\n"))}</code></pre>`);
    } else if ((m = line.match(HEADING))) {
      out.push(`<h${m[1].length}>${inline(m[2])}</h${m[1].length}>`);
      i++;
    } else if (RULE.test(line)) {
      out.push("<hr>");
      i++;
    } else if (QUOTE.test(line)) {
      const quoted = [];
      for (; i < lines.length && (m = lines[i].match(QUOTE)); i++) quoted.push(m[1]);
      out.push(`<blockquote>${markdown(quoted.join("\n"))}</blockquote>`);
    } else if ((m = line.match(ITEM))) {
      const ordered = /\d/.test(m[1]);
      const items = [];
      for (; i < lines.length && (m = lines[i].match(ITEM)) && /\d/.test(m[1]) === ordered; i++) items.push(m[2]);
      const tag = ordered ? "ol" : "ul";
      out.push(`<${tag}>${items.map((t) => `<li>${inline(t)}</li>`).join("")}</${tag}>`);
    } else if (!line.trim()) {
      i++;
    } else {
      const para = [line];
      const starts = (l) => [FENCE, HEADING, RULE, QUOTE, ITEM].some((r) => r.test(l));
      for (i++; i < lines.length && lines[i].trim() && !starts(lines[i]); i++) para.push(lines[i]);
      out.push(`<p>${para.map(inline).join("<br>")}</p>`);
    }
  }
  return out.join("");
}

// ---------------------------------------------------------------- tokens and their alternatives

function tokenText(t) {
  return t.bytes ? new TextDecoder().decode(new Uint8Array(t.bytes)) : t.token;
}

// Each streamed chunk brings some text and the tokens behind it: the tokens share the text's place in the reply
// by their UTF-8 bytes (a character split across tokens belongs to the token holding its first byte). Placing
// them chunk by chunk keeps them aligned even where a chunk's text is not exactly its tokens' bytes.
function placeTokens(text, start, tokens) {
  const encoder = new TextEncoder();
  const charAt = [];  // charAt[byte offset where a character starts] = its index in text
  let byte = 0;
  for (let i = 0; i < text.length;) {
    const len = text.codePointAt(i) > 0xffff ? 2 : 1;
    charAt[byte] = i;
    byte += encoder.encode(text.slice(i, i + len)).length;
    i += len;
  }
  const up = (b) => {
    for (; b < byte; b++) if (charAt[b] !== undefined) return charAt[b];
    return text.length;
  };
  let b = 0;
  return tokens.map((t) => {
    const from = b;
    b += t.bytes ? t.bytes.length : encoder.encode(t.token).length;
    return { ...t, at: [start + up(from), start + up(b)] };
  });
}

// Wrap each token's text in a span inside already-rendered Markdown. The rendered text nodes appear in the
// source in order (markup characters dropped), so each is found from a cursor and split where tokens end.
function wrapTokens(root, source, tokens) {
  root.tokens = tokens;
  if (!tokens.length) return;
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  const nodes = [];
  while (walker.nextNode()) nodes.push(walker.currentNode);
  let cursor = 0;
  let t = 0;
  for (const node of nodes) {
    const text = node.data;
    const at = text ? source.indexOf(text, cursor) : -1;
    if (at < 0) continue;
    cursor = at + text.length;
    const frag = document.createDocumentFragment();
    for (let pos = at; pos < cursor;) {
      while (t < tokens.length && tokens[t].at[1] <= pos) t++;
      const [start, end] = t < tokens.length ? tokens[t].at : [cursor, cursor];
      const stop = Math.min(start > pos ? start : end, cursor);
      if (start > pos) {
        frag.append(text.slice(pos - at, stop - at));
      } else {
        const span = el("span", "tok", text.slice(pos - at, stop - at));
        span.dataset.i = t;
        frag.append(span);
      }
      pos = stop;
    }
    node.replaceWith(frag);
  }
}

function visible(text) {
  return text.replace(/ /g, "␣").replace(/\n/g, "↵").replace(/\t/g, "⇥") || "∅";
}

function percent(logprob) {
  const p = 100 * Math.exp(logprob);
  return p >= 10 ? `${p.toFixed(0)}%` : p >= 0.1 ? `${p.toFixed(1)}%` : "<0.1%";
}

function showAlternatives(span) {
  const token = span.closest(".tokens-root")?.tokens?.[span.dataset.i];
  if (!token) return;
  const tip = $("tip");
  tip.replaceChildren();
  const chosen = tokenText(token);
  const head = el("div", "head");
  head.append(el("code", "", visible(chosen)), ` sampled at ${percent(token.logprob)}`);
  tip.append(head);
  for (const alt of token.top_logprobs || []) {
    const row = el("div", tokenText(alt) === chosen ? "alt chosen" : "alt");
    const bar = el("span", "bar");
    bar.style.width = `${Math.max(2, 100 * Math.exp(alt.logprob))}%`;
    row.append(el("code", "", visible(tokenText(alt))), el("span", "p", percent(alt.logprob)), bar);
    tip.append(row);
  }
  tip.hidden = false;
  const box = span.getBoundingClientRect();
  const left = Math.min(box.left, window.innerWidth - tip.offsetWidth - 8);
  const below = box.bottom + tip.offsetHeight + 8 < window.innerHeight;
  tip.style.left = `${Math.max(8, left)}px`;
  tip.style.top = `${below ? box.bottom + 6 : box.top - tip.offsetHeight - 6}px`;
}

document.addEventListener("mouseover", (e) => {
  const span = e.target.closest?.(".tok");
  if (span) showAlternatives(span);
  else $("tip").hidden = true;
});

// ---------------------------------------------------------------- chat

let controller = null;
let attachment = null;
let renderQueued = null;

function newChat() {
  if (current && !current.messages.length) return select(current);
  current = { id: Date.now().toString(36), title: "New chat", messages: [], updated: Date.now() };
  chats.unshift(current);
  select(current);
}

function select(chat) {
  current = chat;
  $("sidebar").classList.remove("open");
  renderHistory();
  renderMessages();
}

function renderHistory() {
  const list = $("history");
  list.replaceChildren();
  for (const chat of chats) {
    if (!chat.messages.length && chat !== current) continue;
    const item = el("li", chat === current ? "active" : "");
    const title = el("button", "title", chat.title);
    title.onclick = () => select(chat);
    const remove = el("button", "icon remove", "×");
    remove.title = "Delete";
    remove.onclick = () => {
      chats = chats.filter((c) => c !== chat);
      saveChats();
      if (chat === current) {
        current = null;
        newChat();
      } else renderHistory();
    };
    item.append(title, remove);
    list.append(item);
  }
}

function userContent(m) {
  return m.file ? `File: ${m.file.name}\n\n${m.file.text}\n\n${m.text}` : m.text;
}

function renderMessages() {
  const box = $("messages");
  box.replaceChildren(...current.messages.map((m, i) => renderMessage(m, i)));
  $("welcome").hidden = current.messages.length > 0;
  box.scrollTop = box.scrollHeight;
}

function renderMessage(m, index) {
  const node = el("div", `msg ${m.role}`);
  node.dataset.index = index;
  const bubble = el("div", "bubble");
  node.append(bubble);
  if (m.role === "user") {
    if (m.file) {
      const file = el("details", "file");
      const size = `${m.file.chars.toLocaleString()} characters${m.file.truncated ? ", truncated" : ""}`;
      file.append(el("summary", "", `${m.file.name} · ${size}`), el("pre", "", m.file.text));
      bubble.append(file);
    }
    bubble.append(el("div", "text", m.text));
    node.append(actions([["Edit", () => edit(node, m, index)]]));
    return node;
  }
  if (m.context?.dropped_messages) {
    const c = m.context;
    const n = c.dropped_messages > 1 ? `${c.dropped_messages} earlier messages were` : "1 earlier message was";
    bubble.append(el("div", "notice", `${n} left out to fit the model's ${c.context_length}-token context.`));
  }
  if (m.reasoning) {
    const think = el("details", "think");
    think.open = !m.content && !m.done;
    think.append(el("summary", "", m.done ? "Thought" : "Thinking…"), el("div", "", m.reasoning));
    bubble.append(think);
  }
  for (const tool of m.tools || []) {
    const call = el("details", "tool");
    call.append(el("summary", "", `${tool.name}: ${tool.input.split("\n")[0]}`),
      el("pre", "input", tool.input), el("pre", "output", tool.output));
    bubble.append(call);
  }
  const body = el("div", "text tokens-root");
  body.innerHTML = markdown(m.content);
  wrapTokens(body, m.content, m.tokens || []);
  bubble.append(body);
  if (!m.done) bubble.append(el("span", "cursor"));
  if (m.error) bubble.append(el("div", "error", m.error));
  const meta = [statsText(m.stats), m.finish === "stopped" ? "stopped" : m.finish === "length" ? "hit max tokens" : ""];
  node.append(el("div", "stats", meta.filter(Boolean).join(" · ")));
  if (m.done && index === current.messages.length - 1) {
    node.append(actions([["Regenerate", regenerate], ["Copy", () => navigator.clipboard?.writeText(m.content)]]));
  }
  return node;
}

function actions(list) {
  const bar = el("div", "actions");
  for (const [label, fn] of list) {
    const button = el("button", "link", label);
    button.onclick = fn;
    bar.append(button);
  }
  return bar;
}

function edit(node, m, index) {
  if (controller) return;
  const area = el("textarea", "edit");
  area.value = m.text;
  const bar = actions([
    ["Send", () => {
      m.text = area.value;
      current.messages = current.messages.slice(0, index + 1);
      generate();
    }],
    ["Cancel", renderMessages],
  ]);
  node.replaceChildren(area, bar);
  area.focus();
}

function regenerate() {
  if (controller) return;
  if (current.messages.at(-1)?.role === "assistant") current.messages.pop();
  generate();
}

function queueRender(m) {
  if (renderQueued) return;
  renderQueued = requestAnimationFrame(() => {
    renderQueued = null;
    if (current.messages.at(-1) !== m) return;  // another chat is on screen
    const box = $("messages");
    const last = box.lastElementChild;
    const stick = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
    if (last) last.replaceWith(renderMessage(m, current.messages.length - 1));
    if (stick) box.scrollTop = box.scrollHeight;
  });
}

function setBusy(busy) {
  $("send").hidden = busy;
  $("stop").hidden = !busy;
}

async function generate() {
  const chat = current;
  const m = { role: "assistant", content: "", reasoning: "", tools: [], tokens: [], done: false };
  chat.messages.push(m);
  const firstUser = chat.messages.find((x) => x.role === "user");
  if (chat.title === "New chat" && firstUser) chat.title = firstUser.text.slice(0, 48) || firstUser.file?.name;
  chat.updated = Date.now();
  renderHistory();
  renderMessages();

  const history = chat.messages.slice(0, -1)
    .filter((x) => x.role === "user" || x.content)  // a reply that failed or was stopped before any text
    .map((x) => ({ role: x.role, content: x.role === "user" ? userContent(x) : x.content }));
  const system = settings.system ? [{ role: "system", content: settings.system }] : [];
  const body = { ...sampling(), messages: [...system, ...history] };
  body.tools_enabled = settings.search && !$("search").disabled ? ["python", "search"] : ["python"];
  if (settings.alternatives) Object.assign(body, { logprobs: true, top_logprobs: 5 });

  controller = new AbortController();
  setBusy(true);
  const timer = clock();
  try {
    const res = await post("/v1/chat/completions", body, controller.signal);
    for await (const chunk of events(res)) {
      if (chunk.context) m.context = chunk.context;
      if (chunk.usage) m.usage = chunk.usage;
      const choice = chunk.choices?.[0];
      if (!choice) continue;
      const delta = choice.delta || {};
      const logprobs = choice.logprobs?.content || [];
      m.tokens.push(...placeTokens(delta.content || "", m.content.length, logprobs));
      m.content += delta.content || "";
      m.reasoning += delta.reasoning_content || "";
      if (delta.tool) m.tools.push(delta.tool);
      if (delta.content || delta.reasoning_content || delta.tool) timer.add(logprobs.length || 1);
      if (choice.finish_reason) m.finish = choice.finish_reason;
      m.stats = timer.stats();
      queueRender(m);
    }
  } catch (err) {
    if (err.name === "AbortError") m.finish = "stopped";
    else m.error = err.message;
  }
  controller = null;
  if (m.usage && m.stats) m.stats.tokens = m.usage.completion_tokens;
  m.done = true;
  setBusy(false);
  saveChats();
  if (chat === current) {
    cancelAnimationFrame(renderQueued);
    renderQueued = null;
    renderMessages();
  }
}

function send(e) {
  e.preventDefault();
  const text = $("input").value.trim();
  if (controller || (!text && !attachment)) return;
  current.messages.push({ role: "user", text, file: attachment });
  $("input").value = "";
  resize($("input"));
  attachment = null;
  renderAttachment();
  generate();
}

function renderAttachment(message, cls = "error") {
  const box = $("attachment");
  box.replaceChildren();
  box.hidden = !attachment && !message;
  if (message) {
    box.append(el("span", cls, message));
  } else if (attachment) {
    const size = `${attachment.chars.toLocaleString()} characters${attachment.truncated ? ", truncated to fit" : ""}`;
    const remove = el("button", "icon remove", "×");
    remove.onclick = () => { attachment = null; renderAttachment(); };
    box.append(el("span", "", `${attachment.name} · ${size}`), remove);
  }
}

async function upload() {
  const file = $("file").files[0];
  $("file").value = "";
  if (!file) return;
  const form = new FormData();
  form.append("file", file);
  renderAttachment(`Reading ${file.name}…`, "");
  try {
    const res = await fetch("/v1/extract", { method: "POST", headers: headers(false), body: form });
    if (!res.ok) throw new Error(await errorMessage(res));
    attachment = await res.json();
    renderAttachment();
  } catch (err) {
    attachment = null;
    renderAttachment(`${file.name}: ${err.message}`);
  }
}

function resize(area) {
  area.style.height = "auto";
  area.style.height = `${Math.min(area.scrollHeight, 240)}px`;
}

// ---------------------------------------------------------------- completion playground

let completing = null;

async function complete() {
  if (completing) return;
  const prompt = $("prompt").value;
  const out = $("completion");
  const root = el("span", "tokens-root");
  out.replaceChildren(el("span", "prompt", prompt), root);
  const body = { ...sampling(), prompt };
  if (settings.alternatives) body.logprobs = 5;
  completing = new AbortController();
  $("complete").hidden = true;
  $("complete-stop").hidden = false;
  const timer = clock();
  let text = "";
  const tokens = [];
  let note = "";
  try {
    const res = await post("/v1/completions", body, completing.signal);
    for await (const chunk of events(res)) {
      const choice = chunk.choices?.[0];
      if (!choice) continue;
      const lp = choice.logprobs;
      const added = lp?.tokens?.length || (choice.text ? 1 : 0);
      const chunkTokens = (lp?.tokens || []).map((token, k) => ({
        token,
        logprob: lp.token_logprobs[k],
        top_logprobs: Object.entries(lp.top_logprobs?.[k] || {}).map(([alt, logprob]) => ({ token: alt, logprob })),
      }));
      tokens.push(...placeTokens(choice.text || "", text.length, chunkTokens));
      text += choice.text || "";
      if (added) timer.add(added);
      root.textContent = text;
      wrapTokens(root, text, tokens);
      $("complete-stats").textContent = statsText(timer.stats());
    }
  } catch (err) {
    note = err.name === "AbortError" ? "stopped" : "";
    if (!note) out.append(el("div", "error", err.message));
  }
  completing = null;
  $("complete").hidden = false;
  $("complete-stop").hidden = true;
  $("complete-stats").textContent = [statsText(timer.stats()), note].filter(Boolean).join(" · ");
}

// ---------------------------------------------------------------- tokenizer

let tokenizeTimer = null;

async function tokenize() {
  const text = $("tok-input").value;
  try {
    const res = await post("/v1/tokenize", { text });
    const { tokens, count } = await res.json();
    const pieces = tokens.map((t, i) => {
      const piece = el("span", `piece c${i % 6}`, t.text);
      piece.title = `id ${t.id}`;
      piece.dataset.i = i;
      return piece;
    });
    const ids = tokens.map((t, i) => {
      const id = el("span", `id c${i % 6}`, String(t.id));
      id.dataset.i = i;
      return id;
    });
    $("tok-pieces").replaceChildren(...pieces);
    $("tok-ids").replaceChildren(...ids);
    $("tok-count").textContent = `${count} tokens · ${text.length} characters`;
  } catch (err) {
    $("tok-count").textContent = err.message;
  }
}

function linkTokens(e) {
  for (const node of document.querySelectorAll("#view-tokenize .hot")) node.classList.remove("hot");
  const i = e.target.dataset?.i;
  if (i === undefined) return;
  for (const node of document.querySelectorAll(`#view-tokenize [data-i="${i}"]`)) node.classList.add("hot");
}

// ---------------------------------------------------------------- models, tabs, wiring

async function loadModels(wanted) {
  const picker = $("model");
  try {
    const res = await fetch("/v1/models", { headers: headers(false) });
    if (!res.ok) throw new Error(await errorMessage(res));
    const { data } = await res.json();
    picker.replaceChildren(...data.map((m) => {
      const option = el("option", "", m.id === m.kind ? m.id : `${m.id} · ${m.kind}`);
      option.value = m.id;
      option.dataset.kind = m.kind;
      option.dataset.tools = (m.tools || []).join(" ");
      return option;
    }));
    if (data.some((m) => m.id === wanted)) picker.value = wanted;
  } catch (err) {
    picker.replaceChildren(el("option", "", "no models"));
    renderAttachment(`Models: ${err.message}`);
  }
  saveSettings();
  modelChanged();
}

function modelChanged() {
  const option = $("model").selectedOptions[0];
  const search = option?.dataset.tools?.split(" ").includes("search");
  $("search").disabled = !search;
  $("search").parentElement.title = search ? "Let the model search (tools_enabled: search)"
    : "This run has no search index: build one with `chatforge data index`";
  const kind = option?.dataset.kind;
  $("welcome-hint").textContent = kind === "base"
    ? "This is a base model: it continues text rather than answering. The Complete tab shows it best."
    : "Hover a generated token to see what else the model could have said.";
  $("complete-hint").textContent = kind === "chat"
    ? "This is a chat model; a base model shows pure continuation best. Write the beginning of a document."
    : "A base model continues text. Write the beginning of a document.";
}

function show(view) {
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.dataset.view === view);
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${view}`;
  if (view === "tokenize") tokenize();
}

function init() {
  const model = settings.model;  // the picker fills in once /v1/models answers
  for (const id of FIELDS) {
    if (settings[id] === undefined || id === "model") continue;
    const input = $(id);
    if (input.type === "checkbox") input.checked = settings[id];
    else input.value = settings[id];
  }
  for (const id of FIELDS) $(id).addEventListener("change", saveSettings);
  for (const id of ["temperature", "top_p"]) $(id).addEventListener("input", saveSettings);
  $("model").addEventListener("change", modelChanged);
  saveSettings();

  for (const tab of document.querySelectorAll(".tab")) tab.onclick = () => show(tab.dataset.view);
  $("menu").onclick = () => $("sidebar").classList.toggle("open");
  document.querySelector("main").addEventListener("click", () => $("sidebar").classList.remove("open"));
  $("settings-toggle").onclick = () => { $("settings").hidden = !$("settings").hidden; };
  $("new-chat").onclick = newChat;
  $("composer").addEventListener("submit", send);
  $("stop").onclick = () => controller?.abort();
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") controller?.abort();
  });
  $("input").addEventListener("input", (e) => resize(e.target));
  $("input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) send(e);
  });
  $("file").addEventListener("change", upload);
  $("complete").onclick = complete;
  $("complete-stop").onclick = () => completing?.abort();
  $("tok-input").addEventListener("input", () => {
    clearTimeout(tokenizeTimer);
    tokenizeTimer = setTimeout(tokenize, 200);
  });
  $("view-tokenize").addEventListener("mouseover", linkTokens);

  current = chats[0] || null;
  if (current) select(current);
  else newChat();
  loadModels(model);
}

init();
