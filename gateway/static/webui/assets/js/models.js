// Models and provider: the providers and their models, the LLM settings (the API key write-only), the agent's
// limits and models.json. Accounts that are not super_admin see the same values, read-only.

import { canAdmin, get, patch, post } from "./api.js";
import { button, clear, errorBox, field, h, markInvalid, panel, toast, unavailable } from "./ui.js";

// [name, type, label, hint]; base_url, model and the rest are the `openai` provider's (the others have none).
const LLM_FIELDS = [
  ["base_url", "text", "Base URL", "any OpenAI-compatible endpoint, e.g. https://api.openai.com/v1"],
  ["model_name", "text", "Model", "e.g. gpt-4o-mini"],
  ["temperature", "number", "Temperature", "0 to 2; empty: the config file's value"],
  ["max_tokens", "number", "Max tokens", "per reply; empty: the config file's value"],
];
const AGENT_FIELDS = [
  ["max_iterations", "Tool rounds per turn", "1 to 1000: model ↔ tool round trips before the turn stops"],
  ["max_retries", "Retries", "0 to 20: the openai provider's retries on a failed request"],
  ["max_search_results", "Search results", "1 to 100"],
];

export async function modelsView(view) {
  const providers = h("div", { class: "cards", id: "providers" });
  const llm = h("div", { id: "llm-config" });
  const agent = h("div", { id: "agent-config" });
  const modelsJson = h("div", { id: "models-json" });
  const active = h("span", { class: "muted", id: "active-model" });
  clear(view).append(panel("Providers", [active], providers), panel("LLM provider", [], llm), panel("Agent limits", [], agent),
    panel("models.json", [], modelsJson));
  const admin = canAdmin();

  // The provider cards and the LLM form share /api/providers; both are redrawn after a save.
  async function drawLlm() {
    const [p, m, c] = await Promise.allSettled([get("/api/providers"), get("/api/models"), get("/api/app-config/llm")]);
    clear(providers);
    if (p.status === "fulfilled") {
      for (const pr of p.value.providers) providers.append(providerCard(pr));
      if (m.status === "fulfilled") active.textContent = `active: ${m.value.active_provider} / ${m.value.active_model || "its default model"}`;
    } else {
      providers.append(unavailable(p.reason, "Providers"));
    }
    clear(llm);
    if (c.status === "rejected") {
      llm.append(unavailable(c.reason, "LLM settings"));
      return;
    }
    const names = p.status === "fulfilled" ? p.value.providers.map((pr) => pr.name) : [c.value.provider];
    const models = m.status === "fulfilled" ? m.value.models.filter((x) => x.provider === "openai").map((x) => x.id) : [];
    llm.append(llmForm(c.value, names, models));
  }

  function llmForm(data, names, models) {
    const provider = h("select", { id: "llm-provider", name: "provider" }, names.map((n) => h("option", { value: n }, n)));
    provider.value = data.provider;
    const inputs = { provider };
    const form = h("form", { class: "form-grid", id: "llm-form" });
    form.append(field("Default provider", provider, "every session's next turn uses it"));
    for (const [name, type, label, hint] of LLM_FIELDS) {
      inputs[name] = h("input", { id: `llm-${name}`, name, type, step: type === "number" ? "any" : null, value: data[name] ?? "",
        spellcheck: "false", inputmode: name === "base_url" ? "url" : null, list: name === "model_name" ? "llm-models" : null });
      form.append(field(label, inputs[name], hint));
    }
    form.append(h("datalist", { id: "llm-models" }, models.map((id) => h("option", { value: id }))));
    // Write-only: typed in, sent once, never shown; the gateway only says whether one is stored.
    inputs.api_key = h("input", { id: "llm-api_key", name: "api_key", type: "password", autocomplete: "new-password",
      placeholder: data.api_key_configured ? "•••••• (set; type to replace)" : "not set" });
    form.append(field("API key", inputs.api_key, "write-only: leave empty to keep the stored key"));
    const errors = h("div", { class: "form-actions" });
    form.append(h("div", { class: "form-actions" },
      h("span", { class: `pill ${data.api_key_configured ? "ok" : "warn"}`, id: "llm-key-state" }, data.api_key_configured ? "API key set" : "no API key"),
      admin ? h("button", { type: "submit", class: "primary" }, "Save") : h("span", { class: "muted" }, "Only an admin can change these.")),
    errors);
    if (!admin) for (const input of Object.values(inputs)) input.disabled = true;
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const body = changed(data, inputs, LLM_FIELDS.map(([n, t]) => [n, t]));
      if (provider.value !== data.provider) body.provider = provider.value;
      if (inputs.api_key.value) body.api_key = inputs.api_key.value;
      inputs.api_key.value = ""; // out of the page before the request even leaves
      if (!Object.keys(body).length) {
        toast("Nothing changed");
        return;
      }
      try {
        await post("/api/app-config/llm", body);
        toast("LLM settings saved");
        await drawLlm();
      } catch (err) {
        markInvalid(inputs, err);
        clear(errors).append(errorBox(err, "llm-error"));
      }
    });
    return form;
  }

  async function drawAgent() {
    let data;
    try {
      data = await get("/api/app-config/agent");
    } catch (e) {
      clear(agent).append(unavailable(e, "Agent settings"));
      return;
    }
    const inputs = {};
    const form = h("form", { class: "form-grid", id: "agent-form" });
    for (const [name, label, hint] of AGENT_FIELDS) {
      inputs[name] = h("input", { id: `agent-${name}`, name, type: "number", step: "1", value: data[name], disabled: !admin });
      form.append(field(label, inputs[name], hint));
    }
    const errors = h("div", { class: "form-actions" });
    if (admin) form.append(h("div", { class: "form-actions" }, h("button", { type: "submit", class: "primary" }, "Save")), errors);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const body = changed(data, inputs, AGENT_FIELDS.map(([n]) => [n, "number"]));
      if (!Object.keys(body).length) {
        toast("Nothing changed");
        return;
      }
      try {
        await post("/api/app-config/agent", body);
        toast("Agent limits saved");
        await drawAgent();
      } catch (err) {
        markInvalid(inputs, err);
        clear(errors).append(errorBox(err, "agent-error"));
      }
    });
    clear(agent).append(form);
  }

  async function drawModelsJson() {
    let doc;
    try {
      doc = await get("/api/models-json");
    } catch (e) {
      clear(modelsJson).append(unavailable(e, "models.json"));
      return;
    }
    const area = h("textarea", { rows: "8", class: "mono", id: "models-json-text", readonly: !admin, spellcheck: "false" }, JSON.stringify(doc, null, 2));
    const errors = h("div", {});
    clear(modelsJson).append(field("A JSON merge patch: null removes a key", area), errors);
    if (!admin) return;
    modelsJson.append(h("div", { class: "form-actions" }, button("Merge into models.json", async () => {
      let body;
      try {
        body = JSON.parse(area.value);
      } catch {
        clear(errors).append(errorBox({ message: "That is not valid JSON." }));
        return;
      }
      try {
        area.value = JSON.stringify(await patch("/api/models-json", body), null, 2);
        clear(errors);
        toast("models.json saved");
        drawLlm(); // its model list feeds /api/models
      } catch (e) {
        clear(errors).append(errorBox(e, "models-json-error"));
      }
    }, "primary")));
  }

  await Promise.all([drawLlm(), drawAgent(), drawModelsJson()]);
}

// A provider's card says what trying it found (GET /api/providers/{name}/probe), never just that it is set up: a
// configured provider is tried when the card is drawn; one that is not (openai without a key) is not sent anything.
const PROBED = { ok: ["reachable", "ok"], error: ["error", "error"], unreachable: ["unreachable", "error"] };

function providerCard(pr) {
  const pill = h("span", { class: `pill ${pr.available ? "" : "warn"}`, "data-role": "probe" }, pr.available ? "checking…" : "not configured");
  const detail = h("div", { class: "meta probe-detail", text: pr.detail || "" });
  const card = h("article", { class: `card provider${pr.active ? " active" : ""}`, "data-provider": pr.name },
    h("div", { class: "row" }, h("strong", { text: pr.name }), pr.active ? h("span", { class: "pill ok" }, "active") : null, pill),
    detail,
    h("div", { class: "meta", text: `models: ${(pr.models || []).join(", ") || "—"}` }));
  if (pr.available) {
    get(`/api/providers/${encodeURIComponent(pr.name)}/probe`).then((found) => {
      const [label, cls] = PROBED[found.status] || [found.status, "warn"];
      pill.textContent = label;
      pill.className = `pill ${cls}`;
      detail.textContent = found.detail;
      card.dataset.probe = found.status;
    }, (e) => {
      // An older gateway (404) cannot try it: say only what it knows.
      pill.textContent = e.status === 404 ? "configured" : "not tried";
      detail.textContent = e.status === 404 ? pr.detail || "" : e.message;
      card.dataset.probe = "none";
    });
  }
  return card;
}

// The fields whose input differs from what the gateway sent: only those are posted, so a value the config file
// sets is not pinned in the database by saving another. An emptied field is null (back to the config file's).
function changed(data, inputs, fields) {
  const body = {};
  for (const [name, type] of fields) {
    const v = inputs[name].value.trim();
    if (v === String(data[name] ?? "")) continue;
    body[name] = v === "" ? null : type === "number" ? Number(v) : v;
  }
  return body;
}
