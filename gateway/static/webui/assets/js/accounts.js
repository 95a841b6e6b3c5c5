// Accounts: your own (profile, password, and for the gateway token the pinned key of /ws v2), and the Users screen
// where admins list, make, ban, delete and invite accounts. What only the owner may do (the API's 403 OWNER_ONLY,
// CANNOT_MODIFY_ADMIN) is shown disabled with the reason, and never asked for.

import { auth, canAdmin, del, get, isToken, post, put, setAuth } from "./api.js";
import { forgetPin, handshake, pinned, setHandshake, setPin } from "./pin.js";
import { button, clear, confirmButton, errorBox, field, fmtTime, h, markInvalid, panel, toast, unavailable } from "./ui.js";
import { FINGERPRINT } from "./v2crypto.js";

const OWNER = "the owner (the gateway token, or `gateway user` on the gateway's machine)";

// ---- the Account screen ----

export async function accountView(view) {
  clear(view);
  if (isToken()) {
    view.append(panel("You", [], h("p", { id: "account-who" }, "Signed in with the gateway token: the owner, with every power. It is not an account, so there is no password to change here; `gateway token --rotate` replaces it.")));
    view.append(encryptionPanel());
    return;
  }
  const who = auth.user;
  view.append(panel("You", [], h("dl", { class: "facts", id: "account-who" },
    h("dt", {}, "username"), h("dd", { text: who.username || "—" }),
    h("dt", {}, "email"), h("dd", { text: who.email || "—" }),
    h("dt", {}, "role"), h("dd", { text: who.role }))));
  view.append(passwordPanel());
}

function passwordPanel() {
  const current = h("input", { type: "password", id: "pw-current", autocomplete: "current-password", required: true });
  const next = h("input", { type: "password", id: "pw-new", autocomplete: "new-password", required: true, minlength: "8" });
  const again = h("input", { type: "password", id: "pw-again", autocomplete: "new-password", required: true });
  const problem = h("div", { id: "pw-error" });
  const form = h("form", { class: "form-grid", id: "password-form" },
    field("Current password", current), field("New password", next, "at least 8 characters"), field("New password again", again),
    h("div", { class: "form-actions" }, h("button", { type: "submit", class: "primary" }, "Change password"), problem));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clear(problem);
    if (next.value !== again.value) {
      problem.append(h("p", { class: "notice error", role: "alert" }, "The two new passwords differ."));
      return;
    }
    const body = { current_password: current.value, new_password: next.value };
    current.value = next.value = again.value = ""; // not left in the page once sent
    try {
      const t = await put("/api/auth/me/password", body);
      // The gateway ends every other session of the account and hands this one new tokens.
      setAuth({ ...auth, access: t.access_token, refresh: t.refresh_token });
      markInvalid({ current_password: current, new_password: next }, null);
      toast("Password changed; your other sessions are signed out.");
    } catch (err) {
      markInvalid({ current_password: current, new_password: next }, err);
      if (err.code === "INVALID_CREDENTIALS") current.setAttribute("aria-invalid", "true");
      problem.append(errorBox(err, "pw-refused"));
    }
  });
  return panel("Password", [], form);
}

function encryptionPanel() {
  const box = h("div", { id: "encryption" });
  const draw = () => {
    const pin = pinned();
    const v1 = handshake() === "v1";
    const given = h("input", { id: "pin-input", autocomplete: "off", spellcheck: "false", placeholder: "gw1:xxxx-xxxx-…" });
    const problem = h("div");
    const pinIt = button("Pin this key", () => {
      const fp = given.value.trim().toLowerCase();
      if (!FINGERPRINT.test(fp)) {
        clear(problem).append(h("p", { class: "notice error", role: "alert" }, "Paste the fingerprint `gateway token` prints: gw1: and 8 groups of 4 hex digits."));
        return;
      }
      setPin(fp, "given");
      toast("Pinned. Open the chat to connect.");
      draw();
    }, "small primary");
    const protocol = h("input", { type: "checkbox", class: "switch", id: "use-v1", checked: v1, "aria-label": "Use the v1 handshake" });
    protocol.addEventListener("change", () => {
      setHandshake(protocol.checked ? "v1" : "v2");
      draw();
    });
    clear(box).append(
      h("dl", { class: "facts" },
        h("dt", {}, "handshake"), h("dd", { id: "handshake" }, v1 ? "v1 (the server's key is not checked)" : "v2 (the server's key is pinned; the token never crosses the wire)"),
        h("dt", {}, "server key"), h("dd", {}, pin ? h("code", { id: "pinned-fingerprint", text: pin.fingerprint }) : h("span", { class: "muted", id: "pinned-fingerprint" }, "none pinned yet: the first gateway the chat reaches will be")),
        pin ? h("dt", {}, "pinned") : null, pin ? h("dd", { text: `${fmtTime(pin.since)}, ${pin.how === "given" ? "as given" : "trusted on first use"}` }) : null),
      h("p", { class: "muted" }, "Compare it with what `gateway token` prints on the gateway's machine. A gateway whose key differs is refused; if the owner replaced the key on purpose, pin the new fingerprint here."),
      h("div", { class: "form-row" }, field("New fingerprint", given), h("div", { class: "row-actions" }, pinIt,
        pin ? confirmButton("Forget the pin", "Really forget?", () => {
          forgetPin();
          draw();
        }, "small danger") : null)),
      problem,
      h("p", {}, h("label", { class: "check" }, protocol, " use the v1 handshake (only for an old gateway without v2)")),
      v1 ? h("p", { class: "notice error" }, "v1 sends the token in the first frame and does not check who answers: use it only behind TLS, or on a network you trust.") : "");
  };
  draw();
  return panel("Encryption of the chat (/ws)", [], box);
}

// ---- the Users screen (admins) ----

export async function usersView(view) {
  if (!canAdmin()) {
    clear(view).append(panel("Users", [], unavailable({ status: 403 }, "Managing accounts")));
    return;
  }
  const owner = isToken();
  const me = owner ? null : auth.user.id;
  const list = h("div", { class: "user-rows", id: "users" });
  const invite = h("div", { id: "invite" });
  const makeInvite = button("Make an invite code", async () => {
    try {
      const r = await post("/api/admin/invites", {});
      clear(invite).append(h("p", { class: "notice" }, "Invite code (single use, makes a plain user): ", h("code", { id: "invite-code", text: r.code }), ` · expires ${fmtTime(r.expires_at)}`));
    } catch (e) {
      clear(invite).append(errorBox(e));
    }
  }, "small");
  clear(view).append(panel("Users", [makeInvite], invite, list), createPanel(owner, draw));

  async function draw() {
    let data, caps;
    try {
      [data, caps] = await Promise.all([get("/api/admin/users?limit=1000"), get("/api/admin/usage-caps")]);
    } catch (e) {
      clear(list).append(unavailable(e, "Managing accounts"));
      return;
    }
    clear(list);
    if (!owner) list.append(h("p", { class: "muted", id: "owner-note" }, `As an admin account you manage plain users. Roles, and admin accounts, are changed only by ${OWNER}.`));
    for (const u of data.users) list.append(userRow(u, owner, me, draw, caps));
  }
  await draw();
}

// Why the signed-in admin may not change `u` (null: it may), as the API would answer.
function refusal(u, owner, me) {
  if (u.id === me) return "your own account: not changed here (Account screen)";
  if (u.role === "super_admin" && !owner) return `an admin account: only ${OWNER}`;
  return null;
}

// An account's daily token cap: its own, or empty for the default (`[usage] daily_token_cap`, maybe none).
function capInput(u, owner, caps, act) {
  const own = caps.caps[u.id];
  const fallback = caps.default == null ? "no cap" : `default ${caps.default}`;
  const why = u.role === "super_admin" && !owner ? `an admin account's cap: only ${OWNER}` : null;
  const input = h("input", { type: "number", min: "1", step: "1", class: "user-cap", "aria-label": "Daily token cap", placeholder: fallback, value: own ?? "", disabled: !!why, title: why || "tokens in and out per UTC day; empty: the default" });
  const save = button("Set cap", () => {
    const text = input.value.trim();
    const value = text === "" ? null : Number(text);
    act(value == null ? "daily cap: default" : `daily cap ${value}`, () => put(`/api/admin/users/${encodeURIComponent(u.id)}/usage-cap`, { daily_tokens: value }));
  }, "small");
  save.disabled = !!why;
  return h("span", { class: "cap-edit" }, input, save);
}

function userRow(u, owner, me, redraw, caps) {
  const why = refusal(u, owner, me);
  const act = async (what, fn) => {
    try {
      await fn();
      toast(`${u.username || u.email}: ${what}`);
    } catch (e) {
      toast(e.message, "error");
    }
    redraw();
  };
  const roleWhy = why || (owner ? null : `roles: only ${OWNER}`);
  const role = h("select", { class: "user-role", "aria-label": "Role", disabled: !!roleWhy, title: roleWhy || "" },
    h("option", { value: "user" }, "user"), h("option", { value: "super_admin" }, "admin (super_admin)"));
  role.value = u.role;
  role.addEventListener("change", () => act(`role ${role.value}`, () => put(`/api/admin/users/${encodeURIComponent(u.id)}/role`, { role: role.value })));
  const banned = u.status === "banned";
  const ban = button(banned ? "Unban" : "Ban", () => act(banned ? "unbanned" : "banned",
    () => put(`/api/admin/users/${encodeURIComponent(u.id)}/status`, { status: banned ? "active" : "banned" })), "small");
  const remove = confirmButton("Delete", "Really delete?", () => act("deleted", () => del(`/api/admin/users/${encodeURIComponent(u.id)}`)), "small danger");
  for (const b of [ban, remove]) {
    b.disabled = !!why;
    if (why) b.title = why;
  }
  return h("article", { class: `card user ${u.status}`, "data-user": u.username || u.email || u.id },
    h("div", { class: "row" }, h("strong", { text: u.username || u.email || u.id }), h("span", { class: `pill status-${u.status}`, text: u.status })),
    h("div", { class: "meta" }, [u.username ? u.email : null, `since ${fmtTime(u.created_at)}`].filter(Boolean).join(" · ")),
    h("div", { class: "row-actions" }, role, ban, remove, capInput(u, owner, caps, act)),
    why || roleWhy ? h("small", { class: "why muted", text: why || roleWhy }) : null);
}

function createPanel(owner, redraw) {
  const username = h("input", { id: "new-username", autocomplete: "off", placeholder: "3-32 letters, digits, _ . -" });
  const email = h("input", { id: "new-email", type: "email", autocomplete: "off", placeholder: "optional" });
  const password = h("input", { id: "new-password", type: "password", autocomplete: "new-password", placeholder: "at least 8 characters" });
  const role = h("select", { id: "new-role" }, h("option", { value: "user" }, "user"),
    h("option", { value: "super_admin", disabled: !owner }, owner ? "admin (super_admin)" : "admin (super_admin): only the owner"));
  const problem = h("div");
  const form = h("form", { class: "form-grid", id: "user-create" },
    field("Username", username), field("Email", email), field("Password", password), field("Role", role),
    h("div", { class: "form-actions" }, h("button", { type: "submit", class: "primary" }, "Make account"), problem));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clear(problem);
    const body = { password: password.value, role: role.value };
    if (username.value.trim()) body.username = username.value.trim();
    if (email.value.trim()) body.email = email.value.trim();
    password.value = "";
    try {
      await post("/api/admin/users", body);
      toast(`Account ${body.username || body.email} made`);
      username.value = email.value = "";
      markInvalid({ username, email, password }, null);
      redraw();
    } catch (err) {
      markInvalid({ username, email, password }, err);
      problem.append(errorBox(err, "user-create-error"));
    }
  });
  return panel("New account", [], form);
}
