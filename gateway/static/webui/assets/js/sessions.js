// Sessions: the list (unread counts, latest message), create, rename, delete; compact inside the chat screen.

import { del, get, isToken, post, put } from "./api.js";
import { button, clear, confirmButton, fmtTime, h, panel, toast } from "./ui.js";

export async function createSession() {
  // With the gateway token a new chat is an `api:<n>` session, so it streams over the encrypted /ws. No title:
  // until it is renamed, its first message names it.
  const body = isToken() ? { channel: "api", chat_id: String(Date.now()) } : { channel: "webchat" };
  const s = await post("/api/sessions", body);
  location.hash = `#/chat/${encodeURIComponent(s.session_id)}`;
  return s;
}

function newButton() {
  return button("+ New", () => createSession().catch((e) => toast(e.message, "error")), "small primary");
}

// The gateway's display title (the title if it was given one, else its first message); never the internal key.
export function label(s) {
  return s.display_title || s.title || "New chat";
}

export async function sessionList(box, { compact = false, current = null } = {}) {
  const list = h("ul", { class: "sessions" });
  const head = compact ? h("div", { class: "side-head" }, h("strong", { text: "Sessions" }), newButton()) : null;
  clear(box).append(head || "", list);
  let data;
  try {
    data = await get("/api/sessions?limit=200");
  } catch (e) {
    list.append(h("li", { class: "muted" }, e.message));
    return;
  }
  if (!data.sessions.length) list.append(h("li", { class: "muted" }, "No sessions yet."));
  for (const s of data.sessions) {
    const open = () => (location.hash = `#/chat/${encodeURIComponent(s.session_id)}`);
    const active = current && (current === s.session_id || current === s.key);
    const name = h("span", { class: "name", text: label(s) });
    const li = h("li", { class: `session ${active ? "active" : ""}`, "data-session": s.session_id },
      h("button", { type: "button", class: "session-open", onclick: open },
        h("span", { class: "row" }, name, s.unread_message_count ? h("span", { class: "badge", text: String(s.unread_message_count) }) : null),
        h("span", { class: "row sub" }, h("span", { class: "latest", text: s.latest_message || "no messages yet" }), h("span", { class: "when", text: fmtTime(s.latest_message_at || s.created_at) }))));
    if (!compact) {
      const rename = () => {
        const inp = h("input", { value: s.title, placeholder: label(s), "aria-label": "New title", class: "rename-input" });
        const save = async () => {
          try {
            await put(`/api/chat/sessions/${encodeURIComponent(s.session_id)}`, { title: inp.value.trim() });
            sessionList(box, { compact, current });
          } catch (e) {
            toast(e.message, "error");
          }
        };
        inp.addEventListener("keydown", (e) => e.key === "Enter" && save());
        clear(li).append(inp, button("Save", save, "small primary"), button("Cancel", () => sessionList(box, { compact, current }), "small"));
        inp.focus();
      };
      const remove = async () => {
        try {
          window.dispatchEvent(new CustomEvent("gateway:session-deleted", { detail: s }));
          await del(`/api/sessions/${encodeURIComponent(s.session_id)}`);
          toast("Session deleted");
          sessionList(box, { compact, current });
        } catch (e) {
          toast(e.message, "error");
        }
      };
      li.append(h("div", { class: "row-actions" }, h("span", { class: "pill" }, s.status), button("Rename", rename, "small"), confirmButton("Delete", "Really delete?", remove, "small danger")));
    }
    list.append(li);
  }
}

export async function sessionsView(view) {
  const box = h("div", { class: "session-page" });
  clear(view).append(panel("Sessions", [newButton()], box));
  await sessionList(box, { compact: false });
}
