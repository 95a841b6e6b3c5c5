// The connectors screen: every connector with its health (from /api/status); create and edit, secrets write-only.

import { del, get, isToken, put } from "./api.js";
import { button, clear, confirmButton, field, h, panel, toast, unavailable } from "./ui.js";

export async function connectorsView(view) {
  // kind -> its secret fields, from the registered kinds (GET /v1/runtime/connector-kinds), in the registry's order.
  let secretFields = null; // null until the first draw has read them
  const list = h("div", { class: "cards", id: "connectors" });
  const editor = h("div", { id: "connector-editor" });
  // Creating and editing take the gateway token (the API refuses anyone else): others are not offered them.
  const actions = isToken() ? [button("+ New connector", () => edit(null), "small primary")] : [];
  clear(view).append(panel("Connectors", actions, list), editor);

  async function draw() {
    if (!isToken()) {
      // The connector API takes the gateway token only (it holds the platforms' secrets).
      clear(list).append(unavailable({ status: 401 }, "Connectors"));
      return;
    }
    let data;
    try {
      if (!secretFields) {
        const kinds = (await get("/v1/runtime/connector-kinds")).kinds;
        secretFields = Object.fromEntries(kinds.map((k) => [k.kind, k.secret_fields]));
      }
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
    if (!data.connectors.length) list.append(h("p", { class: "muted" }, `No connectors. Add one: ${Object.keys(secretFields).join(", ")}.`));
    for (const c of data.connectors) {
      const ref = `${c.kind}/${c.name}`;
      const st = health[ref] || {};
      const state = st.state || "unknown";
      const secrets = (secretFields[c.kind] || []).map((f) => {
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
    if (!secretFields) return; // the kinds are not read yet (the first draw is under way)
    const kind = h("select", { id: "conn-kind", disabled: !!c }, Object.keys(secretFields).map((k) => h("option", { value: k }, k)));
    const name = h("input", { id: "conn-name", value: c ? c.name : "", disabled: !!c, placeholder: "mybot" });
    if (c) kind.value = c.kind;
    const settings = {};
    if (c) for (const [k, v] of Object.entries(c)) if (!["kind", "name", "source", ...(secretFields[c.kind] || [])].includes(k)) settings[k] = v;
    const json = h("textarea", { id: "conn-settings", rows: "8", class: "mono" }, JSON.stringify(settings, null, 2));
    const secretBox = h("div", { class: "secrets" });
    const secretInputs = {};
    const drawSecrets = () => {
      clear(secretBox);
      for (const f of secretFields[kind.value]) {
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
