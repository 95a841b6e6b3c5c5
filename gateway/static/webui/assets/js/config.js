// Control panel screens: connectors (health from /api/status, secrets write-only), models and provider, MCP, skills.
// The app-config, MCP, skills and models-json routes may be absent on an older gateway: each screen then says so.

import { del, get, isToken, patch, post, put } from "./api.js";
import { button, clear, confirmButton, field, h, panel, toast, unavailable } from "./ui.js";

const SECRET_FIELDS = {
  http: ["bearer_token"],
  slack: ["bot_token", "signing_secret"],
  telegram: ["bot_token", "secret_token"],
  external: ["shared_token"],
};

// ---- connectors ----

export async function connectorsView(view) {
  const list = h("div", { class: "cards", id: "connectors" });
  const editor = h("div", { id: "connector-editor" });
  clear(view).append(panel("Connectors", [button("+ New connector", () => edit(null), "small primary")], list), editor);

  async function draw() {
    if (!isToken()) {
      // The connector API takes the gateway token only (it holds the platforms' secrets).
      clear(list).append(unavailable({ status: 401 }, "Connectors"));
      return;
    }
    let data;
    try {
      data = await get("/v1/runtime/connectors");
    } catch (e) {
      clear(list).append(unavailable(e, "Connectors"));
      return;
    }
    let health = {};
    try {
      health = statusDetails(await get("/api/status"));
    } catch (e) {
      health = statusDetails(e.details ? { services: e.details.services } : {}); // 503 still carries the report
    }
    clear(list);
    if (!data.connectors.length) list.append(h("p", { class: "muted" }, "No connectors. Add Telegram, Slack, HTTP or external ones."));
    for (const c of data.connectors) {
      const ref = `${c.kind}/${c.name}`;
      const st = health[ref] || {};
      const state = st.state || "unknown";
      const secrets = (SECRET_FIELDS[c.kind] || []).map((f) => {
        const s = c[f] || {};
        return h("span", { class: `pill ${s.configured ? "ok" : "warn"}` }, `${f}: ${s.configured ? "set" : "not set"}`);
      });
      list.append(h("article", { class: "card connector", "data-connector": ref },
        h("div", { class: "row" }, h("strong", { text: ref }), h("span", { class: `pill state-${state}` }, state)),
        h("div", { class: "meta" }, `source: ${c.source}`, st.restarts ? ` · restarts ${st.restarts}` : "", st.backlog ? ` · backlog ${st.backlog}` : "",
          c.ingress_events_per_second ? ` · ingress ≤ ${c.ingress_events_per_second} events/s` : "",
          st.ingress_rate_limited ? ` · ${st.ingress_rate_limited} refused (rate limit)` : "",
          st.sidecar ? ` · sidecar ${st.sidecar.health || st.sidecar.state}${st.sidecar.failed_health_checks ? ` (${st.sidecar.failed_health_checks} failed checks)` : ""}` : ""),
        st.last_error ? h("div", { class: "tag error", text: String(st.last_error) }) : null,
        h("div", { class: "row-actions" }, secrets),
        c.source === "file" ? h("p", { class: "muted" }, "Declared in the config file: edit it there.") :
          h("div", { class: "row-actions" }, button("Edit", () => edit(c), "small"),
            confirmButton("Delete", "Really delete?", async () => {
              try {
                await del(`/v1/runtime/connectors/${c.kind}/${encodeURIComponent(c.name)}`);
                draw();
              } catch (e) {
                toast(e.message, "error");
              }
            }, "small danger"))));
    }
  }

  function edit(c) {
    const kind = h("select", { id: "conn-kind", disabled: !!c }, Object.keys(SECRET_FIELDS).map((k) => h("option", { value: k }, k)));
    const name = h("input", { id: "conn-name", value: c ? c.name : "", disabled: !!c, placeholder: "mybot" });
    if (c) kind.value = c.kind;
    const settings = {};
    if (c) for (const [k, v] of Object.entries(c)) if (!["kind", "name", "source", ...(SECRET_FIELDS[c.kind] || [])].includes(k)) settings[k] = v;
    const json = h("textarea", { id: "conn-settings", rows: "8", class: "mono" }, JSON.stringify(settings, null, 2));
    const secretBox = h("div", { class: "secrets" });
    const secretInputs = {};
    const drawSecrets = () => {
      clear(secretBox);
      for (const f of SECRET_FIELDS[kind.value]) {
        const configured = c && c[f] && c[f].configured;
        // Write-only: the value is never shown; empty keeps the stored one.
        secretInputs[f] = h("input", { type: "password", autocomplete: "new-password", id: `conn-secret-${f}`, placeholder: configured ? "•••••• (set; type to replace)" : "not set" });
        secretBox.append(field(f, secretInputs[f], "write-only"));
      }
    };
    kind.addEventListener("change", drawSecrets);
    drawSecrets();
    const save = async () => {
      let body;
      try {
        body = JSON.parse(json.value || "{}");
      } catch {
        toast("Settings must be a JSON object", "error");
        return;
      }
      for (const [f, inp] of Object.entries(secretInputs)) if (inp.value) body[f] = { value: inp.value };
      const n = name.value.trim();
      try {
        await put(`/v1/runtime/connectors/${kind.value}/${encodeURIComponent(n)}`, body);
        toast(`Saved ${kind.value}/${n}`);
        clear(editor);
        draw();
      } catch (e) {
        toast(e.message, "error");
      }
    };
    clear(editor).append(panel(c ? `Edit ${c.kind}/${c.name}` : "New connector", [button("Close", () => clear(editor), "small")],
      h("div", { class: "form-grid" }, field("Kind", kind), field("Name", name), field("Settings (JSON, no secrets)", json), secretBox,
        h("div", { class: "form-actions" }, button("Save", save, "primary")))));
    editor.scrollIntoView({ behavior: "smooth" });
  }
  await draw();
}

function statusDetails(report) {
  const svc = (report.services || []).find((s) => s.service === "connectors");
  const d = svc && svc.details;
  return d && typeof d === "object" ? d : {};
}

// ---- models and provider ----

export async function modelsView(view) {
  const providers = h("div", { class: "cards", id: "providers" });
  const llm = h("div", { id: "llm-config" });
  const agent = h("div", { id: "agent-config" });
  const modelsJson = h("div", { id: "models-json" });
  clear(view).append(panel("Providers", [], providers), panel("LLM", [], llm), panel("Agent", [], agent), panel("models.json", [], modelsJson));

  try {
    const [p, m] = await Promise.all([get("/api/providers"), get("/api/models")]);
    for (const pr of p.providers) {
      providers.append(h("article", { class: "card" },
        h("div", { class: "row" }, h("strong", { text: pr.name }), h("span", { class: `pill ${pr.available ? "ok" : "warn"}` }, pr.active ? "active" : pr.available ? "available" : "unavailable")),
        h("div", { class: "meta", text: pr.detail || "" }),
        h("div", { class: "meta", text: `models: ${(pr.models || []).join(", ") || "—"}` })));
    }
    providers.append(h("p", { class: "muted" }, `Active: ${m.active_provider} / ${m.active_model || "default model"}`));
  } catch (e) {
    providers.append(unavailable(e, "Providers"));
  }

  configForm(llm, "/api/app-config/llm", "LLM settings", [
    ["provider", "text"], ["base_url", "text"], ["model_name", "text"], ["temperature", "number"], ["max_tokens", "number"],
  ], (data) => h("p", { class: "muted" }, `API key: ${data.api_key_configured ? "set" : "not set"}`), { secret: "api_key" });
  configForm(agent, "/api/app-config/agent", "Agent settings", [["max_iterations", "number"], ["max_retries", "number"], ["max_search_results", "number"]]);

  try {
    const doc = await get("/api/models-json");
    const area = h("textarea", { rows: "10", class: "mono", id: "models-json-text" }, JSON.stringify(doc, null, 2));
    modelsJson.append(area, h("div", { class: "form-actions" }, button("Merge into models.json", async () => {
      try {
        const next = await patch("/api/models-json", JSON.parse(area.value));
        area.value = JSON.stringify(next, null, 2);
        toast("models.json saved");
      } catch (e) {
        toast(e.message, "error");
      }
    }, "primary")));
  } catch (e) {
    modelsJson.append(unavailable(e, "models.json"));
  }
}

// A GET/POST settings form; absent route (404) -> the "not available" notice.
async function configForm(box, path, title, fields, extra, opts = {}) {
  let data;
  try {
    data = await get(path);
  } catch (e) {
    box.append(unavailable(e, title));
    return;
  }
  const inputs = {};
  const form = h("form", { class: "form-grid" });
  for (const [name, type] of fields) {
    inputs[name] = h("input", { type, step: type === "number" ? "any" : null, value: data[name] ?? "", name });
    form.append(field(name, inputs[name]));
  }
  if (opts.secret) {
    inputs[opts.secret] = h("input", { type: "password", autocomplete: "new-password", placeholder: "leave empty to keep the current key" });
    form.append(field(opts.secret, inputs[opts.secret], "write-only"));
  }
  if (extra) form.append(extra(data));
  form.append(h("div", { class: "form-actions" }, h("button", { type: "submit", class: "primary" }, "Save")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = {};
    for (const [name, type] of fields) {
      const v = inputs[name].value;
      if (v !== "") body[name] = type === "number" ? Number(v) : v;
    }
    if (opts.secret && inputs[opts.secret].value) body[opts.secret] = inputs[opts.secret].value;
    try {
      await post(path, body);
      toast(`${title} saved`);
      if (opts.secret) inputs[opts.secret].value = "";
    } catch (err) {
      toast(err.message, "error");
    }
  });
  box.append(form);
}

// ---- MCP servers ----

export async function mcpView(view) {
  const list = h("div", { class: "cards", id: "mcp-servers" });
  const area = h("textarea", { rows: "6", class: "mono", id: "mcp-new" }, JSON.stringify({ mcpServers: { example: { transport: "stdio", command: "my-mcp-server", args: [] } } }, null, 2));
  const add = h("div", {}, area, h("div", { class: "form-actions" }, button("Add / update", async () => {
    try {
      await post("/api/app-config/mcp-servers", JSON.parse(area.value));
      toast("MCP servers saved");
      draw();
    } catch (e) {
      toast(e.message, "error");
    }
  }, "primary")), h("p", { class: "muted" }, "env and headers are write-only: they are never shown again."));
  clear(view).append(panel("MCP servers", [], list), panel("Add servers", [], add));
  async function draw() {
    let data;
    try {
      data = await get("/api/app-config/mcp-servers");
    } catch (e) {
      clear(list).append(unavailable(e, "MCP server configuration"));
      add.hidden = e.status === 404;
      return;
    }
    clear(list);
    if (!data.mcp_servers.length) list.append(h("p", { class: "muted" }, "No MCP servers."));
    for (const s of data.mcp_servers) {
      const toggle = h("input", { type: "checkbox", class: "switch", checked: s.enabled, "aria-label": "enabled" });
      toggle.addEventListener("change", async () => {
        try {
          await post(`/api/app-config/mcp-servers/${encodeURIComponent(s.server_name)}/enabled`, { enabled: toggle.checked });
        } catch (e) {
          toast(e.message, "error");
          toggle.checked = !toggle.checked;
        }
      });
      list.append(h("article", { class: "card" },
        h("div", { class: "row" }, h("strong", { text: s.server_name }), h("label", { class: "check" }, toggle, " enabled")),
        h("div", { class: "meta", text: `${s.transport}${s.state ? ` · ${s.state}` : ""}${s.description ? ` · ${s.description}` : ""}` }),
        s.error ? h("div", { class: "tag error", text: s.error }) : null,
        h("div", { class: "meta", text: `tools: ${(s.tools || []).join(", ") || "—"}` }),
        h("div", { class: "row-actions" }, confirmButton("Delete", "Really delete?", async () => {
          await post(`/api/app-config/mcp-servers/${encodeURIComponent(s.server_name)}/delete`);
          draw();
        }, "small danger"))));
    }
  }
  await draw();
}

// ---- skills ----

export async function skillsView(view) {
  const list = h("div", { class: "cards", id: "skills" });
  const policy = h("div", { id: "skills-policy" });
  const sourceType = h("select", {}, h("option", { value: "github" }, "GitHub"), h("option", { value: "local" }, "local"));
  const ref = h("input", { placeholder: "owner/repo/path or a local name" });
  const md = h("textarea", { rows: "5", class: "mono", placeholder: "SKILL.md (optional for local skills)" });
  const install = h("div", { class: "form-grid" }, field("Source", sourceType), field("Reference", ref), field("SKILL.md", md),
    h("div", { class: "form-actions" }, button("Install", async () => {
      const body = { source_type: sourceType.value, source_ref: ref.value.trim() };
      if (md.value.trim()) body.skill_md = md.value;
      try {
        await post("/api/v2/skills/install", body);
        toast("Skill installed");
        draw();
      } catch (e) {
        toast(e.message, "error");
      }
    }, "primary")));
  clear(view).append(panel("Skills", [], policy, list), panel("Install a skill", [], install));
  async function draw() {
    let data;
    try {
      data = await get("/api/v2/skills");
    } catch (e) {
      clear(list).append(unavailable(e, "Skills"));
      install.hidden = e.status === 404;
      return;
    }
    clear(list);
    if (!data.skills.length) list.append(h("p", { class: "muted" }, "No skills installed."));
    for (const s of data.skills) {
      const key = s.slug || s.id;
      const toggle = h("input", { type: "checkbox", class: "switch", checked: s.enabled, "aria-label": "enabled" });
      toggle.addEventListener("change", async () => {
        try {
          await post(`/api/v2/skills/${encodeURIComponent(key)}/enabled`, { enabled: toggle.checked });
        } catch (e) {
          toast(e.message, "error");
          toggle.checked = !toggle.checked;
        }
      });
      list.append(h("article", { class: "card" },
        h("div", { class: "row" }, h("strong", { text: s.name || key }), h("label", { class: "check" }, toggle, " enabled")),
        h("div", { class: "meta", text: `${s.version || ""} · ${s.source_type}:${s.source_ref} · ${s.runtime_type || ""}` }),
        h("div", { class: "body", text: s.description || "" }),
        h("div", { class: "row-actions" }, confirmButton("Delete", "Really delete?", async () => {
          await del(`/api/v2/skills/${encodeURIComponent(key)}`);
          draw();
        }, "small danger"))));
    }
  }
  try {
    const p = await get("/api/v2/skills/policy");
    const sel = h("select", { "aria-label": "Risk policy" }, h("option", { value: "off" }, "off"), h("option", { value: "enforce_confirmation" }, "enforce confirmation"));
    sel.value = p.mode;
    sel.addEventListener("change", () => post("/api/v2/skills/policy", { mode: sel.value }).then(() => toast("Policy saved"), (e) => toast(e.message, "error")));
    policy.append(field("Risk policy", sel));
  } catch {
    /* shown by the list's notice */
  }
  await draw();
}
