// The chat screen: session side list, message list drawn from a ChatEngine, the composer with upload and Stop.

import { download, get, isToken, post, raw } from "./api.js";
import { ChatEngine } from "./engine.js";
import { MarkdownView } from "./markdown.js";
import { icon } from "./icons.js";
import { clear, fmtBytes, h, toast } from "./ui.js";
import { sessionList } from "./sessions.js";

export const chatState = { engine: null, ref: null, pending: null };

// Resolve a route ref (session id or key; empty = the default chat) to an engine target.
async function targetFor(ref) {
  if (!ref) {
    if (isToken()) return {}; // /ws picks the gateway's default chat and tells us its session
    const list = await get("/api/sessions?limit=50");
    const mine = list.sessions.find((s) => s.key.startsWith("webchat:"));
    if (mine) return mine;
    return post("/api/sessions", { channel: "webchat" });
  }
  if (ref.includes(":")) {
    // A key: a /ws chat or channel may not have a session yet (its first message makes it), so look it up in the
    // list rather than asking for it and getting a 404.
    const list = await get("/api/sessions?limit=1000");
    return list.sessions.find((s) => s.key === ref) || { key: ref };
  }
  return get(`/api/sessions/${encodeURIComponent(ref)}`);
}

// A deleted session's engine must stop: its socket and timers would act on a session that is gone.
window.addEventListener("gateway:session-deleted", (e) => {
  const engine = chatState.engine;
  if (engine && (engine.sessionId === e.detail.session_id || engine.target.key === e.detail.key)) {
    engine.close();
    chatState.engine = chatState.ref = chatState.pending = null;
  }
});

export function engineFor(ref, onNotification) {
  // One engine per chat, even when asked twice; but one refused for its server key starts over (maybe pinned anew).
  if (chatState.ref === ref && chatState.pending && !(chatState.engine && chatState.engine.pinError)) return chatState.pending;
  if (chatState.engine) chatState.engine.close();
  chatState.engine = null;
  chatState.ref = ref;
  chatState.pending = targetFor(ref).then((target) => {
    if (chatState.ref !== ref) return chatState.engine; // switched again meanwhile
    const engine = new ChatEngine(target);
    engine.addEventListener("notification", (e) => onNotification(e.detail));
    engine.addEventListener("notice", (e) => toast(e.detail, "error"));
    chatState.engine = engine;
    engine.start();
    return engine;
  });
  chatState.pending.catch(() => {
    if (chatState.ref === ref) chatState.ref = chatState.pending = null; // let the next visit try again
  });
  return chatState.pending;
}

function renderMessage(item, onRender) {
  const el = h("div", { class: `msg ${item.role}`, "data-id": item.id });
  if (item.role === "user") {
    el.append(h("div", { class: "bubble" }, item.text));
    return el;
  }
  // An assistant message keeps its parts: the reply text is a MarkdownView that grows with the stream, and the
  // small parts around it (tools, status, files, tags) are redrawn from the item on each update.
  const text = h("div", { class: "text" });
  const parts = { tools: h("div", { class: "tools", hidden: true }), text, view: new MarkdownView(text, { onRender }), after: h("div", { class: "after" }), toolCount: -1 };
  el.append(h("div", { class: "bubble" }, parts.tools, text, parts.after));
  el.parts = parts;
  updateMessage(el, item);
  return el;
}

function updateMessage(el, item) {
  el.className = `msg ${item.role} ${item.state || ""}`;
  const p = el.parts;
  if (!p) return;
  if (item.tools.length !== p.toolCount) {
    p.toolCount = item.tools.length;
    clear(p.tools).append(...item.tools.map((t) => h("span", { class: "tool" }, icon("tool"), t)));
    p.tools.hidden = !item.tools.length;
  }
  p.text.classList.toggle("typing", item.state === "streaming" && !item.status);
  p.view.set(item.text);
  if (item.state !== "streaming") p.view.flush(true); // complete: drawn now, from the whole text
  // The rest changes rarely (not with each word): redrawn only when it did, so a spinner keeps turning.
  const sig = JSON.stringify([item.status, item.files, item.state, item.error, item.usage]);
  if (sig === p.sig) return;
  p.sig = sig;
  clear(p.after);
  if (item.status) p.after.append(h("div", { class: "status-line" }, h("span", { class: "spinner" }), item.status));
  if (item.files && item.files.length) {
    p.after.append(
      h("div", { class: "files" }, item.files.map((f) =>
        h("button", {
          type: "button",
          class: "file",
          onclick: () => download(`/files?path=${encodeURIComponent(f.path)}`, f.name).catch((e) => toast(e.message, "error")),
        }, icon("download"), f.name))),
    );
  }
  if (item.state === "aborted" || item.state === "interrupted") p.after.append(h("div", { class: "tag" }, item.state === "aborted" ? "stopped" : "interrupted"));
  if (item.error) p.after.append(h("div", { class: "tag error" }, item.error));
  const u = item.usage;
  if (u) {
    const how = u.estimated ? " (estimated: the provider reported none)" : "";
    p.after.append(h("div", { class: "usage-line", title: `${u.model || "model"}${how}` },
      `${u.total_tokens} tokens: ${u.input_tokens} in, ${u.output_tokens} out${u.estimated ? " (estimated)" : ""}`));
  }
}

const STATE_LABEL = { connecting: "connecting…", live: "live", reconnecting: "reconnecting…", offline: "offline", error: "disconnected" };

export async function chatView(view, ref, app) {
  const messages = h("div", { class: "messages", id: "messages", "aria-live": "polite" });
  const input = h("textarea", { id: "composer-input", rows: "1", placeholder: "Message the agent…", "aria-label": "Message" });
  const sendBtn = h("button", { type: "submit", class: "primary send", id: "send" }, "Send");
  const stopBtn = h("button", { type: "button", class: "danger stop", id: "stop", hidden: true }, icon("stop"), "Stop");
  const fileInput = h("input", { type: "file", id: "file-input", hidden: true });
  const attachBtn = h("button", { type: "button", class: "icon", title: "Attach a file", "aria-label": "Attach a file", onclick: () => fileInput.click() }, icon("clip"));
  const chips = h("div", { class: "chips" });
  const title = h("h2", { class: "chat-title", text: "Chat" });
  const statePill = h("span", { class: "pill", id: "conn-state" });
  const channelBox = h("div", { class: "channels" });
  const side = h("div", { class: "chat-side" });
  const form = h("form", { class: "composer" }, attachBtn, fileInput, input, stopBtn, sendBtn);
  const banner = h("div", { class: "chat-banner", id: "chat-banner", hidden: true });
  const main = h("div", { class: "chat-main" }, h("div", { class: "chat-head" }, title, channelBox, statePill), banner, messages, chips, form);
  clear(view).append(h("div", { class: "chat" }, side, main));
  sessionList(side, { compact: true, current: ref });

  const engine = await engineFor(ref, app.onNotification);
  if (!engine) return;
  const pending = []; // uploaded files waiting for the next message
  const nodes = new Map();
  const nearBottom = () => messages.scrollHeight - messages.scrollTop - messages.clientHeight < 80;
  // A render keeps the list pinned to the bottom when it was there before the text grew.
  const onRender = (mutate) => {
    const stick = nearBottom();
    mutate();
    if (stick) messages.scrollTop = messages.scrollHeight;
  };
  const add = (item) => {
    const stick = nearBottom();
    const el = renderMessage(item, onRender);
    nodes.set(item.id, el);
    messages.append(el);
    if (stick) messages.scrollTop = messages.scrollHeight;
  };
  for (const item of engine.items) add(item);
  messages.scrollTop = messages.scrollHeight;
  const onAdd = (e) => add(e.detail);
  const onUpdate = (e) => {
    const el = nodes.get(e.detail.id);
    if (el) onRender(() => updateMessage(el, e.detail));
  };
  let wasBusy = engine.busy;
  const onBusy = () => {
    stopBtn.hidden = !engine.busy;
    sendBtn.hidden = engine.busy;
    // A turn ended: its reply is stored already (the gateway shows it only once committed), and it is marked read
    // once `reading` settles: then the list shows the new latest message without an unread badge.
    if (wasBusy && !engine.busy) engine.reading.then(() => sessionList(side, { compact: true, current: ref || engine.sessionId }));
    wasBusy = engine.busy;
  };
  const onState = () => {
    statePill.textContent = STATE_LABEL[engine.state] || engine.state;
    statePill.className = `pill ${engine.state}`;
  };
  const onReady = () => {
    const t = engine.target;
    title.textContent = t.display_title || t.title || (engine.authOk ? `Chat ${engine.authOk.chat_id}` : "Chat");
    drawChannels();
    if (!ref) sessionList(side, { compact: true, current: engine.sessionId }); // the default chat may be new
  };
  const onPinMismatch = () => {
    const p = engine.pinError;
    clear(banner).append(h("div", { class: "notice error", role: "alert", id: "pin-error" },
      h("strong", { text: "The gateway's identity key has changed: the chat is closed." }),
      h("div", {}, "Pinned: ", h("code", { text: p.pinned })),
      h("div", {}, "Offered now: ", h("code", { text: p.offered })),
      h("div", { text: "Nothing was sent after the greeting (the token never is). If the owner replaced the gateway's identity.key, run `gateway token` on its machine and enter the fingerprint it prints under Account › Encryption; otherwise someone may be in the middle." }),
      h("a", { href: "#/account" }, "Open Account › Encryption")));
    banner.hidden = false;
  };
  // A key pinned on first use is shown until read: it is what the owner compares with `gateway token`.
  const onPinned = () => {
    clear(banner).append(h("div", { class: "notice", role: "status", id: "pin-new" },
      h("div", {}, "Pinned the gateway's identity key ", h("code", { text: engine.newPin }), "."),
      h("div", { text: "Compare it with what `gateway token` prints on the gateway's machine (Account › Encryption shows it again)." }),
      h("div", { class: "row-actions" }, h("button", { type: "button", class: "small", onclick: () => {
        engine.newPin = null;
        banner.hidden = true;
      } }, "It matches"))));
    banner.hidden = false;
  };
  engine.addEventListener("pin-mismatch", onPinMismatch);
  engine.addEventListener("pinned", onPinned);
  if (engine.pinError) onPinMismatch();
  else if (engine.newPin) onPinned();
  engine.addEventListener("add", onAdd);
  engine.addEventListener("update", onUpdate);
  engine.addEventListener("busy", onBusy);
  engine.addEventListener("state", onState);
  engine.addEventListener("ready", onReady);
  onBusy();
  onState();
  if (engine.state === "live") onReady();
  app.onLeave(() => {
    for (const [n, f] of [["pin-mismatch", onPinMismatch], ["pinned", onPinned], ["add", onAdd], ["update", onUpdate], ["busy", onBusy], ["state", onState], ["ready", onReady]]) engine.removeEventListener(n, f);
  });

  // Channels: the topics of a /ws chat (api:<chat>:<channel>); each is its own session and stream.
  async function drawChannels() {
    clear(channelBox);
    if (engine.mode !== "ws") return;
    const chat = engine.authOk ? engine.authOk.chat_id : null;
    if (!chat) return;
    const here = engine.authOk.channel_id ? String(engine.authOk.channel_id) : "";
    let topics = [];
    try {
      const list = await get("/api/sessions?limit=200");
      topics = list.sessions.map((s) => s.key.split(":")).filter((k) => k[0] === "api" && k[1] === String(chat) && k[2]).map((k) => k[2]);
    } catch {
      /* the list is a convenience */
    }
    if (here && !topics.includes(here)) topics.push(here);
    const select = h("select", { "aria-label": "Channel", id: "channel-select" },
      h("option", { value: "" }, "# main"),
      topics.sort((a, b) => a - b).map((t) => h("option", { value: t }, `# ${t}`)),
      h("option", { value: "new" }, "+ new channel"));
    select.value = here;
    select.addEventListener("change", () => {
      let topic = select.value;
      if (topic === "new") {
        topic = String(Math.max(0, ...topics.map(Number)) + 1);
      }
      location.hash = `#/chat/${encodeURIComponent(topic ? `api:${chat}:${topic}` : `api:${chat}`)}`;
    });
    channelBox.append(select);
  }

  const grow = () => {
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight, 200)}px`;
  };
  input.addEventListener("input", grow);
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (engine.busy) return;
    let text = input.value.trim();
    const ids = [];
    for (const f of pending.splice(0)) {
      if (f.prompt) text = text ? `${f.prompt}\n${text}` : f.prompt;
      if (f.id) ids.push(f.id);
    }
    clear(chips);
    if (!text) return;
    input.value = "";
    grow();
    engine.send(text, ids);
    messages.scrollTop = messages.scrollHeight;
  });
  stopBtn.addEventListener("click", () => engine.stop());
  fileInput.addEventListener("change", async () => {
    const file = fileInput.files[0];
    fileInput.value = "";
    if (!file) return;
    const chip = h("span", { class: "chip busy" }, `uploading ${file.name}…`);
    chips.append(chip);
    const form = new FormData();
    form.append("file", file);
    try {
      // The gateway token uploads to the workspace (/upload, a <file:…> prompt); accounts use /api/files (an id).
      const r = await raw(isToken() ? "/upload" : "/api/files", { method: "POST", body: form });
      const info = await r.json();
      pending.push(isToken() ? { prompt: info.prompt } : { id: info.id });
      chip.className = "chip";
      clear(chip).append(icon("file"), `${file.name} · ${fmtBytes(file.size)}`);
    } catch (e) {
      chip.remove();
      toast(`upload failed: ${e.message}`, "error");
    }
  });
  input.focus();
}
