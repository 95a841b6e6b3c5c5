// One open conversation: its history (REST), its live stream (/ws for `api:` chats with the gateway token, else the
// SSE chat route), and the message list the chat screen draws. Every event carries its per-session `seq`; anything at
// or below the last seq seen is dropped, which is what makes resume lose nothing and repeat nothing.

import { E2ESocket, V2Socket } from "./e2e.js";
import { handshake } from "./pin.js";
import { bearer, get, isToken, post, raw } from "./api.js";

let nextId = 1;

export class ChatEngine extends EventTarget {
  // target: { session_id?, key?, chat_id?, channel_id? }
  constructor(target) {
    super();
    this.target = target;
    this.sessionId = target.session_id || null;
    this.items = [];
    this.cur = null; // the assistant message being streamed
    this.lastSeq = 0;
    this.busy = false;
    this.state = "connecting"; // connecting | live | reconnecting | offline | error
    this.mode = ChatEngine.modeFor(target);
    this.sock = null;
    this.historyLoaded = false;
    this.buffer = null;
    this.retry = 0;
    this.closed = false;
    this.outbox = [];
    this.unacked = []; // messages sent over /ws v2 whose turn_started has not come back yet
    this.sseAbort = null;
    this.reading = Promise.resolve(); // the last "mark read" request
  }

  // `api:<int>[:<int>]` sessions are the /ws chats; the gateway token is the only credential /ws takes.
  static modeFor(t) {
    if (!isToken()) return "sse";
    if (!t.key) return "ws";
    const [transport, chat, topic] = t.key.split(":");
    const ok = transport === "api" && /^[1-9][0-9]*$/.test(chat || "") && (!topic || /^[1-9][0-9]*$/.test(topic));
    return ok ? "ws" : "sse";
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  setState(s) {
    this.state = s;
    this.emit("state", s);
  }

  setBusy(b) {
    this.busy = b;
    this.emit("busy", b);
  }

  start() {
    if (this.mode === "ws") this.connect(null);
    else this.openSse();
  }

  close() {
    this.closed = true;
    if (this.sock) this.sock.close();
    if (this.sseAbort) this.sseAbort.abort();
    clearTimeout(this.retryTimer);
  }

  // ---- the message model ----

  push(item) {
    item.id = nextId++;
    this.items.push(item);
    this.emit("add", item);
    return item;
  }

  touch(item) {
    this.emit("update", item);
  }

  assistant() {
    if (!this.cur) this.cur = this.push({ role: "assistant", text: "", tools: [], status: null, state: "streaming", files: [] });
    return this.cur;
  }

  // Apply one session event (from history, /ws or SSE). Returns false when it was already seen.
  apply(ev) {
    if (typeof ev.seq === "number") {
      if (ev.seq <= this.lastSeq) return false;
      this.lastSeq = ev.seq;
    }
    switch (ev.type) {
      case "turn_started": {
        // v2 tells every turn's start, ours too: the message we already show is not shown twice.
        const ours = this.unacked.length && this.unacked[0].text === (ev.text || "") ? this.unacked.shift() : null;
        this.cur = null;
        if (!ours) this.push({ role: "user", text: ev.text || "" });
        this.setBusy(true);
        break;
      }
      case "text_delta": {
        const a = this.assistant();
        a.text += ev.data || "";
        this.touch(a);
        this.setBusy(true);
        break;
      }
      case "tool_activity": {
        const a = this.assistant();
        a.tools.push(String(ev.data));
        this.touch(a);
        break;
      }
      case "system_status": {
        if (ev.data === "aborted" || ev.data === "interrupted") {
          this.endTurn(ev.data);
        } else {
          const a = this.assistant();
          a.status = ev.data || null;
          this.touch(a);
        }
        break;
      }
      case "result": {
        const a = this.assistant();
        if (ev.text) a.text = ev.text;
        a.files = ev.files || [];
        a.usage = ev.usage || null;
        a.status = null;
        a.state = "done";
        this.touch(a);
        this.cur = null;
        // Seen as it arrived: no unread badge for the open chat. Started before the turn is reported over, so a
        // screen that redraws the session list then can wait for it (`reading`) and never show a stale badge.
        if (this.historyLoaded) this.reading = this.markRead();
        this.setBusy(false);
        break;
      }
      case "error": {
        if (typeof ev.seq !== "number") {
          // A connection-level error, not part of the session: the message it answers started no turn.
          if (["empty", "rate_limited", "internal_error", "usage_cap_reached"].includes(ev.code)) this.unacked.shift();
          this.emit("notice", ev.message || ev.code);
          break;
        }
        const a = this.assistant();
        a.error = ev.message || ev.code;
        a.state = "error";
        a.status = null;
        this.touch(a);
        this.cur = null;
        this.setBusy(false);
        break;
      }
      case "turn_ended":
        if (ev.state === "aborted" || ev.state === "interrupted") this.endTurn(ev.state);
        else {
          this.cur = null;
          this.setBusy(false);
        }
        break;
      case "abort_ok":
        this.setBusy(false);
        break;
      case "notification":
        this.emit("notification", ev.notification);
        break;
      default:
        break;
    }
    return true;
  }

  endTurn(state) {
    const a = this.cur || [...this.items].reverse().find((i) => i.role === "assistant");
    if (a && a.state === "streaming") {
      a.state = state;
      a.status = null;
      this.touch(a);
    }
    this.cur = null;
    this.setBusy(false);
  }

  async loadHistory() {
    if (!this.sessionId) return;
    let after = 0;
    for (;;) {
      const page = await get(`/api/sessions/${encodeURIComponent(this.sessionId)}/events?after=${after}&limit=1000`);
      for (const ev of page.events) this.apply(ev);
      if (!page.more || page.events.length === 0) break;
      after = page.events[page.events.length - 1].seq;
    }
    // A turn still running in history shows as busy until its end arrives live.
    this.historyLoaded = true;
    this.reading = this.markRead();
  }

  // Opening a chat, or seeing a reply arrive in it, marks it read; resolves once the gateway has (or failed to).
  markRead() {
    if (!this.sessionId || this.closed) return Promise.resolve();
    return post(`/api/sessions/${encodeURIComponent(this.sessionId)}/clear-unread-message-count`).catch(() => {});
  }

  // ---- /ws ----

  connect(resumeFrom) {
    if (this.closed) return;
    const t = this.target;
    const chatId = t.chat_id || (t.key ? Number(t.key.split(":")[1]) : undefined);
    const channelId = t.channel_id || (t.key && t.key.split(":")[2] ? Number(t.key.split(":")[2]) : undefined);
    this.setState(this.retry ? "reconnecting" : "connecting");
    const Socket = handshake() === "v1" ? E2ESocket : V2Socket;
    const sock = new Socket({
      token: bearer(),
      chatId,
      channelId,
      resumeFrom,
      onAuth: (ok) => this.onAuth(sock, ok),
      onFrame: (f) => (this.buffer && sock === this.sock ? this.buffer.push(f) : sock === this.sock && this.apply(f)),
      onClose: (info) => this.onSocketClose(sock, info),
    });
    this.sock = sock;
  }

  async onAuth(sock, ok) {
    this.retry = 0;
    this.authOk = ok;
    this.emit("auth", ok);
    if (ok.pinnedNow) {
      this.newPin = ok.fingerprint;
      this.emit("pinned", ok.fingerprint);
    }
    if (!this.historyLoaded) {
      // First contact: draw the stored history (with the user's prompts), holding live frames meanwhile.
      this.buffer = [];
      this.sessionId = ok.session_id;
      try {
        await this.loadHistory();
      } catch (e) {
        this.emit("notice", `history: ${e.message}`);
        this.historyLoaded = true;
      }
      const held = this.buffer;
      this.buffer = null;
      if (this.lastSeq < ok.last_seq) {
        // Events the server had not stored yet when we read: let /ws replay them after our last seq.
        sock.close();
        this.connect(this.lastSeq);
        return;
      }
      for (const f of held) this.apply(f);
    }
    this.setState("live");
    this.emit("ready", ok);
    const waiting = this.outbox.splice(0);
    for (const text of waiting) this.sendNow(text);
  }

  onSocketClose(sock, info) {
    if (sock !== this.sock || this.closed || info.byUs) return;
    if (info.pinError) {
      // The gateway's identity key is not the pinned one: never retried, never downgraded to v1.
      this.pinError = info.pinError;
      this.setState("error");
      this.emit("pin-mismatch", info.pinError);
      return;
    }
    if (info.authError) {
      this.setState("error");
      this.emit("notice", `${info.authError.code}: ${info.authError.message}`);
      if (info.authError.code === "auth_failed") window.dispatchEvent(new CustomEvent("gateway:unauthorized"));
      return;
    }
    // Dropped (network, gateway restart): come back with resume_from = the last seq we have.
    this.retry += 1;
    this.setState("reconnecting");
    const wait = Math.min(10_000, 500 * 2 ** Math.min(this.retry, 5)) * (0.75 + Math.random() / 2);
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(this.lastSeq), wait);
  }

  sendNow(text) {
    this.cur = null;
    const item = this.push({ role: "user", text });
    if (this.authOk && this.authOk.v === 2) this.unacked.push(item); // v1 sends no turn_started to match
    this.setBusy(true);
    this.sock.send({ type: "message", text });
  }

  // ---- SSE (user accounts, and sessions that are not /ws chats) ----

  async openSse() {
    try {
      await this.loadHistory();
      this.setState("live");
      this.emit("ready", null);
      if (this.busy) await this.stream(null, this.lastSeq); // a turn in flight: follow it to its end
    } catch (e) {
      this.setState("error");
      this.emit("notice", e.message);
    }
  }

  // POST the chat route and apply its SSE events; on a dropped stream, resume with Last-Event-ID.
  async stream(message, resumeAfter) {
    const path = `/api/sessions/${encodeURIComponent(this.sessionId)}/chat`;
    let after = resumeAfter;
    for (let attempt = 0; attempt < 6 && !this.closed; attempt++) {
      const ctl = new AbortController();
      this.sseAbort = ctl;
      const headers = { "Content-Type": "application/json", Accept: "text/event-stream" };
      if (after !== null && after !== undefined) headers["Last-Event-ID"] = String(after);
      try {
        const r = await raw(path, { method: "POST", headers, body: JSON.stringify({ message: message || "resume" }), signal: ctl.signal });
        let restarting = false;
        await readSse(r.body, (ev) => (ev.type === "shutdown" ? (restarting = true) : this.apply(ev)));
        // Cut short by a gateway restart: resume with Last-Event-ID like a dropped stream (below).
        if (restarting) throw new Error("the gateway is restarting");
        // The gateway ends the stream only once no turn is in flight (or none ever started): not busy any more.
        if (this.busy) this.setBusy(false);
        return;
      } catch (e) {
        if (this.closed || e.name === "AbortError") return;
        // A reached daily token cap is a 429 that waiting seconds will not end: said at once, never retried.
        if (e.status && (e.status !== 429 || e.code === "USAGE_CAP_REACHED") && e.status < 500) {
          this.emit("notice", e.message);
          this.setBusy(false);
          return;
        }
        this.setState("reconnecting");
        await new Promise((res) => setTimeout(res, 500 * 2 ** attempt));
        after = this.lastSeq;
        this.setState("live");
      }
    }
  }

  // ---- what the chat screen calls ----

  send(text, fileIds = []) {
    if (this.mode === "ws") {
      if (this.sock && this.sock.open) this.sendNow(text);
      else this.outbox.push(text);
      return;
    }
    this.setBusy(true);
    this.streamWithFiles(text, fileIds);
  }

  async streamWithFiles(text, fileIds) {
    if (!fileIds.length) return this.stream(text, null);
    // Attachments go by id in the body: one request, no resume needed for the submit itself.
    try {
      const r = await raw(`/api/sessions/${encodeURIComponent(this.sessionId)}/chat`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify({ message: text, files: fileIds }),
      });
      await readSse(r.body, (ev) => this.apply(ev));
    } catch (e) {
      this.emit("notice", e.message);
      this.setBusy(false);
    }
  }

  async stop() {
    if (this.mode === "ws") {
      this.sock && this.sock.send({ type: "abort" });
      return;
    }
    try {
      await post(`/api/sessions/${encodeURIComponent(this.sessionId)}/stop`);
    } catch (e) {
      this.emit("notice", e.message);
    }
  }
}

// Parse a text/event-stream body: `data:` lines hold one JSON event each; comments and `[DONE]` are skipped.
export async function readSse(body, onEvent) {
  const reader = body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      const data = block
        .split("\n")
        .filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).replace(/^ /, ""))
        .join("\n");
      if (!data || data === "[DONE]") continue;
      try {
        onEvent(JSON.parse(data));
      } catch {
        /* a malformed event is skipped */
      }
    }
  }
}
