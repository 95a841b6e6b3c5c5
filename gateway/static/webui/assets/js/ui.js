// DOM helpers: every text goes in through textContent, never innerHTML, so nothing a user or agent writes runs.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "value") el.value = v;
    else if (k === "checked") el.checked = !!v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

// Toasts sit at the top right under the top bar (the composer and its Send button are at the bottom), go away by
// themselves or on a click, and are all cleared when someone signs in or out: a notice is about the session it
// was raised in.
let toastBox = null;
export function toast(message, kind = "info", ms = 4000) {
  if (!toastBox) {
    toastBox = h("div", { class: "toasts", role: "status", "aria-live": "polite" });
    document.body.append(toastBox);
  }
  const t = h("div", { class: `toast ${kind}`, title: "Dismiss", onclick: () => t.remove() }, message);
  toastBox.append(t);
  setTimeout(() => t.remove(), ms);
}

export function clearToasts() {
  if (toastBox) clear(toastBox);
}

export function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const today = new Date();
  return d.toDateString() === today.toDateString()
    ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : d.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

export function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

// A page section with a title bar and optional actions on the right.
export function panel(title, actions = [], ...body) {
  return h("section", { class: "panel" }, h("header", { class: "panel-head" }, h("h2", { text: title }), h("div", { class: "actions" }, actions)), ...body);
}

// The message a screen shows when a route is absent on this gateway (404) or needs the gateway token (401/403).
export function unavailable(err, what) {
  if (err && err.status === 404) return h("p", { class: "notice" }, `${what} is not available on this gateway (its API answers 404).`);
  if (err && (err.status === 401 || err.status === 403)) return h("p", { class: "notice" }, `${what} needs the gateway token or an admin account.`);
  return h("p", { class: "notice error" }, `${what}: ${err ? err.message : "unknown error"}`);
}

export function field(label, input, hint) {
  return h("label", { class: "field" }, h("span", { text: label }), input, hint ? h("small", { text: hint }) : null);
}

export function button(label, onclick, cls = "") {
  return h("button", { type: "button", class: cls, onclick }, label);
}

// A small confirm step inside the page (window.confirm is blocked in some embedded browsers and ugly on phones).
export function confirmButton(label, question, onConfirm, cls = "danger") {
  const b = button(label, () => {
    if (b.dataset.armed) {
      onConfirm();
      return;
    }
    b.dataset.armed = "1";
    b.textContent = question;
    setTimeout(() => {
      delete b.dataset.armed;
      b.textContent = label;
    }, 3000);
  }, cls);
  return b;
}

// An API error in full, for the form that caused it: the server's message and each problem it names (a 422's
// `details`: `{loc, message}` objects, or plain strings such as a skill's risk reasons).
export function errorBox(err, id) {
  const box = h("div", { class: "notice error form-error", role: "alert", id }, h("strong", { text: err.message }));
  const details = Array.isArray(err.details) ? err.details : [];
  if (details.length) box.append(h("ul", {}, details.map((d) => h("li", { text: describeProblem(d) }))));
  return box;
}

function describeProblem(d) {
  if (d && typeof d === "object") {
    const loc = Array.isArray(d.loc) ? d.loc.filter((p) => p !== "body").join(" › ") : d.field || "";
    const msg = d.message || "";
    return loc && msg ? `${loc}: ${msg}` : loc || msg || JSON.stringify(d);
  }
  return String(d);
}

// Outline the inputs a 422 names (the field is `details[].loc[at]`, e.g. ["body", field]); clear the others.
export function markInvalid(inputs, err, at = 1) {
  const bad = new Set((Array.isArray(err && err.details) ? err.details : []).map((d) => d && Array.isArray(d.loc) && d.loc[at]));
  for (const [name, input] of Object.entries(inputs)) {
    if (bad.has(name)) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  }
}

// A switch bound to a server-side flag: flips at once, calls `save(checked)`, and flips back if that fails.
export function switchInput(checked, label, save, id) {
  const input = h("input", { type: "checkbox", class: "switch", checked, "aria-label": label, id });
  input.addEventListener("change", async () => {
    input.disabled = true;
    try {
      await save(input.checked);
    } catch (e) {
      toast(e.message, "error");
      input.checked = !input.checked;
    } finally {
      input.disabled = false;
    }
  });
  return input;
}
