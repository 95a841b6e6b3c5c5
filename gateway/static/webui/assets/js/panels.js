// Notifications and the live log viewer (cron jobs: cron.js).

import { canAdmin, get, post, put } from "./api.js";
import { button, clear, fmtTime, h, panel, unavailable } from "./ui.js";

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
