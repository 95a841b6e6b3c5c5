// The primitives of the v2 handshake (docs/protocol.md, "v2"), exactly as written there. X25519 on WebCrypto where
// the browser has it (a secure context: https or localhost), else tweetnacl's scalar multiplication; BLAKE2b from
// the vendored @noble/hashes (neither has it); XSalsa20-Poly1305 from tweetnacl (WebCrypto has no such cipher).

import { blake2b } from "../vendor/noble-hashes/blake2.js";

const nacl = window.nacl;
const enc = new TextEncoder();

function person(label) {
  const out = new Uint8Array(16);
  out.set(enc.encode(label));
  return out;
}

// H(data; key, person): BLAKE2b with a 32-byte digest, keyed when `key` is given, salt zero, person zero-padded.
export function H(data, key, label) {
  return blake2b(data, { dkLen: 32, key: key || undefined, personalization: person(label) });
}

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

// lp(x): the length of x as 4 bytes big-endian, then x.
export function lp(x) {
  const out = new Uint8Array(4 + x.length);
  new DataView(out.buffer).setUint32(0, x.length);
  out.set(x, 4);
  return out;
}

export function equalBytes(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

// "gw1:" + 32 hex digits of a 16-byte BLAKE2b of the server's public key (person gw-fingerprint), in groups of 4.
export function fingerprint(serverPk) {
  const digest = blake2b(serverPk, { dkLen: 16, personalization: person("gw-fingerprint") });
  const hex = [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `gw1:${hex.match(/.{4}/g).join("-")}`;
}

export const FINGERPRINT = /^gw1:[0-9a-f]{4}(-[0-9a-f]{4}){7}$/;

export const tokenKey = (token) => H(enc.encode(token), null, "gw-v2-token");

export const transcript = (hello, serverPk, serverEph, serverNonce) =>
  H(concat(lp(enc.encode("gw-e2e-v2")), lp(hello), lp(serverPk), lp(serverEph), lp(serverNonce)), null, "gw-v2-th");

export const serverProof = (th, sdh) => H(th, H(sdh, null, "gw-v2-sdh"), "gw-v2-server");

export const clientProof = (th, tkey) => H(th, tkey, "gw-v2-client");

// crypto_kx, the client's side: (rx, tx) from BLAKE2b-512(q ‖ client_pk ‖ server_pk).
export function kxClient(q, clientPk, serverPk) {
  const h = blake2b(concat(q, clientPk, serverPk), { dkLen: 64 });
  return { rx: h.slice(0, 32), tx: h.slice(32, 64) };
}

export function sessionKeys(kx, sdh, th, tkey) {
  return {
    send: H(concat(lp(kx.tx), lp(sdh), lp(th)), tkey, "gw-v2-c2s"),
    receive: H(concat(lp(kx.rx), lp(sdh), lp(th)), tkey, "gw-v2-s2c"),
  };
}

// ---- X25519: an ephemeral key pair and raw Diffie-Hellman ----

function subtleX25519() {
  return !!(window.isSecureContext && crypto.subtle && crypto.subtle.generateKey);
}

function refuseZero(shared) {
  // A low-order peer key gives the all-zero secret (libsodium refuses it; WebCrypto throws; tweetnacl does not).
  if (shared.every((b) => b === 0)) throw new Error("the peer's key is not a usable Curve25519 key");
  return shared;
}

// { publicKey: Uint8Array(32), dh(peerPk) -> Promise<Uint8Array(32)>, backend }
export async function ephemeral({ forceNacl = false } = {}) {
  if (!forceNacl && subtleX25519()) {
    try {
      const pair = await crypto.subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]);
      const publicKey = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
      const dh = async (peer) => {
        const key = await crypto.subtle.importKey("raw", peer, { name: "X25519" }, true, []);
        return refuseZero(new Uint8Array(await crypto.subtle.deriveBits({ name: "X25519", public: key }, pair.privateKey, 256)));
      };
      return { publicKey, dh, backend: "webcrypto" };
    } catch (e) {
      if (e && e.name !== "NotSupportedError") throw e; // a browser without X25519 in WebCrypto falls through
    }
  }
  const pair = nacl.box.keyPair();
  const dh = async (peer) => refuseZero(nacl.scalarMult(pair.secretKey, peer));
  return { publicKey: pair.publicKey, dh, backend: "tweetnacl" };
}

// ---- frames: SecretBox per direction, nonce = 16 zero bytes ‖ u64be(counter), never sent ----

function counterNonce(n) {
  const nonce = new Uint8Array(24);
  new DataView(nonce.buffer).setBigUint64(16, n);
  return nonce;
}

export class CounterChannel {
  constructor(keys) {
    this.keys = keys;
    this.sent = 0n;
    this.received = 0n;
  }

  seal(plain) {
    const box = nacl.secretbox(plain, counterNonce(this.sent), this.keys.send);
    this.sent += 1n;
    return box;
  }

  // The plaintext, or null when the frame does not open under the next counter (replayed, reordered, reflected,
  // tampered); only a frame that opens moves the counter.
  open(frame) {
    const plain = nacl.secretbox.open(frame, counterNonce(this.received), this.keys.receive);
    if (!plain) return null;
    this.received += 1n;
    return plain;
  }
}
