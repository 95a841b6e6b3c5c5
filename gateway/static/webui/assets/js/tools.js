// MCP servers: the list with each one's live state and tools, add or replace (env and headers write-only),
// enable/disable, delete (admins); and every signed-in caller's own switch for each server's tools. A2A agents
// below them (agents.js).

import { agentPanels } from "./agents.js";
import { canAdmin, get, post } from "./api.js";
import { button, clear, confirmButton, errorBox, field, h, markInvalid, panel, switchInput, toast, unavailable } from "./ui.js";

const POLL_MS = 700; // while a server is starting (or restarting after an error), so its tools show up by themselves
const SETTLING = new Set(["starting", "error"]);

export async function mcpView(view, app) {
  const admin = canAdmin();
  const list = h("div", { class: "cards", id: "mcp-servers" });
  const mine = h("div", { class: "cards", id: "my-tools" });
  const sections = [panel("MCP servers", [], list), panel("Your tools", [], h("p", { class: "muted" },
    "Switch a server's tools off for your own chats only (for the gateway token: the chats no account owns)."), mine)];
  if (admin) sections.push(panel("Add or replace a server", [], addForm(() => draw())));
  const agents = agentPanels(app);
  clear(view).append(...sections, ...agents.panels);
  let timer = null;
  let left = false;
  app.onLeave(() => {
    left = true;
    clearTimeout(timer);
  });

  // `poll`: a refresh while a server starts; the preferences below do not change with its state. Both lists are
  // read first and drawn together, so the screen never shows one refreshed and the other not; an answer that a
  // newer draw has overtaken (a poll in flight when a switch was flipped) is dropped, never drawn over it.
  let drawn = 0;
  async function draw(poll = false) {
    clearTimeout(timer);
    const turn = ++drawn;
    const [servers, prefs] = await Promise.allSettled([get("/api/app-config/mcp-servers"), poll ? null : get("/api/user/tools/mcp")]);
    if (left || turn !== drawn) return;
    if (!poll) renderMine(prefs);
    if (servers.status === "rejected") {
      clear(list).append(unavailable(servers.reason, "MCP servers"));
      return;
    }
    const data = servers.value;
    clear(list);
    if (!data.mcp_servers.length) list.append(h("p", { class: "muted" }, "No MCP servers."));
    for (const s of data.mcp_servers) list.append(serverCard(s));
    if (data.mcp_servers.some((s) => s.enabled && SETTLING.has(s.state))) timer = setTimeout(() => draw(true), POLL_MS);
  }

  function serverCard(s) {
    const path = `/api/app-config/mcp-servers/${encodeURIComponent(s.server_name)}`;
    const tools = s.tools.length ? s.tools.map((t) => h("span", { class: "tool", text: t }))
      : h("span", { class: "meta" }, s.state === "connected" ? "no tools" : "tools are listed once it is connected");
    return h("article", { class: "card mcp-server", "data-server": s.server_name },
      h("div", { class: "row" }, h("strong", { text: s.server_name }), h("span", { class: `pill state-${s.state}` }, s.state)),
      h("div", { class: "meta", text: [s.transport, s.description].filter(Boolean).join(" · ") }),
      s.error ? h("div", { class: "tag error", text: s.error }) : null,
      h("div", { class: "tools" }, tools),
      admin ? h("div", { class: "row-actions" },
        h("label", { class: "check" }, switchInput(s.enabled, "enabled", async (on) => {
          await post(`${path}/enabled`, { enabled: on });
          await draw();
        }), s.enabled ? " enabled" : " disabled"),
        confirmButton("Delete", "Really delete?", async () => {
          try {
            await post(`${path}/delete`);
            toast(`Deleted ${s.server_name}`);
          } catch (e) {
            toast(e.message, "error");
          }
          await draw();
        }, "small danger")) : null);
  }

  async function drawMine() {
    const [prefs] = await Promise.allSettled([get("/api/user/tools/mcp")]);
    if (!left) renderMine(prefs);
  }

  function renderMine(prefs) {
    if (prefs.status === "rejected") {
      clear(mine).append(unavailable(prefs.reason, "Your tool preferences"));
      return;
    }
    const data = prefs.value;
    clear(mine);
    if (!data.tools.length) mine.append(h("p", { class: "muted" }, "No MCP servers to choose from."));
    for (const t of data.tools) {
      const toggle = switchInput(t.enabled_user, `use ${t.tool_name} in my chats`, async (on) => {
        await post(`/api/user/tools/mcp/${encodeURIComponent(t.tool_id)}/enabled`, { enabled: on });
        await drawMine();
      });
      mine.append(h("article", { class: "card my-tool", "data-tool": t.tool_id },
        h("div", { class: "row" }, h("strong", { text: t.tool_name }),
          h("label", { class: "check" }, toggle, t.enabled_user ? " on in my chats" : " off in my chats")),
        t.description ? h("div", { class: "meta", text: t.description }) : null,
        t.enabled_global ? null : h("div", { class: "tag" }, "Disabled for everyone by an admin.")));
    }
  }

  await Promise.all([draw(), agents.draw()]);
}

// The form for one server, plus a box for a whole `{"mcpServers": {...}}` document pasted from another tool.
function addForm(done) {
  const inputs = {
    name: h("input", { id: "mcp-name", placeholder: "calc", required: true, spellcheck: "false" }),
    transport: h("select", { id: "mcp-transport" }, ["stdio", "sse", "streamable_http"].map((t) => h("option", { value: t }, t))),
    command: h("input", { id: "mcp-command", placeholder: "/usr/bin/my-mcp-server", spellcheck: "false" }),
    args: h("textarea", { id: "mcp-args", rows: "2", class: "mono", placeholder: "one argument per line", spellcheck: "false" }),
    url: h("input", { id: "mcp-url", placeholder: "https://mcp.example/sse", inputmode: "url", spellcheck: "false" }),
    env: h("textarea", { id: "mcp-env", rows: "2", class: "mono", placeholder: "NAME=value, one per line", autocomplete: "off", spellcheck: "false" }),
    headers: h("textarea", { id: "mcp-headers", rows: "2", class: "mono", placeholder: "Authorization: Bearer …, one per line", autocomplete: "off", spellcheck: "false" }),
    description: h("input", { id: "mcp-description", placeholder: "what its tools are for" }),
  };
  const enabled = h("input", { type: "checkbox", id: "mcp-enabled", checked: true });
  const fields = {
    command: field("Command", inputs.command),
    args: field("Arguments", inputs.args),
    url: field("URL", inputs.url),
    env: field("Environment (write-only)", inputs.env, "never shown again; left empty, a replaced server keeps its stored values"),
    headers: field("HTTP headers (write-only)", inputs.headers, "never shown again; left empty, a replaced server keeps its stored values"),
  };
  const byTransport = () => {
    const stdio = inputs.transport.value === "stdio";
    fields.command.hidden = fields.args.hidden = fields.env.hidden = !stdio;
    fields.url.hidden = fields.headers.hidden = stdio;
  };
  inputs.transport.addEventListener("change", byTransport);
  byTransport();
  const errors = h("div", { class: "form-actions" });
  const form = h("form", { class: "form-grid", id: "mcp-form" },
    field("Name", inputs.name, "letters, digits, _ . -"), field("Transport", inputs.transport), fields.command, fields.url,
    field("Description", inputs.description), fields.args, fields.env, fields.headers,
    h("div", { class: "form-actions" }, h("label", { class: "check" }, enabled, " enabled"), h("button", { type: "submit", class: "primary" }, "Save server")),
    errors);
  const send = async (doc) => {
    try {
      await post("/api/app-config/mcp-servers", doc);
    } catch (e) {
      markInvalid(inputs, e, 3); // loc: ["body", "mcpServers", name, field]
      clear(errors).append(errorBox(e, "mcp-error"));
      return false;
    }
    clear(errors);
    toast(`Saved ${Object.keys(doc.mcpServers).join(", ")}`);
    done();
    return true;
  };
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const t = inputs.transport.value;
    const server = { transport: t, enabled: enabled.checked, description: inputs.description.value.trim() };
    try {
      if (t === "stdio") {
        server.command = inputs.command.value.trim();
        server.args = lines(inputs.args.value);
        const env = pairs(inputs.env.value, "=", "Environment");
        if (env) server.env = env;
      } else {
        server.url = inputs.url.value.trim();
        const headers = pairs(inputs.headers.value, ":", "HTTP headers");
        if (headers) server.headers = headers;
      }
    } catch (err) {
      clear(errors).append(errorBox(err, "mcp-error"));
      return;
    }
    // The secrets leave the page with the request: nothing typed there stays in the form.
    inputs.env.value = inputs.headers.value = "";
    if (await send({ mcpServers: { [inputs.name.value.trim()]: server } })) {
      form.reset();
      byTransport();
    }
  });
  const pasted = h("textarea", { rows: "6", class: "mono", id: "mcp-json", spellcheck: "false" },
    JSON.stringify({ mcpServers: { example: { transport: "stdio", command: "my-mcp-server", args: [] } } }, null, 2));
  const paste = h("details", { class: "paste" }, h("summary", {}, "Or paste a JSON document"), pasted,
    h("div", { class: "form-actions" }, button("Save all", async () => {
      let doc;
      try {
        doc = JSON.parse(pasted.value);
      } catch {
        clear(errors).append(errorBox({ message: "That is not valid JSON." }, "mcp-error"));
        return;
      }
      if (await send(doc)) pasted.value = "";
    })));
  return h("div", {}, form, paste);
}

function lines(text) {
  return text.split("\n").map((l) => l.trim()).filter(Boolean);
}

// "NAME=value" (or "Name: value") lines into an object; null when there are none (keep the stored ones).
function pairs(text, sep, what) {
  const out = {};
  for (const [i, line] of lines(text).entries()) {
    const at = line.indexOf(sep);
    // The line is not quoted back: it may be a secret pasted without its name.
    if (at <= 0) throw new Error(`${what}: line ${i + 1} is not NAME${sep}value`);
    out[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return Object.keys(out).length ? out : null;
}
