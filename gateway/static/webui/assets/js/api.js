// The REST client: credentials kept in localStorage, Bearer auth, error bodies turned into ApiError.

const KEY = "gateway.auth";

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

// { kind: "token", token } or { kind: "user", access, refresh, user }
export let auth = load();

function load() {
  try {
    const raw = localStorage.getItem(KEY);
    return raw ? JSON.parse(raw) : null;
  } catch {
    return null;
  }
}

export function setAuth(value) {
  auth = value;
  if (value) localStorage.setItem(KEY, JSON.stringify(value));
  else localStorage.removeItem(KEY);
}

export function isToken() {
  return !!auth && auth.kind === "token";
}

// The gateway token and super_admin accounts may change the configuration; others only read it.
export function canAdmin() {
  return !!auth && (auth.kind === "token" || (auth.user && auth.user.role === "super_admin"));
}

export function bearer() {
  if (!auth) return "";
  return auth.kind === "token" ? auth.token : auth.access;
}

let refreshing = null;
async function refresh() {
  if (!auth || auth.kind !== "user") return false;
  refreshing ??= (async () => {
    const r = await fetch("/api/auth/refresh", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ refresh_token: auth.refresh }),
    });
    if (!r.ok) return false;
    const t = await r.json();
    setAuth({ ...auth, access: t.access_token, refresh: t.refresh_token });
    return true;
  })().finally(() => {
    refreshing = null;
  });
  return refreshing;
}

async function toError(r) {
  let body = null;
  try {
    body = await r.json();
  } catch {
    /* not JSON */
  }
  const e = body && body.error ? body.error : {};
  return new ApiError(r.status, e.code || "HTTP_ERROR", e.message || r.statusText, e.details);
}

// fetch with auth; retries once after refreshing an expired user token. Returns the Response (ok) or throws.
export async function raw(path, opts = {}, retry = true) {
  const headers = new Headers(opts.headers || {});
  if (bearer()) headers.set("Authorization", `Bearer ${bearer()}`);
  const r = await fetch(path, { ...opts, headers });
  if (r.status === 401 && auth && retry) {
    // A wrong current password (changing one's own) is the form's error: the credential itself was taken.
    const refused = await toError(r.clone());
    if (refused.code === "INVALID_CREDENTIALS") throw refused;
    // Sign out only when the credential itself is refused: a route that takes only the gateway token also
    // answers 401 to a (freshly refreshed, valid) account token, and that must not end the session.
    if (auth.kind === "user" && (await refresh())) return raw(path, opts, false);
    window.dispatchEvent(new CustomEvent("gateway:unauthorized"));
  }
  if (!r.ok) throw await toError(r);
  return r;
}

export async function api(method, path, body) {
  const opts = { method };
  if (body !== undefined) {
    opts.body = JSON.stringify(body);
    opts.headers = { "Content-Type": "application/json" };
  }
  const r = await raw(path, opts);
  if (r.status === 204) return null;
  const text = await r.text();
  return text ? JSON.parse(text) : null;
}

export const get = (p) => api("GET", p);
export const post = (p, b = {}) => api("POST", p, b);
export const put = (p, b) => api("PUT", p, b);
export const patch = (p, b) => api("PATCH", p, b);
export const del = (p) => api("DELETE", p);

export async function login(username, password) {
  const r = await fetch("/api/auth/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(username.includes("@") ? { email: username, password } : { username, password }),
  });
  if (!r.ok) throw await toError(r);
  const b = await r.json();
  setAuth({ kind: "user", access: b.tokens.access_token, refresh: b.tokens.refresh_token, user: b.user });
}

// Checked before it is kept: a refused token is the sign-in form's error, not a session being signed out.
export async function useToken(token) {
  const r = await fetch("/api/sessions?limit=1", { headers: { Authorization: `Bearer ${token}` } });
  if (!r.ok) throw await toError(r);
  setAuth({ kind: "token", token });
}

// A `gateway dashboard` link's single-use code, traded for the gateway token: the owner is signed in.
export async function useOwnerLink(code) {
  const r = await fetch("/api/auth/owner-link", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ code }),
  });
  if (!r.ok) throw await toError(r);
  setAuth({ kind: "token", token: (await r.json()).token });
}

// Download a file that needs the Authorization header: fetch it, then hand the blob to the browser.
export async function download(url, name) {
  const r = await raw(url);
  const blob = await r.blob();
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name || "download";
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}
