// Notifications, cron jobs and the live log viewer.

import { canAdmin, del, get, post, put } from "./api.js";
import { label } from "./sessions.js";
import { button, clear, confirmButton, field, fmtTime, h, panel, toast, unavailable } from "./ui.js";

// ---- notifications ----

export async function notificationsView(view, app) {
  const list = h("ul", { class: "notes", id: "notifications" });
  const readAll = button("Mark all read", async () => {
    await post("/api/notifications/read-all");
    app.refreshBadge();
    draw();
  }, "small");
  clear(view).append(panel("Notifications", [readAll], list));
  async function draw() {
    let data;
    try {
      data = await get("/api/notifications?limit=100");
    } catch (e) {
      clear(list).append(unavailable(e, "Notifications"));
      return;
    }
    clear(list);
    if (!data.notifications.length) list.append(h("li", { class: "muted" }, "Nothing yet. Cron runs and background turns report here."));
    for (const n of data.notifications) {
      const li = h("li", { class: `note ${n.read ? "read" : "unread"}` },
        h("div", { class: "row" }, h("strong", { text: n.title }), h("span", { class: "when", text: fmtTime(n.created_at) })),
        h("div", { class: "body", text: n.body || "" }));
      if (!n.read) {
        li.append(button("Mark read", async () => {
          await put(`/api/notifications/${encodeURIComponent(n.id)}/read`);
          app.refreshBadge();
          draw();
        }, "small"));
      }
      list.append(li);
    }
  }
  app.onNotificationLive(draw);
  await draw();
}

// ---- cron ----

function schedule(job) {
  if (job.cron) return `cron ${job.cron} (UTC)`;
  if (job.interval_seconds) return `every ${job.interval_seconds} s`;
  return "—";
}

export async function cronView(view) {
  const table = h("div", { class: "cards", id: "cron-jobs" });
  const name = h("input", { id: "cron-name", placeholder: "Morning summary" });
  const prompt = h("textarea", { id: "cron-prompt", rows: "2", placeholder: "What the agent should do", required: true });
  const kind = h("select", { id: "cron-kind" }, h("option", { value: "interval" }, "every N seconds"), h("option", { value: "cron" }, "cron expression (UTC)"));
  const when = h("input", { id: "cron-when", value: "3600", placeholder: "3600 or 0 8 * * *" });
  const target = h("select", { id: "cron-session" }, h("option", { value: "" }, "a new session"));
  const enabled = h("input", { type: "checkbox", id: "cron-enabled", checked: true });
  kind.addEventListener("change", () => (when.value = kind.value === "cron" ? "0 8 * * *" : "3600"));
  const form = h("form", { class: "form-grid", id: "cron-form" },
    field("Name", name), field("Prompt", prompt), field("Schedule", kind), field("Every / expression", when),
    field("Session", target), h("label", { class: "check" }, enabled, " enabled"),
    h("div", { class: "form-actions" }, h("button", { type: "submit", class: "primary" }, "Create job")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { prompt: prompt.value.trim(), name: name.value.trim(), enabled: enabled.checked };
    if (kind.value === "cron") body.cron = when.value.trim();
    else body.interval_seconds = Number(when.value);
    try {
      // Every job needs a target session: "a new session" makes one named after the job.
      body.session_id = target.value || (await post("/api/sessions", { channel: "webchat", title: `Cron: ${body.name || "job"}` })).session_id;
      await post("/api/cron/create", body);
      toast("Job created");
      prompt.value = "";
      name.value = "";
      draw();
    } catch (err) {
      toast(err.message, "error");
    }
  });
  clear(view).append(panel("Cron jobs", [], table), panel("New job", [], form));
  get("/api/sessions?limit=200").then((d) => {
    for (const s of d.sessions) target.append(h("option", { value: s.session_id }, label(s)));
  }).catch(() => {});

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
      table.append(h("article", { class: "card cron-job", "data-job": job.id },
        h("div", { class: "row" }, h("strong", { text: job.name || "(unnamed)" }), h("label", { class: "check" }, toggle, job.enabled ? " on" : " off")),
        h("div", { class: "body", text: job.prompt }),
        h("div", { class: "meta" }, schedule(job), job.next_fire_at ? ` · next ${fmtTime(job.next_fire_at)}` : "", job.last_fire_at ? ` · last ${fmtTime(job.last_fire_at)}` : ""),
        h("div", { class: "row-actions" }, trigger, remove)));
    }
  }
  await draw();
}

// ---- logs ----

export async function logsView(view, app) {
  if (!canAdmin()) {
    // /api/logs is super_admin only: ask for nothing the gateway would refuse.
    clear(view).append(panel("Logs", [], unavailable({ status: 403 }, "The log viewer")));
    return;
  }
  const level = h("select", { id: "log-level", "aria-label": "Level" }, ["", "debug", "info", "warning", "error", "critical"].map((l) => h("option", { value: l }, l || "all levels")));
  const q = h("input", { id: "log-q", type: "search", placeholder: "Filter text…", "aria-label": "Filter text" });
  const live = h("input", { type: "checkbox", id: "log-live", checked: true });
  const out = h("div", { class: "logs", id: "log-lines", role: "log" });
  clear(view).append(panel("Logs", [level, q, h("label", { class: "check" }, live, " live")], out));
  let timer = null;
  let typing = null;
  async function draw() {
    const params = new URLSearchParams({ limit: "500" });
    if (level.value) params.set("level", level.value);
    if (q.value.trim()) params.set("q", q.value.trim());
    try {
      const data = await get(`/api/logs?${params}`);
      clear(out);
      if (!data.logs.length) out.append(h("div", { class: "muted" }, "No matching records."));
      for (const r of data.logs) {
        out.append(h("div", { class: `log ${r.level}` }, h("time", { text: r.ts.replace("T", " ").replace("Z", "") }), h("span", { class: "lvl", text: r.level }), h("span", { class: "logger", text: r.logger }), h("span", { class: "msgtext", text: r.msg })));
      }
    } catch (e) {
      clear(out).append(unavailable(e, "The log viewer"));
      live.checked = false;
    }
  }
  const loop = () => {
    clearTimeout(timer);
    if (live.checked) timer = setTimeout(async () => {
      await draw();
      loop();
    }, 2000);
  };
  level.addEventListener("change", draw);
  q.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(draw, 250);
  });
  live.addEventListener("change", loop);
  app.onLeave(() => clearTimeout(timer));
  await draw();
  loop();
}
