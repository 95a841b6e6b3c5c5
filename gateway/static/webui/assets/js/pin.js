// What the browser keeps about the gateway's identity (v2 of /ws): the pinned fingerprint of its long-term key and
// which handshake to speak. Kept apart from the credential, so signing out does not forget the pin.

const PIN = "gateway.pin";
const HANDSHAKE = "gateway.handshake";

function read(key) {
  try {
    return JSON.parse(localStorage.getItem(key) || "null");
  } catch {
    return null;
  }
}

// { fingerprint, since (ISO time), how: "first use" | "given" } or null
export function pinned() {
  return read(PIN);
}

export function setPin(fingerprint, how) {
  localStorage.setItem(PIN, JSON.stringify({ fingerprint, since: new Date().toISOString(), how }));
}

export function forgetPin() {
  localStorage.removeItem(PIN);
}

// "v2" (the default) or "v1": only an owner who chose it for an old gateway gets v1, never a fallback on its own.
export function handshake() {
  return read(HANDSHAKE) === "v1" ? "v1" : "v2";
}

export function setHandshake(v) {
  if (v === "v1") localStorage.setItem(HANDSHAKE, JSON.stringify("v1"));
  else localStorage.removeItem(HANDSHAKE);
}
