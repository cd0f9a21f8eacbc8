// tinygpt serve: the playground and inspector page. It talks only to the server that sent it:
// GET /v1/models, POST /inspect/tokenize, POST /v1/completions or, for a chat run, POST /v1/chat/completions
// (streamed, with logprobs), POST /inspect/step. A server started with an API key answers 401 until the page
// sends it: the page then asks for the key once and keeps it for the tab's session (sessionStorage).
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  models: [],        // GET /v1/models entries
  model: null,       // the chosen one
  mode: "text",      // "chat" for a chat run: a conversation instead of a prompt to continue
  promptIds: [],     // what the model reads for the prompt
  promptTexts: [],
  tokens: [],        // generated: {id, text, logprob, top: [[text, logprob], ...] | null, branched}
  chat: {messages: [], dropped: 0},  // messages: {role, content}; a reply also {promptIds, tokens} as above
  controller: null,  // aborts the running stream
  selected: null,    // the token being inspected (one of state.tokens, or of a reply's tokens)
  inspected: null,   // its /inspect/step answer
};

// --- small helpers --------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k === "style") e.style.cssText = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

// a token made visible: spaces and line breaks shown, never empty
function visible(text) {
  const out = text.replace(/ /g, "␣").replace(/\n/g, "\\n").replace(/\t/g, "\\t").replace(/\r/g, "\\r");
  return out === "" ? "∅" : out;
}

const probColor = (p) => `hsl(${Math.round(120 * Math.max(0, Math.min(1, p)))},75%,82%)`;

// WCAG's relative luminance of an sRGB colour [r, g, b] (0..255), and the text colour, black or white, that
// contrasts more with it: one of the two always reaches a ratio of 4.58 or more (WCAG asks 4.5)
function luminance(rgb) {
  const [r, g, b] = rgb.map((c) => { c /= 255; return c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}
const inkFor = (rgb) => (luminance(rgb) + 0.05) / 0.05 >= 1.05 / (luminance(rgb) + 0.05) ? "#000" : "#fff";

// a cell coloured `rgb` at strength a (0..1) over the page's white, with the text colour that reads on it
function cellStyle(rgb, a) {
  const c = rgb.map((x) => Math.round(255 + (x - 255) * Math.max(0, Math.min(1, a))));
  return `background:rgb(${c.join(",")});color:${inkFor(c)}`;
}
const fmt = (p) => (p === null || p === undefined) ? "?" : p.toFixed(3);
const wordTokens = () => state.model && state.model.tinygpt.tokenizer === "word";

// the API key, asked once and kept for the tab's session
const KEY = "tinygpt-api-key";
let keyAsked = null;  // the question being asked: requests refused meanwhile wait for the same answer

function askKey(refused) {
  if (!keyAsked) keyAsked = new Promise((resolve) => {
    $("key-error").textContent = refused ? "the server did not accept that key; check it and try again" : "";
    $("api-key").value = "";
    $("key-box").hidden = false;
    $("api-key").focus();
    $("key-form").onsubmit = (ev) => {
      ev.preventDefault();
      const key = $("api-key").value.trim();
      if (!key) return;
      sessionStorage.setItem(KEY, key);
      $("key-box").hidden = true;
      keyAsked = null;
      resolve();
    };
  });
  return keyAsked;
}

// fetch, with the API key when there is one; a 401 asks for the key and tries again
async function request(path, options = {}) {
  for (;;) {
    const key = sessionStorage.getItem(KEY);
    const headers = {...(options.headers || {}), ...(key ? {authorization: `Bearer ${key}`} : {})};
    const r = await fetch(path, {...options, headers});
    if (r.status !== 401) return r;
    await askKey(key !== null);
  }
}

async function post(path, body, signal) {
  const r = await request(path, {method: "POST", headers: {"content-type": "application/json"},
                                  body: JSON.stringify(body), signal});
  if (!r.ok) {
    let msg = `${r.status} ${r.statusText}`;
    try { msg = (await r.json()).error.message; } catch (e) { /* not JSON */ }
    throw new Error(msg);
  }
  return r;
}

function showError(msg) { $("error").textContent = msg || ""; }

// a streamed response's server-sent events: onChunk(parsed JSON) for each, up to `data: [DONE]`
async function readEvents(response, onChunk) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, {stream: true});
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      if (!event.startsWith("data: ")) continue;
      const data = event.slice(6);
      if (data === "[DONE]") continue;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      onChunk(chunk);
    }
  }
}

// a token of the output or of a reply, coloured by its probability; hover: its candidates; click: look inside
function tokenSpan(t, i, source, cls) {
  const p = t.logprob === null ? 0 : Math.exp(t.logprob);
  const span = el("span", {class: cls + (t === state.selected ? " selected" : "") + (t.branched ? " branched" : ""),
                           style: `background:${probColor(p)}`, "data-index": i, "data-id": t.id},
                  t.text === "" ? "∅" : t.text);
  span.addEventListener("mouseenter", (ev) => showTooltip(ev, t, i));
  span.addEventListener("mousemove", moveTooltip);
  span.addEventListener("mouseleave", () => { $("tooltip").hidden = true; });
  span.addEventListener("click", () => inspect(source, i));
  return span;
}

// the running request's Stop, and the buttons that start one
function busy(controller) {
  state.controller = controller;
  $("stop").disabled = !controller;
  $("generate").disabled = $("send").disabled = !!controller;
}

// --- models and settings --------------------------------------------------------------------------

async function loadModels() {
  const r = await request("/v1/models");
  if (!r.ok) throw new Error(`the server answered ${r.status}`);
  state.models = (await r.json()).data;
  const select = $("run");
  select.replaceChildren(...state.models.map((m) => el("option", {value: m.id}, m.id)));
  select.disabled = state.models.length < 2;
  chooseModel(state.models[0].id);
}

function chooseModel(name) {
  if (state.controller) state.controller.abort();
  const before = state.model && state.model.tinygpt;
  state.model = state.models.find((m) => m.id === name);
  const d = state.model.tinygpt;
  state.mode = d.chat ? "chat" : "text";
  for (const id of ["text-mode", "text-output", "generate", "branch-note"]) $(id).hidden = state.mode === "chat";
  $("chat-mode").hidden = state.mode !== "chat";
  $("run-info").textContent = `${d.kind} run · ${d.model}, ${d.n_layer} layer(s) × ${d.n_head} head(s) · ` +
    `${d.tokenizer} tokenizer, ${d.vocab_size} tokens · window ${d.block_size} · ${d.checkpoint}` +
    (d.step !== null && d.step !== undefined ? ` (step ${d.step})` : "");
  $("prompt").placeholder = d.example ? `a question, e.g. "${d.example}"` : "text to continue";
  // the new run's own example; text typed for another text run stays (to compare runs on the same prompt)
  if (!(before && before.kind === "text" && d.kind === "text")) $("prompt").value = d.example || "";
  state.promptIds = [];  // the old run's reading of the prompt means nothing to this one
  state.promptTexts = [];
  $("tokenization").replaceChildren();
  setSlider("temperature", d.default_temperature);
  $("top_k").max = Math.min(d.vocab_size, 200);
  setSlider("top_k", 0);
  setSlider("top_p", 1);
  $("max_tokens").max = Math.min(512, d.max_tokens);
  setSlider("max_tokens", Math.min(d.max_tokens, d.kind === "text" ? 64 : d.default_max_tokens));
  clearOutput();
  resetChat();
  clearTimeout(tokenizeTimer);
  showError("");  // the old run's error is not this one's
  if (state.mode === "text") tokenizePrompt();
}

function setSlider(id, value) { $(id).value = value; showSlider(id); }

function showSlider(id) {
  const v = Number($(id).value);
  const text = id === "top_k" && v === 0 ? "off" : id === "top_p" && v >= 1 ? "off" : String(v);
  document.querySelector(`output[for=${id}]`).textContent = text;
}

function settings() {
  const k = Number($("top_k").value), p = Number($("top_p").value), seed = $("seed").value.trim();
  return {temperature: Number($("temperature").value), top_k: k > 0 ? k : null, top_p: p < 1 ? p : null,
          max_tokens: Number($("max_tokens").value), seed: seed === "" ? null : Number(seed)};
}

// --- tokenization of the prompt -------------------------------------------------------------------

let tokenizeTimer = null;

async function tokenizePrompt() {
  const prompt = $("prompt").value;
  const model = state.model;
  if (prompt === "") {  // nothing to read yet: nothing to ask the server
    state.promptIds = [];
    state.promptTexts = [];
    $("tokenization").replaceChildren();
    showError("");  // an empty box is no error (and what another run refused no longer applies)
    if (!state.tokens.length) renderOutput();
    return false;
  }
  try {
    const r = await post("/inspect/tokenize", {model: model.id, prompt});
    const t = await r.json();
    if (state.model !== model || $("prompt").value !== prompt) return false;  // answered too late: not ours
    state.promptIds = t.ids;
    state.promptTexts = t.texts;
    $("tokenization").replaceChildren(
      el("span", {class: "muted"}, `${t.ids.length} token(s): `),
      ...t.tokens.map((piece, i) => el("span", {class: "ptok", title: `id ${t.ids[i]}`}, visible(piece),
                                        el("small", {}, t.ids[i]))),
      ...t.notices.map((n) => el("div", {class: "muted"}, n)));
    if (!state.tokens.length) renderOutput();
    showError("");
    return true;
  } catch (e) {
    if (state.model !== model) return false;
    state.promptIds = [];
    state.promptTexts = [];
    $("tokenization").replaceChildren(el("span", {class: "muted"}, "(not readable by this run)"));
    showError(`${model.id} cannot read this prompt: ${e.message}`);
    return false;
  }
}

// --- generation -----------------------------------------------------------------------------------

function clearOutput() {
  state.tokens = [];
  clearInspection();
  renderOutput();
  $("status").textContent = "";
}

function clearInspection() {
  state.selected = null;
  $("inspect").hidden = true;
  $("inspect-empty").hidden = false;
}

function renderOutput() {
  const sep = wordTokens() ? " " : "";
  const parts = [el("span", {class: "prompt"}, state.promptTexts.join(sep) + sep)];
  state.tokens.forEach((t, i) => {
    parts.push(tokenSpan(t, i, state, "tok gen"));
    if (sep) parts.push(el("span", {class: "sep"}, sep));
  });
  $("output").replaceChildren(...parts);
}

async function generate(prefix = []) {
  if (state.controller) state.controller.abort();
  showError("");
  if (!prefix.length && $("prompt").value === "") {
    showError(state.model.tinygpt.example ? `type a question first, e.g. "${state.model.tinygpt.example}"`
                                          : "type some text first: the model continues it");
    return;
  }
  if (!prefix.length && !(await tokenizePrompt())) return;
  if (!prefix.length) clearOutput();
  const s = settings();
  const controller = new AbortController();
  busy(controller);
  const started = performance.now();
  let n = 0, finish = null;
  const body = {model: state.model.id, prompt: state.promptIds.concat(prefix.map((t) => t.id)),
                max_tokens: Math.max(1, s.max_tokens - prefix.length), temperature: s.temperature,
                top_k: s.top_k, top_p: s.top_p, seed: s.seed, stream: true, logprobs: 5};
  try {
    const r = await post("/v1/completions", body, controller.signal);
    await readEvents(r, (chunk) => {
      for (const c of chunk.choices) {
        if (c.finish_reason) finish = c.finish_reason;
        const lp = c.logprobs;
        if (!lp) continue;
        lp.tokens.forEach((text, k) => {
          state.tokens.push({id: lp.token_ids[k], text, logprob: lp.token_logprobs[k],
                             top: Object.entries(lp.top_logprobs[k] || {})});
          n++;
        });
      }
      renderOutput();
    });
    showDone(n, started, finish, "the end of the text");
  } catch (e) {
    if (e.name !== "AbortError") showError(e.message); else $("status").textContent = "stopped";
  } finally {
    if (state.controller === controller) busy(null);
  }
}

function showDone(n, started, finish, end) {
  const secs = (performance.now() - started) / 1000;
  $("status").textContent = `${n} token(s) in ${secs.toFixed(2)} s` +
    (finish ? ` · ended by ${finish === "stop" ? end : "max tokens"}` : "");
}

// --- chat: a conversation with a chat run ---------------------------------------------------------

function resetChat() {
  if (state.controller && state.mode === "chat") state.controller.abort();
  state.chat = {messages: [], dropped: 0};
  clearInspection();
  renderChat();
  $("status").textContent = "";
}

function renderChat() {
  const sep = wordTokens() ? " " : "";
  const {messages, dropped} = state.chat;
  $("chat").replaceChildren(...messages.map((m, k) => {
    const cls = `msg ${m.role}` + (k < dropped ? " dropped" : "") + (m.pending ? " pending" : "");
    const title = k < dropped ? "no longer in the model's window: it did not read this" : "";
    if (m.role !== "assistant" || !m.tokens.length) {
      const empty = m.role === "assistant" && !m.pending && !m.content;
      return el("div", {class: cls + (empty ? " muted" : ""), title}, empty ? "(it ended its turn at once)" : m.content);
    }
    const parts = [];
    m.tokens.forEach((t, i) => {
      if (i && sep) parts.push(sep);
      parts.push(tokenSpan(t, i, m, "tok"));
    });
    return el("div", {class: cls, title}, ...parts);
  }));
  $("chat-note").textContent = dropped ? `the oldest ${dropped} message(s) no longer fit in the model's window of ` +
    `${state.model.tinygpt.block_size} tokens; it did not read them` : "";
  $("chat").scrollTop = $("chat").scrollHeight;
}

async function send() {
  const text = $("message").value.trim();
  if (!text || state.controller) return;
  showError("");
  const system = $("system").value.trim();
  const history = state.chat.messages.map((m) => ({role: m.role, content: m.content}));
  const messages = (system ? [{role: "system", content: system}] : []).concat(history, [{role: "user", content: text}]);
  const user = {role: "user", content: text};
  const reply = {role: "assistant", content: "", promptIds: [], tokens: [], pending: true};
  state.chat.messages.push(user, reply);
  $("message").value = "";
  renderChat();
  const s = settings();
  const controller = new AbortController();
  busy(controller);
  const started = performance.now();
  let finish = null;
  const body = {model: state.model.id, messages, max_tokens: s.max_tokens, temperature: s.temperature,
                top_k: s.top_k, top_p: s.top_p, seed: s.seed, stream: true, logprobs: true, top_logprobs: 5};
  try {
    const r = await post("/v1/chat/completions", body, controller.signal);
    await readEvents(r, (chunk) => {
      if (chunk.tinygpt) {
        reply.promptIds = chunk.tinygpt.prompt_ids;
        state.chat.dropped = chunk.tinygpt.dropped_messages;
      }
      for (const c of chunk.choices) {
        if (c.finish_reason) finish = c.finish_reason;
        reply.content += c.delta.content || "";
        for (const t of (c.logprobs && c.logprobs.content) || []) {
          reply.tokens.push({id: t.token_id, text: t.token, logprob: t.logprob,
                             top: t.top_logprobs.map((x) => [x.token, x.logprob])});
        }
      }
      renderChat();
    });
    showDone(reply.tokens.length, started, finish, "the end of the reply");
  } catch (e) {
    if (e.name === "AbortError") {
      $("status").textContent = "stopped";
    } else {  // nothing was said: the message goes back into the box
      state.chat.messages.splice(state.chat.messages.indexOf(user), 2);
      $("message").value = text;
      showError(e.message);
    }
  } finally {
    reply.pending = false;
    if (state.controller === controller) busy(null);
    renderChat();
  }
}

// --- hover: the candidates of a token -------------------------------------------------------------

function showTooltip(ev, t, i) {
  const rows = (t.top || []).map(([text, lp]) => {
    const p = lp === null ? 0 : Math.exp(lp);
    return el("tr", {style: text === t.text ? "font-weight:bold" : ""},
              el("td", {}, visible(text)), el("td", {}, el("span", {class: "bar grey", style: `width:${p * 80}px`})),
              el("td", {}, fmt(p)));
  });
  const p = t.logprob === null ? null : Math.exp(t.logprob);
  $("tooltip").replaceChildren(
    el("div", {}, `step ${i + 1}: ${visible(t.text)} (id ${t.id}), p = ${fmt(p)}` + (t.branched ? " (chosen by you)" : "")),
    rows.length ? el("table", {}, ...rows) : el("div", {class: "muted"}, "no candidates recorded"));
  $("tooltip").hidden = false;
  moveTooltip(ev);
}

function moveTooltip(ev) {
  const tip = $("tooltip");
  tip.style.left = Math.min(ev.clientX + 14, window.innerWidth - tip.offsetWidth - 8) + "px";
  tip.style.top = (ev.clientY + 18) + "px";
}

// --- click: look inside one step ------------------------------------------------------------------

// source: what the token was generated from ({promptIds, tokens}: the page's state, or a reply in the chat)
async function inspect(source, i) {
  const t = source.tokens[i];
  state.selected = t;
  if (state.mode === "chat") renderChat(); else renderOutput();
  const s = settings();
  try {
    const r = await post("/inspect/step", {model: state.model.id, prompt: source.promptIds,
                                           tokens: source.tokens.slice(0, i).map((x) => x.id),
                                           token: t.id, temperature: s.temperature,
                                           top_k: s.top_k, top_p: s.top_p});
    state.inspected = await r.json();
    renderInspection(t, i, state.inspected);
    showError("");
  } catch (e) { showError(e.message); }
}

function renderInspection(t, i, v) {
  $("inspect-empty").hidden = true;
  $("inspect").hidden = false;
  $("step-title").textContent = `Step ${i + 1}: ${visible(t.text)}  ·  the model read positions ` +
    `${v.window[0]}–${v.window[1] - 1} (${v.context.length} tokens)`;
  renderCandidates(i, v.candidates, t.id);
  renderAttention(v.attention);
  renderLens(v.logit_lens);
  renderSaliency(v.saliency);
  $("notes").textContent = v.notes.join(" ");
}

function renderCandidates(i, c, chosen) {
  const before = new Map(c.before_ids.map((id, k) => [id, c.before[k][1]]));
  const after = new Map(c.after_ids.map((id, k) => [id, c.after[k][1]]));
  const ids = [...c.before_ids, ...c.after_ids.filter((id) => !before.has(id))];
  const piece = new Map(c.before_ids.map((id, k) => [id, c.before[k][0]]));
  c.after_ids.forEach((id, k) => piece.set(id, c.after[k][0]));
  const rows = ids.map((id) => {
    const p = before.get(id) ?? 0, q = after.get(id) ?? 0;
    return el("tr", {class: id === chosen ? "chosen" : ""},
      el("td", {class: "piece"}, (id === chosen ? "▶ " : "") + visible(piece.get(id))),
      el("td", {}, el("span", {class: "bar grey", style: `width:${p * 120}px`}), " ", fmt(p)),
      el("td", {}, el("span", {class: "bar blue", style: `width:${q * 120}px`}), " ", fmt(q)),
      el("td", {}, state.mode === "chat" ? "" :  // branching continues the text: the text mode's
        el("button", {type: "button", title: "continue from this token", class: "branch",
                      onclick: () => branch(i, id, c.texts[String(id)], p)}, "↳")));
  });
  $("candidates").replaceChildren(el("tr", {}, el("th", {}, "token"), el("th", {}, "model"),
                                     el("th", {}, `sampled (${c.kept} kept)`), el("th", {}, "")), ...rows);
}

function branch(i, id, text, p) {
  const prefix = state.tokens.slice(0, i);
  prefix.push({id, text, logprob: p > 0 ? Math.log(p) : null, top: null, branched: true});
  state.tokens = prefix;
  renderOutput();
  inspect(state, i);  // the inspector shows the step as it now is: the token chosen here
  generate(prefix);
}

function renderAttention(a) {
  const box = $("attention");
  $("head-detail").replaceChildren();
  if (!a) { box.replaceChildren(el("div", {class: "muted"}, "this model has no attention")); return; }
  const [L, H, T] = a.shape;
  $("attention-note").textContent = `(layers × heads; row = the position reading, column = the position read; ` +
    `the red row is the step's own${a.offset ? `; the last ${T} positions` : ""}; click a head)`;
  box.style.gridTemplateColumns = `repeat(${H}, minmax(0, 200px))`;
  // every thumbnail's axes name the tokens: the rows (reading) down the left, the columns (read) along the top;
  // a long window names every few, as many as fit
  const every = Math.max(1, Math.ceil(T / THUMB_LABELS));
  const labels = a.tokens.map((piece, k) => ({full: visible(piece), shown: k % every === 0 ? visible(piece) : ""}));
  const axis = (cls) => el("div", {class: cls, "aria-hidden": "true"},
                           ...labels.map((x) => el("span", {title: x.full}, x.shown)));
  const cells = [];
  for (let l = 0; l < L; l++) for (let h = 0; h < H; h++) {
    const canvas = el("canvas", {width: T, height: T});
    drawHeatmap(canvas, a.attention[l][h]);
    const thumb = el("div", {class: "thumb"}, el("div", {}), axis("cols"), axis("rows"), canvas);
    const cell = el("div", {class: "head", title: `layer ${l}, head ${h}`}, thumb, `L${l} H${h}`);
    cell.addEventListener("click", () => {
      box.querySelectorAll(".head").forEach((c) => c.classList.remove("selected"));
      cell.classList.add("selected");
      headDetail(a, l, h);
    });
    cells.push(cell);
  }
  box.replaceChildren(...cells);
}

const THUMB_LABELS = 16;  // the most token labels on a thumbnail's axis

function drawHeatmap(canvas, rows) {
  const T = rows.length, ctx = canvas.getContext("2d"), img = ctx.createImageData(T, T);
  for (let r = 0; r < T; r++) for (let c = 0; c < T; c++) {
    const w = Math.sqrt(Math.max(0, rows[r][c] || 0));  // square root: small weights stay visible
    const k = 4 * (r * T + c), own = r === T - 1;  // the step's own row (the last) in red, the others in blue
    img.data[k] = 255 - (own ? 75 : 205) * w; img.data[k + 1] = 255 - (own ? 205 : 165) * w;
    img.data[k + 2] = 255 - (own ? 205 : 75) * w; img.data[k + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}

function headDetail(a, l, h) {
  const row = a.attention[l][h][a.tokens.length - 1];
  const top = Math.max(...row, 1e-9);
  $("head-detail").replaceChildren(el("span", {class: "muted"}, `layer ${l} head ${h}, where the step looked: `),
    ...a.tokens.map((piece, k) => el("span", {class: "ptok cell", title: fmt(row[k]),
                                               style: cellStyle([52, 112, 192], (row[k] / top) * 0.85)},
                                     visible(piece), el("small", {}, fmt(row[k])))));
}

function renderLens(lens) {
  if (!lens) { $("lens").replaceChildren(el("tr", {}, el("td", {class: "muted"}, "no layers to look through"))); return; }
  const last = lens.tokens.length - 1;
  const rows = lens.layers.map((name, l) => {
    const toks = lens.top_tokens[l][last], probs = lens.top_probs[l][last];
    return el("tr", {},
      el("th", {}, name),
      el("td", {class: "piece", style: `background:${probColor(probs[0])}`}, visible(toks[0])),
      el("td", {}, fmt(probs[0])),
      el("td", {class: "muted piece"}, toks.slice(1, 4).map((t, k) => `${visible(t)} ${fmt(probs[k + 1])}`).join("  ")));
  });
  $("lens").replaceChildren(el("tr", {}, el("th", {}, "layer"), el("th", {}, "top guess"), el("th", {}, "p"),
                                el("th", {}, "then")), ...rows);
}

function renderSaliency(s) {
  $("saliency-note").textContent = `(${s.method.replace(/_/g, " ")}: green pushed the model towards ` +
    `"${visible(s.target)}", red away; hover for the score)`;
  const top = Math.max(...s.scores.map((x) => Math.abs(x || 0)), 1e-9);
  $("saliency").replaceChildren(...s.tokens.map((piece, k) => {
    const x = s.scores[k] || 0, a = Math.abs(x) / top * 0.85;
    return el("span", {class: "ptok cell", title: x.toFixed(4), style: cellStyle(x >= 0 ? [34, 139, 34] : [200, 40, 40], a)},
              visible(piece),
              el("small", {}, x.toFixed(2)));
  }));
}

// --- wiring ---------------------------------------------------------------------------------------

for (const id of ["temperature", "top_k", "top_p", "max_tokens"]) $(id).addEventListener("input", () => showSlider(id));
$("run").addEventListener("change", (ev) => chooseModel(ev.target.value));
$("prompt").addEventListener("input", () => { clearTimeout(tokenizeTimer); tokenizeTimer = setTimeout(tokenizePrompt, 250); });
$("prompt").addEventListener("keydown", (ev) => { if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) generate(); });
$("generate").addEventListener("click", () => generate());
$("stop").addEventListener("click", () => { if (state.controller) state.controller.abort(); });
$("send").addEventListener("click", send);
$("reset").addEventListener("click", resetChat);
$("message").addEventListener("keydown", (ev) => { if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); send(); } });
loadModels().catch((e) => showError(`could not list the runs: ${e.message}`));
