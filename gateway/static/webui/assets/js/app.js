// The app shell: login, the hash router, navigation, and the live notification badge.

import { auth, get, isToken, login, setAuth, useOwnerLink, useToken } from "./api.js";
import { chatState, chatView } from "./chat.js";
import { connectorsView } from "./connectors.js";
import { modelsView } from "./models.js";
import { skillsView } from "./skills.js";
import { mcpView } from "./tools.js";
import { cronView } from "./cron.js";
import { logsView, notificationsView } from "./panels.js";
import { followNotifications } from "./notes.js";
import { accountView, usersView } from "./accounts.js";
import { overviewView } from "./overview.js";
import { usageView } from "./usage.js";
import { FINGERPRINT } from "./v2crypto.js";
import { setPin } from "./pin.js";
import { sessionsView } from "./sessions.js";
import { icon } from "./icons.js";
import { clear, clearToasts, h, toast } from "./ui.js";

const ROUTES = [
  ["overview", "Overview"],
  ["chat", "Chat"],
  ["sessions", "Sessions"],
  ["notifications", "Notifications"],
  ["cron", "Cron"],
  ["connectors", "Connectors"],
  ["models", "Models"],
  ["mcp", "MCP"],
  ["skills", "Skills"],
  ["usage", "Usage"],
  ["users", "Users"],
  ["logs", "Logs"],
  ["account", "Account"],
];

const root = document.getElementById("app");
let leaveHooks = [];
let liveHooks = [];
let unread = 0;
let badgeEls = [];
let pollTimer = null;
let stopNotes = null;
const shown = new Set(); // notification ids already shown: /ws and the stream both carry them to a token session

const app = {
  onLeave(fn) {
    leaveHooks.push(fn);
  },
  onNotificationLive(fn) {
    liveHooks.push(fn);
  },
  onNotification(note) {
    // Pushed (the stream, /ws): bump the badge at once, show it, then let the open screen redraw.
    if (shown.has(note.id)) return;
    if (shown.size > 1000) shown.clear();
    shown.add(note.id);
    if (!note.read) setUnread(unread + 1);
    toast(`${note.title}${note.body ? ` — ${note.body.slice(0, 120)}` : ""}`, "note", 6000);
    for (const fn of liveHooks) fn(note);
  },
  async refreshBadge() {
    try {
      setUnread((await get("/api/notifications/unread-count")).count);
    } catch {
      /* offline: keep the last count */
    }
  },
};

function setUnread(n) {
  unread = n;
  for (const b of badgeEls) {
    b.textContent = n > 99 ? "99+" : String(n);
    b.hidden = n === 0;
  }
}

function loginView(reason = "") {
  clearToasts();
  clear(root);
  root.className = "login-shell";
  const err = h("p", { class: "error", role: "alert", id: "login-error" }, reason);
  const token = h("input", { id: "login-token", type: "password", autocomplete: "current-password", placeholder: "gateway token", "aria-label": "Gateway token" });
  const user = h("input", { id: "login-user", autocomplete: "username", placeholder: "username or email", "aria-label": "Username" });
  const pass = h("input", { id: "login-pass", type: "password", autocomplete: "current-password", placeholder: "password", "aria-label": "Password" });
  const pin = h("input", { id: "login-fingerprint", autocomplete: "off", spellcheck: "false", placeholder: "gw1:xxxx-…  (optional)", "aria-label": "Server fingerprint" });
  const tokenForm = h("form", { class: "login-form", id: "token-form" }, token,
    h("details", { class: "pin-details" }, h("summary", {}, "Server fingerprint (optional)"), pin,
      h("small", { class: "muted" }, "Given, the chat talks only to the gateway whose key has it; else the first one seen is pinned.")),
    h("button", { type: "submit", class: "primary" }, "Sign in with token"),
    h("small", { class: "muted" }, "Run `gateway token` on the gateway's machine to print both."));
  const userForm = h("form", { class: "login-form", id: "user-form", hidden: true }, user, pass, h("button", { type: "submit", class: "primary" }, "Sign in"));
  const tabs = h("div", { class: "tabs", role: "tablist" });
  const tab = (label, form) => {
    const b = h("button", { type: "button", role: "tab", class: "tab" }, label);
    b.addEventListener("click", () => {
      tokenForm.hidden = form !== tokenForm;
      userForm.hidden = form !== userForm;
      for (const t of tabs.children) t.classList.toggle("active", t === b);
      (form === tokenForm ? token : user).focus();
    });
    return b;
  };
  tabs.append(tab("Gateway token", tokenForm), tab("Account", userForm));
  tabs.firstChild.classList.add("active");
  const done = () => {
    history.replaceState(null, "", "#/chat"); // no hashchange: start() routes once
    start();
  };
  tokenForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const given = pin.value.trim().toLowerCase();
    if (given && !FINGERPRINT.test(given)) {
      err.textContent = "That is not a fingerprint: `gateway token` prints one like gw1:1a2b-…-9f00 (8 groups of 4).";
      return;
    }
    try {
      await useToken(token.value.trim());
      if (given) setPin(given, "given"); // said at sign-in: it replaces any pin kept before
      done();
    } catch (x) {
      err.textContent = x.status === 401 ? "That token is not valid." : x.message;
    }
  });
  userForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await login(user.value.trim(), pass.value);
      done();
    } catch (x) {
      err.textContent = x.message;
    }
  });
  root.append(h("div", { class: "login-card" }, h("div", { class: "brand big" }, h("img", { src: "/assets/icon.svg", alt: "" }), "Agent gateway"), tabs, tokenForm, userForm, err));
  token.focus();
}

function shell() {
  root.className = "shell";
  clear(root);
  badgeEls = [];
  const badge = () => {
    const b = h("span", { class: "badge", hidden: true });
    badgeEls.push(b);
    return b;
  };
  const nav = h("nav", { class: "nav", id: "nav" },
    h("div", { class: "brand" }, h("img", { src: "/assets/icon.svg", alt: "" }), "Gateway"),
    ROUTES.map(([id, label]) => h("a", { href: `#/${id}`, "data-route": id }, icon(id), h("span", { text: label }), id === "notifications" ? badge() : null)),
    h("div", { class: "spacer" }),
    h("div", { class: "who muted", text: isToken() ? "gateway token (admin)" : `${auth.user.username || auth.user.email} (${auth.user.role})` }),
    h("button", { type: "button", class: "small", id: "logout", onclick: () => logout() }, "Sign out"));
  const menu = h("button", { type: "button", class: "icon menu", "aria-label": "Menu", onclick: () => root.classList.toggle("nav-open") }, icon("menu"));
  const bell = h("a", { href: "#/notifications", class: "bell", "aria-label": "Notifications", id: "bell" }, icon("bell"), badge());
  const title = h("h1", { class: "title", id: "screen-title" });
  const top = h("header", { class: "topbar" }, menu, title, h("div", { class: "spacer" }), bell);
  const view = h("main", { class: "view", id: "view" });
  const scrim = h("div", { class: "scrim", onclick: () => root.classList.remove("nav-open") });
  root.append(nav, scrim, h("div", { class: "main" }, top, view));
  return { view, title, nav };
}

function logout(reason = "") {
  if (chatState.engine) chatState.engine.close();
  chatState.engine = null;
  chatState.ref = null;
  chatState.pending = null;
  stopFollowing();
  setAuth(null);
  loginView(reason);
}

let parts = null;

async function route() {
  if (!auth) return loginView();
  if (!parts) parts = shell();
  for (const fn of leaveHooks) fn();
  leaveHooks = [];
  liveHooks = [];
  root.classList.remove("nav-open");
  const [name = "chat", ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  const ref = rest.length ? decodeURIComponent(rest.join("/")) : "";
  const known = ROUTES.find((r) => r[0] === name);
  parts.title.textContent = known ? known[1] : "Chat";
  for (const a of parts.nav.querySelectorAll("a")) a.classList.toggle("active", a.dataset.route === (known ? name : "chat"));
  const v = parts.view;
  v.className = `view view-${known ? name : "chat"}`;
  const screens = { overview: () => overviewView(v, app), users: () => usersView(v), account: () => accountView(v), chat: () => chatView(v, ref, app), sessions: () => sessionsView(v), notifications: () => notificationsView(v, app), cron: () => cronView(v), connectors: () => connectorsView(v), models: () => modelsView(v), mcp: () => mcpView(v, app), skills: () => skillsView(v), usage: () => usageView(v), logs: () => logsView(v, app) };
  try {
    await (screens[name] || screens.chat)();
  } catch (e) {
    toast(e.message, "error");
  }
}

function start() {
  clearToasts();
  parts = null;
  route();
  app.refreshBadge();
  // Notifications are pushed over their SSE stream as they are made; a slow poll of the count only while it is down.
  stopFollowing();
  stopNotes = followNotifications({
    onNote: (note) => app.onNotification(note),
    onUp: () => {
      pushState("live");
      clearInterval(pollTimer);
      pollTimer = null;
    },
    onDown: () => {
      pushState("down");
      pollTimer ??= setInterval(() => app.refreshBadge(), 60_000);
    },
  });
}

// Whether notifications arrive as they are made (the bell's title says so; tests wait on the attribute).
function pushState(state) {
  const bell = document.getElementById("bell");
  if (!bell) return;
  bell.dataset.push = state;
  bell.title = state === "live" ? "Notifications (live)" : "Notifications (reconnecting; checked every minute)";
}

function stopFollowing() {
  if (stopNotes) stopNotes();
  stopNotes = null;
  clearInterval(pollTimer);
  pollTimer = null;
}

// `gateway dashboard` prints `/#/signin/<code>`: trade the code for the owner's credential, then open the overview.
// The code leaves the address bar (and the history) before anything else happens: it works once anyway.
async function signInWithLink(code) {
  history.replaceState(null, "", "#/overview");
  try {
    await useOwnerLink(code);
  } catch (x) {
    const why = x.status === 401 ? "This sign-in link was used already or has expired." : x.message;
    const text = `${why} Run \`gateway dashboard\` on the gateway's machine for a new one.`;
    if (!auth) return loginView(text);
    start(); // already signed in: stay so, and say why the link did nothing
    toast(text, "error");
    return;
  }
  start();
}

const LINK = /^#\/signin\/([A-Za-z0-9_-]{1,128})$/;

window.addEventListener("hashchange", () => {
  const link = location.hash.match(LINK); // a link pasted into a tab already open on the web UI
  if (link) signInWithLink(link[1]);
  else route();
});
window.addEventListener("gateway:unauthorized", () => {
  if (!auth) return;
  logout("Signed out: the gateway refused the credential. Sign in again.");
});
const link = location.hash.match(LINK);
if (link) signInWithLink(link[1]);
else if (auth) start();
else loginView();
