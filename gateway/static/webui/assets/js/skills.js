// Skills (super_admin only): the installed ones, install from a local folder or a GitHub tree URL, enable/disable,
// delete, and the risk policy (under enforce_confirmation a skill with scripts is installed only once confirmed).

import { canAdmin, del, get, post } from "./api.js";
import { button, clear, confirmButton, errorBox, field, fmtTime, h, panel, switchInput, toast, unavailable } from "./ui.js";

const PLACEHOLDER = {
  local: "/absolute/path/to/the/skill/folder",
  github: "https://github.com/OWNER/REPO/tree/REF/PATH",
};

export async function skillsView(view) {
  if (!canAdmin()) {
    // Every skills route is super_admin only: ask for nothing the gateway would refuse.
    clear(view).append(panel("Skills", [], unavailable({ status: 403 }, "Skills")));
    return;
  }
  const list = h("div", { class: "cards", id: "skills" });
  const policy = h("select", { id: "skills-policy", "aria-label": "Risk policy" },
    h("option", { value: "off" }, "risk policy: off"), h("option", { value: "enforce_confirmation" }, "risk policy: confirm scripts"));
  policy.addEventListener("change", async () => {
    try {
      await post("/api/v2/skills/policy", { mode: policy.value });
      toast(policy.value === "off" ? "Risk policy off" : "Skills with scripts now need confirmation");
    } catch (e) {
      toast(e.message, "error");
      drawPolicy();
    }
  });
  clear(view).append(panel("Skills", [policy], list), panel("Install a skill", [], installForm(() => draw())));

  async function drawPolicy() {
    try {
      policy.value = (await get("/api/v2/skills/policy")).mode;
    } catch (e) {
      toast(e.message, "error");
    }
  }

  async function draw() {
    let data;
    try {
      data = await get("/api/v2/skills");
    } catch (e) {
      clear(list).append(unavailable(e, "Skills"));
      return;
    }
    clear(list);
    if (!data.skills.length) list.append(h("p", { class: "muted" }, "No skills installed."));
    for (const s of data.skills) list.append(skillCard(s));
  }

  function skillCard(s) {
    const key = encodeURIComponent(s.slug || s.id);
    const source = s.source_type === "local" ? `folder ${s.source_ref}` : s.source_ref;
    const files = `${s.bundle_file_count} file${s.bundle_file_count === 1 ? "" : "s"}`;
    return h("article", { class: "card skill", "data-skill": s.slug },
      h("div", { class: "row" }, h("strong", { text: s.name }), h("span", { class: "pill" }, `v${s.version}`)),
      h("div", { class: "body", text: s.description }),
      h("div", { class: "meta", text: `${s.slug} · ${s.runtime_type} · ${files} · updated ${fmtTime(s.updated_at)}` }),
      h("div", { class: "meta", text: source }),
      h("div", { class: "row-actions" },
        h("label", { class: "check" }, switchInput(s.enabled, "enabled", async (on) => {
          await post(`/api/v2/skills/${key}/enabled`, { enabled: on });
          await draw();
        }), s.enabled ? " enabled" : " disabled"),
        confirmButton("Delete", "Really delete?", async () => {
          try {
            await del(`/api/v2/skills/${key}`);
            toast(`Deleted ${s.name}`);
          } catch (e) {
            toast(e.message, "error");
          }
          await draw();
        }, "small danger")));
  }

  await Promise.all([drawPolicy(), draw()]);
}

function installForm(done) {
  const source = h("select", { id: "skill-source" }, h("option", { value: "local" }, "local folder"), h("option", { value: "github" }, "GitHub"));
  const ref = h("input", { id: "skill-ref", placeholder: PLACEHOLDER.local, spellcheck: "false", required: true });
  source.addEventListener("change", () => (ref.placeholder = PLACEHOLDER[source.value]));
  const md = h("textarea", { id: "skill-md", rows: "5", class: "mono", spellcheck: "false",
    placeholder: "---\nname: …\ndescription: …\n---\n(optional: replaces the bundle's SKILL.md)" });
  const result = h("div", { class: "form-actions", id: "skill-result" });
  const where = field("Folder or URL", ref);
  where.classList.add("wide");
  const form = h("form", { class: "form-grid", id: "skill-form" }, h("div", { class: "form-row" }, field("Source", source), where),
    field("SKILL.md", md), h("div", { class: "form-actions" }, h("button", { type: "submit", class: "primary" }, "Install")), result);

  async function install(confirmRisk) {
    const body = { source_type: source.value, source_ref: ref.value.trim(), confirm_risk: confirmRisk };
    if (md.value.trim()) body.skill_md = md.value;
    clear(result);
    try {
      const item = await post("/api/v2/skills/install", body);
      toast(`Installed ${item.name} ${item.version}`);
      form.reset();
      ref.placeholder = PLACEHOLDER.local;
      done();
    } catch (e) {
      if (e.code !== "SKILL_RISK_CONFIRMATION_REQUIRED") {
        result.append(errorBox(e, "skill-error"));
        return;
      }
      // The policy asks for a confirmation: the gateway's reasons, then one click to install it anyway.
      const box = errorBox({ message: "This skill could act on this machine; the risk policy asks you to confirm.", details: e.details }, "skill-error");
      box.append(button("Install anyway", () => install(true), "danger"));
      result.append(box);
    }
  }
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    install(false);
  });
  return form;
}
