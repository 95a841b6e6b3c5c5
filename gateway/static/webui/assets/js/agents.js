// A2A agents on the MCP screen: the registered agents (register by base URL, enable/disable, delete: admins) and
// every signed-in caller's own switch for each agent, which the model is offered as a tool.

import { canAdmin, get, post } from "./api.js";
import { clear, confirmButton, errorBox, field, h, panel, switchInput, toast, unavailable } from "./ui.js";

export function agentPanels(app) {
  const admin = canAdmin();
  const list = h("div", { class: "cards", id: "a2a-agents" });
  const mine = h("div", { class: "cards", id: "my-agents" });
  let left = false;
  app.onLeave(() => {
    left = true;
  });

  async function draw() {
    const [agents, prefs] = await Promise.allSettled([get("/api/app-config/a2a-servers"), get("/api/user/tools/a2a")]);
    if (left) return;
    clear(list);
    if (agents.status === "rejected") list.append(unavailable(agents.reason, "A2A agents"));
    else if (!agents.value.a2a_servers.length) list.append(h("p", { class: "muted" }, "No A2A agents."));
    else for (const a of agents.value.a2a_servers) list.append(agentCard(a));
    clear(mine);
    if (prefs.status === "rejected") mine.append(unavailable(prefs.reason, "Your agents"));
    else for (const t of prefs.value.tools) mine.append(myCard(t));
  }

  function agentCard(a) {
    const path = `/api/app-config/a2a-servers/${encodeURIComponent(a.id)}`;
    return h("article", { class: "card a2a-agent", "data-agent": a.id },
      h("div", { class: "row" }, h("strong", { text: a.name }), a.streaming ? h("span", { class: "pill" }, "streams") : null),
      h("div", { class: "meta", text: [a.base_url, a.description].filter(Boolean).join(" · ") }),
      admin ? h("div", { class: "row-actions" },
        h("label", { class: "check" }, switchInput(a.enabled, "enabled", async (on) => {
          await post(`${path}/enabled`, { enabled: on });
          await draw();
        }), a.enabled ? " enabled" : " disabled"),
        confirmButton("Delete", "Really delete?", async () => {
          try {
            await post(`${path}/delete`);
            toast(`Deleted ${a.name}`);
          } catch (e) {
            toast(e.message, "error");
          }
          await draw();
        }, "small danger")) : null);
  }

  function myCard(t) {
    const toggle = switchInput(t.enabled_user, `use ${t.tool_name} in my chats`, async (on) => {
      await post(`/api/user/tools/a2a/${encodeURIComponent(t.tool_id)}/enabled`, { enabled: on });
      await draw();
    });
    return h("article", { class: "card my-agent", "data-tool": t.tool_id },
      h("div", { class: "row" }, h("strong", { text: t.tool_name }),
        h("label", { class: "check" }, toggle, t.enabled_user ? " on in my chats" : " off in my chats")),
      t.enabled_global ? null : h("div", { class: "tag" }, "Disabled for everyone by an admin."));
  }

  function addForm() {
    const url = h("input", { id: "a2a-url", placeholder: "https://agent.example", inputmode: "url", required: true, spellcheck: "false" });
    const errors = h("div", { class: "form-actions" });
    const form = h("form", { class: "form-grid", id: "a2a-form" },
      field("Base URL", url, "its card is read from /.well-known/agent-card.json"),
      h("div", { class: "form-actions" }, h("button", { type: "submit", class: "primary" }, "Register agent")), errors);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        const made = await post("/api/app-config/a2a-servers", { base_url: url.value.trim() });
        toast(`Registered ${made.name}`);
      } catch (x) {
        clear(errors).append(errorBox(x, "a2a-error"));
        return;
      }
      clear(errors);
      form.reset();
      await draw();
    });
    return form;
  }

  const panels = [
    panel("A2A agents", [], h("p", { class: "muted" }, "Each enabled agent is offered to the model as a tool."), list),
    panel("Your agents", [], h("p", { class: "muted" }, "Switch an agent off for your own chats only."), mine),
  ];
  if (admin) panels.push(panel("Register an agent", [], addForm()));
  return { panels, draw };
}
