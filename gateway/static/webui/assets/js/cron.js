// Cron jobs: create, edit (schedule, timezone, prompt, target), toggle, run now, delete, and each job's run history.

import { del, get, patch, post } from "./api.js";
import { label } from "./sessions.js";
import { button, clear, confirmButton, errorBox, field, fmtTime, h, markInvalid, panel, toast, unavailable } from "./ui.js";

const BROWSER_ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";

// Every IANA zone the browser knows, offered as suggestions (the gateway checks the name against its own database).
function zoneList() {
  const zones = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : [];
  return h("datalist", { id: "cron-zones" }, ["UTC", ...zones.filter((z) => z !== "UTC")].map((z) => h("option", { value: z })));
}

function schedule(job) {
  if (job.cron) return `cron ${job.cron} (${job.timezone})`;
  if (job.interval_seconds) return `every ${job.interval_seconds} s`;
  return "—";
}

// The wall time of the next run in the job's own zone ("09:00"), beside the browser's reading of it.
function nextRun(job) {
  if (!job.next_fire_at) return "";
  const local = job.cron && job.next_fire_local ? ` (${job.next_fire_local.slice(11, 16)} ${job.timezone})` : "";
  return ` · next ${fmtTime(job.next_fire_at)}${local}`;
}

function duration(ms) {
  if (ms === null || ms === undefined) return "";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.round(ms / 60_000)} min`;
}

// The schedule inputs, shared by the create and edit forms: kind, expression or seconds, timezone.
function scheduleInputs(prefix, job) {
  const kind = h("select", { id: `${prefix}-kind`, "aria-label": "Schedule" },
    h("option", { value: "interval" }, "every N seconds"), h("option", { value: "cron" }, "cron expression"));
  kind.value = job && job.cron ? "cron" : "interval";
  const when = h("input", { id: `${prefix}-when`, value: job ? String(job.cron || job.interval_seconds || "") : "3600", placeholder: "3600 or 0 8 * * *" });
  const zone = h("input", { id: `${prefix}-timezone`, list: "cron-zones", value: job ? job.timezone : BROWSER_ZONE, placeholder: "Europe/Berlin", autocomplete: "off", spellcheck: "false" });
  const zoneField = field("Timezone", zone, "IANA name; the expression's hours are read there");
  const sync = () => (zoneField.hidden = kind.value !== "cron");
  kind.addEventListener("change", () => {
    when.value = kind.value === "cron" ? "0 8 * * *" : "3600";
    sync();
  });
  sync();
  return { kind, when, zone, fields: [field("Schedule", kind), field("Every / expression", when), zoneField] };
}

// The inputs a 422 may name, for markInvalid: the one `when` input stands for the expression or the seconds.
function scheduleFields(s) {
  return s.kind.value === "cron" ? { cron: s.when, timezone: s.zone } : { interval_seconds: s.when };
}

function scheduleBody(s) {
  if (s.kind.value === "cron") return { cron: s.when.value.trim(), timezone: s.zone.value.trim() };
  return { interval_seconds: Number(s.when.value) };
}

export async function cronView(view) {
  const table = h("div", { class: "cards", id: "cron-jobs" });
  const name = h("input", { id: "cron-name", placeholder: "Morning summary" });
  const prompt = h("textarea", { id: "cron-prompt", rows: "2", placeholder: "What the agent should do", required: true });
  const sched = scheduleInputs("cron", null);
  const target = h("select", { id: "cron-session" }, h("option", { value: "" }, "a new session"));
  const enabled = h("input", { type: "checkbox", id: "cron-enabled", checked: true });
  const problems = h("div", { class: "form-actions" });
  const form = h("form", { class: "form-grid", id: "cron-form" },
    field("Name", name), field("Prompt", prompt), ...sched.fields,
    field("Session", target), h("label", { class: "check" }, enabled, " enabled"),
    h("div", { class: "form-actions" }, h("button", { type: "submit", class: "primary" }, "Create job")), problems);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clear(problems);
    const body = { prompt: prompt.value.trim(), name: name.value.trim(), enabled: enabled.checked, ...scheduleBody(sched) };
    try {
      // Every job needs a target session: "a new session" makes one named after the job.
      body.session_id = target.value || (await post("/api/sessions", { channel: "webchat", title: `Cron: ${body.name || "job"}` })).session_id;
      await post("/api/cron/create", body);
      markInvalid(scheduleFields(sched), null);
      toast("Job created");
      prompt.value = "";
      name.value = "";
      draw();
    } catch (err) {
      markInvalid(scheduleFields(sched), err);
      problems.append(errorBox(err, "cron-create-error"));
    }
  });
  const sessions = [];
  clear(view).append(zoneList(), panel("Cron jobs", [], table), panel("New job", [], form));
  get("/api/sessions?limit=200").then((d) => {
    for (const s of d.sessions) {
      sessions.push(s);
      target.append(h("option", { value: s.session_id }, label(s)));
    }
  }).catch(() => {});

  // The card's edit form: only what changed is sent (PATCH), a refused schedule is shown in the card.
  function editForm(job, card) {
    const ename = h("input", { class: "cron-edit-name", value: job.name, "aria-label": "Name" });
    const eprompt = h("textarea", { class: "cron-edit-prompt", rows: "2", "aria-label": "Prompt" });
    eprompt.value = job.prompt;
    const es = scheduleInputs(`cron-edit-${job.id}`, job);
    es.kind.classList.add("cron-edit-kind");
    es.when.classList.add("cron-edit-when");
    es.zone.classList.add("cron-edit-timezone");
    const etarget = h("select", { class: "cron-edit-session", "aria-label": "Session" });
    const known = sessions.some((s) => s.session_id === job.session_id);
    if (!known) etarget.append(h("option", { value: job.session_id || "" }, job.session_id ? "(current target)" : job.connector ? `${job.connector} chat ${job.chat_id}` : "—"));
    for (const s of sessions) etarget.append(h("option", { value: s.session_id }, label(s)));
    etarget.value = job.session_id || "";
    const problems = h("div", { class: "form-actions" });
    const save = h("button", { type: "submit", class: "primary" }, "Save");
    const cancel = button("Cancel", () => draw(), "");
    const form = h("form", { class: "form-grid cron-edit" },
      field("Name", ename), field("Prompt", eprompt), ...es.fields, field("Session", etarget),
      h("div", { class: "form-actions" }, save, cancel), problems);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      clear(problems);
      const body = {};
      if (ename.value.trim() !== job.name) body.name = ename.value.trim();
      if (eprompt.value.trim() !== job.prompt) body.prompt = eprompt.value.trim();
      const s = scheduleBody(es);
      if (s.cron !== undefined) {
        if (s.cron !== job.cron) body.cron = s.cron;
        if (s.timezone !== job.timezone) body.timezone = s.timezone;
      } else if (s.interval_seconds !== job.interval_seconds) body.interval_seconds = s.interval_seconds;
      if (etarget.value && etarget.value !== (job.session_id || "")) body.session_id = etarget.value;
      if (!Object.keys(body).length) {
        draw();
        return;
      }
      try {
        await patch(`/api/cron/${encodeURIComponent(job.id)}`, body);
        toast("Job saved");
        draw();
      } catch (err) {
        markInvalid({ ...scheduleFields(es), prompt: eprompt, name: ename }, err);
        problems.append(errorBox(err));
      }
    });
    card.append(form);
    ename.focus();
  }

  // The card's run history, newest first, a page at a time.
  async function history(job, box) {
    const list = h("ol", { class: "cron-runs" });
    const more = h("div", { class: "row-actions" });
    clear(box).append(h("strong", { text: "Runs" }), list, more);
    async function page(before) {
      let data;
      try {
        const q = new URLSearchParams({ limit: "20" });
        if (before) q.set("before", String(before));
        data = await get(`/api/cron/${encodeURIComponent(job.id)}/runs?${q}`);
      } catch (e) {
        list.append(h("li", {}, unavailable(e, "Run history")));
        return;
      }
      if (!before && !data.runs.length) list.append(h("li", { class: "muted" }, "No runs yet."));
      for (const r of data.runs) {
        list.append(h("li", { class: `cron-run run-${r.status}`, "data-run": r.id },
          h("span", { class: `pill ${r.status === "ok" ? "ok" : r.status === "running" ? "warn" : r.status === "error" ? "error" : ""}`, text: r.status }),
          " ", h("span", { class: "when", text: fmtTime(r.started_at) }),
          " ", h("span", { class: "meta", text: `${r.trigger}${r.ended_at ? ` · ${duration(r.duration_ms)}` : ""}` }),
          r.error ? h("div", { class: "tag error", text: r.error }) : null));
      }
      clear(more);
      if (data.next_before) more.append(button("Older runs", () => page(data.next_before), "small"));
    }
    await page(null);
  }

  async function draw() {
    let data;
    try {
      data = await get("/api/cron");
    } catch (e) {
      clear(table).append(unavailable(e, "Cron"));
      return;
    }
    clear(table);
    if (!data.jobs.length) table.append(h("p", { class: "muted" }, "No jobs yet."));
    for (const job of data.jobs) {
      const toggle = h("input", { type: "checkbox", class: "switch", checked: job.enabled, "aria-label": "enabled" });
      toggle.addEventListener("change", async () => {
        try {
          await post(`/api/cron/${encodeURIComponent(job.id)}/toggle`);
          draw();
        } catch (e) {
          toast(e.message, "error");
        }
      });
      const trigger = button("Run now", async () => {
        try {
          const r = await post("/api/cron/trigger", { job_id: job.id });
          toast(r.status === "ok" ? `Started: ${r.message}` : `Failed: ${r.message}`, r.status === "ok" ? "info" : "error");
          draw();
        } catch (e) {
          toast(e.message, "error");
        }
      }, "small primary");
      const remove = confirmButton("Delete", "Really delete?", async () => {
        await del(`/api/cron/${encodeURIComponent(job.id)}`);
        draw();
      }, "small danger");
      const runs = h("div", { class: "cron-history", hidden: true });
      const card = h("article", { class: "card cron-job", "data-job": job.id });
      const edit = button("Edit", () => {
        edit.disabled = true;
        editForm(job, card);
      }, "small");
      const show = button("History", async () => {
        runs.hidden = !runs.hidden;
        if (!runs.hidden) await history(job, runs);
      }, "small");
      card.append(
        h("div", { class: "row" }, h("strong", { text: job.name || "(unnamed)" }), h("label", { class: "check" }, toggle, job.enabled ? " on" : " off")),
        h("div", { class: "body", text: job.prompt }),
        h("div", { class: "meta" }, schedule(job), nextRun(job), job.last_fire_at ? ` · last ${fmtTime(job.last_fire_at)}` : ""),
        h("div", { class: "row-actions" }, trigger, edit, show, remove), runs);
      table.append(card);
    }
  }
  await draw();
}
