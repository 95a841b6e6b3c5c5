// The v1 end-to-end encrypted /ws protocol in the browser, on the vendored tweetnacl (window.nacl).
// Handshake: plaintext {"type":"auth", token, e2e_pk, chat_id?, channel_id?, resume_from?} -> plaintext auth_ok
// with the server's per-connection key; then every frame is base64(nonce(24) || NaCl box) of compact JSON.

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

// One connection. Callbacks: onAuth(authOk), onFrame(obj), onClose({code, reason, authError}).
export class E2ESocket {
  constructor({ token, chatId, channelId, resumeFrom, onAuth, onFrame, onClose }) {
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

  close() {
    this.closedByUs = true;
    try {
      this.ws.close(1000);
    } catch {
      /* already closed */
    }
  }
}
