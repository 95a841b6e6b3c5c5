// The end-to-end encrypted /ws protocol in the browser (docs/protocol.md). V2Socket speaks v2, the default: the
// server's long-term key pinned (trusted on first use, or given at sign-in), the token never sent, one key per
// direction, counter nonces. E2ESocket speaks v1, for an old gateway when the owner chose it (Account screen):
// plaintext {"type":"auth", token, e2e_pk, …} -> plaintext auth_ok; then base64(nonce(24) || NaCl box) frames.

import { pinned, setPin } from "./pin.js";
import * as v2 from "./v2crypto.js";

const nacl = window.nacl;
const enc = new TextEncoder();
const dec = new TextDecoder();

export function b64encode(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

export function b64decode(text) {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

function sameBytes(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function wsUrl() {
  return `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws`;
}

// What both handshakes share: the socket, and closing it on purpose (the engine does not reconnect then).
class Socket {
  close() {
    this.closedByUs = true;
    try {
      this.ws.close(1000);
    } catch {
      /* already closed */
    }
  }
}

// One connection. Callbacks: onAuth(authOk), onFrame(obj), onClose({code, reason, authError}).
export class E2ESocket extends Socket {
  constructor({ token, chatId, channelId, resumeFrom, onAuth, onFrame, onClose }) {
    super();
    this.keys = nacl.box.keyPair(); // fresh per connection, like the server's
    this.shared = null;
    // Nonces are a 16-byte per-connection prefix and a 64-bit counter, as the gateway sends its own (protocol.md).
    // So a replayed or reordered server frame (counter not above the last) and one of ours reflected back (our
    // prefix) are dropped with O(1) memory, however long the connection lives.
    this.prefix = nacl.randomBytes(16);
    this.sentCount = 0n;
    this.peerPrefix = null;
    this.peerCount = -1n;
    this.onAuth = onAuth;
    this.onFrame = onFrame;
    this.onClose = onClose;
    this.closedByUs = false;
    const hello = { type: "auth", token, e2e_pk: b64encode(this.keys.publicKey) };
    if (chatId) hello.chat_id = chatId;
    if (channelId) hello.channel_id = channelId;
    if (resumeFrom !== null && resumeFrom !== undefined) hello.resume_from = resumeFrom;
    this.ws = new WebSocket(wsUrl());
    this.ws.onopen = () => this.ws.send(JSON.stringify(hello));
    this.ws.onmessage = (m) => this._receive(m.data);
    this.ws.onclose = (e) => {
      if (this.onClose) this.onClose({ code: e.code, reason: e.reason, authError: this.authError, byUs: this.closedByUs });
    };
    this.ws.onerror = () => {}; // onclose follows and carries what we need
  }

  get open() {
    return this.shared !== null && this.ws.readyState === WebSocket.OPEN;
  }

  _receive(data) {
    if (typeof data !== "string") return;
    if (this.shared === null) {
      let msg;
      try {
        msg = JSON.parse(data);
      } catch {
        return;
      }
      if (msg.type === "auth_ok") {
        this.shared = nacl.box.before(b64decode(msg.e2e_pk), this.keys.secretKey);
        this.onAuth(msg);
      } else if (msg.type === "error") {
        this.authError = msg;
      }
      return;
    }
    let raw;
    try {
      raw = b64decode(data);
    } catch {
      return;
    }
    if (raw.length < 24 + 16) return;
    const nonce = raw.subarray(0, 24);
    const prefix = nonce.subarray(0, 16);
    const count = new DataView(nonce.buffer, nonce.byteOffset + 16, 8).getBigUint64(0);
    if (sameBytes(prefix, this.prefix)) return; // reflected
    if (this.peerPrefix && (!sameBytes(prefix, this.peerPrefix) || count <= this.peerCount)) return; // replayed
    const plain = nacl.box.open.after(raw.subarray(24), nonce, this.shared);
    if (!plain) return;
    // Only an authentic frame moves the window, so garbage cannot shift it.
    this.peerPrefix = this.peerPrefix || prefix.slice();
    this.peerCount = count;
    let obj;
    try {
      obj = JSON.parse(dec.decode(plain));
    } catch {
      return;
    }
    this.onFrame(obj);
  }

  send(obj) {
    if (!this.open) return false;
    const nonce = new Uint8Array(24);
    nonce.set(this.prefix);
    new DataView(nonce.buffer, 16, 8).setBigUint64(0, this.sentCount);
    this.sentCount += 1n;
    const box = nacl.box.after(enc.encode(JSON.stringify(obj)), nonce, this.shared);
    const frame = new Uint8Array(24 + box.length);
    frame.set(nonce);
    frame.set(box, 24);
    this.ws.send(b64encode(frame));
    return true;
  }
}

// A v2 frame that does not open is dropped; this many in a row means the stream is out of step (a frame was lost
// or forged in its place): the socket is closed and the engine reconnects with resume_from, losing nothing.
const MAX_BAD_FRAMES = 8;

// Same callbacks as E2ESocket; onClose's info may carry `pinError: {pinned, offered}` (the server's key changed:
// nothing was sent after the hello, and the engine must not retry).
export class V2Socket extends Socket {
  constructor({ token, chatId, channelId, resumeFrom, onAuth, onFrame, onClose, forceNacl = false }) {
    super();
    this.token = token;
    this.channel = null;
    this.onAuth = onAuth;
    this.onFrame = onFrame;
    this.onClose = onClose;
    this.closedByUs = false;
    this.bad = 0;
    this.queue = Promise.resolve(); // the handshake's steps are async: frames are handled one after the other
    this.ready = v2.ephemeral({ forceNacl }).then((eph) => {
      this.eph = eph;
      this.backend = eph.backend;
      const hello = { type: "auth", v: 2, e2e_pk: b64encode(eph.publicKey), nonce: b64encode(nacl.randomBytes(32)) };
      if (chatId) hello.chat_id = chatId;
      if (channelId) hello.channel_id = channelId;
      if (resumeFrom !== null && resumeFrom !== undefined) hello.resume_from = resumeFrom;
      this.hello = JSON.stringify(hello); // the server hashes these exact bytes into the transcript
    });
    this.ws = new WebSocket(wsUrl());
    this.ws.binaryType = "arraybuffer";
    this.ws.onopen = () => this.ready.then(() => this.ws.send(this.hello)).catch((e) => this._fail("protocol", e.message));
    this.ws.onmessage = (m) => {
      this.queue = this.queue.then(() => this._receive(m.data)).catch((e) => this._fail("protocol", e.message));
    };
    this.ws.onclose = (e) => {
      if (this.onClose) this.onClose({ code: e.code, reason: e.reason, authError: this.authError, pinError: this.pinError, byUs: this.closedByUs });
    };
    this.ws.onerror = () => {};
  }

  get open() {
    return this.channel !== null && this.authed && this.ws.readyState === WebSocket.OPEN;
  }

  _fail(code, message) {
    this.authError = { code, message };
    this.ws.close(1000);
  }

  async _receive(data) {
    if (typeof data === "string") {
      let msg;
      try {
        msg = JSON.parse(data);
      } catch {
        return;
      }
      if (msg.type === "auth_challenge" && !this.challenged) await this._challenge(msg);
      else if (msg.type === "error") this.authError = msg; // plaintext: the auth phase (the socket closes next)
      return;
    }
    if (!this.channel) return;
    const plain = this.channel.open(new Uint8Array(data));
    if (!plain) {
      this.bad += 1;
      if (this.bad >= MAX_BAD_FRAMES) this.ws.close(4000, "decrypt_failed");
      return;
    }
    this.bad = 0;
    let obj;
    try {
      obj = JSON.parse(dec.decode(plain));
    } catch {
      return;
    }
    if (!this.authed) {
      if (obj.type !== "auth_ok") {
        this.authError = obj; // frame 0 is auth_ok or the reason the session could not open
        return;
      }
      this.authed = true;
      obj.v = 2;
      obj.fingerprint = this.fingerprint;
      if (!pinned()) {
        // Trust on first use, once the server has proved its key and opened a session only the token could key.
        setPin(this.fingerprint, "first use");
        obj.pinnedNow = true;
      }
      this.onAuth(obj);
      return;
    }
    this.onFrame(obj);
  }

  async _challenge(msg) {
    this.challenged = true;
    const field = (name, len) => {
      const raw = typeof msg[name] === "string" ? b64decode(msg[name]) : new Uint8Array(0);
      if (raw.length !== len) throw new Error(`bad auth_challenge: ${name}`);
      return raw;
    };
    const serverPk = field("server_pk", 32);
    const serverEph = field("e2e_pk", 32);
    const serverNonce = field("nonce", 32);
    const proof = field("proof", 32);
    this.fingerprint = v2.fingerprint(serverPk);
    const pin = pinned();
    if (pin && pin.fingerprint !== this.fingerprint) {
      // A changed server key: say so and stop here. Nothing but the hello was sent, and the token never is.
      this.pinError = { pinned: pin.fingerprint, offered: this.fingerprint };
      this.ws.close(1000);
      return;
    }
    const th = v2.transcript(enc.encode(this.hello), serverPk, serverEph, serverNonce);
    const sdh = await this.eph.dh(serverPk);
    if (!v2.equalBytes(proof, v2.serverProof(th, sdh))) {
      this._fail("bad_server_proof", "the server does not hold the key it claims");
      return;
    }
    const tkey = v2.tokenKey(this.token);
    const kx = v2.kxClient(await this.eph.dh(serverEph), this.eph.publicKey, serverEph);
    this.channel = new v2.CounterChannel(v2.sessionKeys(kx, sdh, th, tkey));
    this.ws.send(JSON.stringify({ type: "auth_proof", proof: b64encode(v2.clientProof(th, tkey)) }));
  }

  send(obj) {
    if (!this.open) return false;
    this.ws.send(this.channel.seal(enc.encode(JSON.stringify(obj))));
    return true;
  }
}
