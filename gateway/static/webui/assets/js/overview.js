// The overview: the gateway's health, its connectors and their state, the sessions with a turn under way, and the
// latest errors, refreshed while the screen is open. Admin-only parts (/api/status, /api/logs) are asked for only
// by the gateway token or an admin account.

import { canAdmin, get } from "./api.js";
import { label } from "./sessions.js";
import { clear, fmtTime, h, panel, unavailable } from "./ui.js";

const EVERY_MS = 5000;
const LIVE = new Set(["running", "waiting"]); // a turn running, or one queued behind it

function uptime(s) {
  const d = Math.floor(s / 86400);
  const hrs = Math.floor((s % 86400) / 3600);
  const min = Math.floor((s % 3600) / 60);
  return d ? `${d} d ${hrs} h` : hrs ? `${hrs} h ${min} min` : `${min} min ${Math.floor(s % 60)} s`;
}

async function health() {
  const r = await fetch("/health"); // no credential: it is public, and a 503 still says why
  return r.json();
}

// The report of /api/status, also when it answers 503 (its error carries the same report in `details`).
async function status() {
  try {
    return await get("/api/status");
  } catch (e) {
    if (e.status === 503 && e.details && e.details.services) return e.details;
    throw e;
  }
}

export async function overviewView(view, app) {
  const admin = canAdmin();
  const healthBox = h("div", { id: "ov-health" });
  const connBox = h("div", { class: "cards", id: "ov-connectors" });
  const liveBox = h("div", { id: "ov-sessions" });
  const errBox = h("div", { id: "ov-errors" });
  clear(view).append(
    h("div", { class: "overview" },
      panel("Health", [], healthBox),
      panel("Connectors", [h("a", { href: "#/connectors", class: "small" }, "manage")], connBox),
      panel("Live sessions", [h("a", { href: "#/sessions", class: "small" }, "all sessions")], liveBox),
      panel("Recent errors", [h("a", { href: "#/logs", class: "small" }, "logs")], errBox)));
  let timer = null;
  let gone = false;
  app.onLeave(() => {
    gone = true;
    clearTimeout(timer);
  });

  async function drawHealth() {
    let hb;
    try {
      hb = await health();
    } catch (e) {
      clear(healthBox).append(h("p", { class: "notice error" }, `The gateway does not answer: ${e.message}`));
      return;
    }
    const items = [
      ["gateway", hb.status, hb.reason || `version ${hb.version}`],
      ["up for", null, uptime(hb.uptime)],
      ["connections", null, String(hb.connections)],
    ];
    let report = null;
    if (admin) {
      try {
        report = await status();
      } catch (e) {
        report = { error: e };
      }
    }
    clear(healthBox);
    healthBox.append(h("div", { class: "cards" }, items.map(([name, st, detail]) => fact(name, st, detail))));
    if (report && report.services) {
      // One line per service of /api/status: its verdict, and the gist of its details (all of them on hover).
      healthBox.append(h("ul", { class: "services" }, report.services.filter((x) => x.service !== "connectors").map((x) => {
        const text = typeof x.details === "string" ? x.details : summary(x.details);
        return h("li", { class: "service", id: `svc-${x.service}` }, h("span", { class: `pill ${x.status === "ok" ? "ok" : "error"}`, text: x.status }),
          h("strong", { text: x.service }), h("span", { class: "meta", title: text, text }));
      })));
    }
    drawConnectors(report);
  }

  function drawConnectors(report) {
    clear(connBox);
    if (!admin) return connBox.append(unavailable({ status: 403 }, "Connector health"));
    if (!report || report.error) return connBox.append(unavailable(report && report.error, "Connector health"));
    const svc = (report.services || []).find((s) => s.service === "connectors");
    const d = svc && typeof svc.details === "object" ? svc.details : {};
    const refs = Object.keys(d).filter((k) => !k.startsWith("_")).sort(); // `_ingress`: the shared counters
    if (!refs.length) return connBox.append(h("p", { class: "muted" }, "No connectors."));
    for (const ref of refs) {
      const c = d[ref] || {};
      const state = c.state || "unknown";
      connBox.append(h("article", { class: "card ov-connector", "data-connector": ref },
        h("div", { class: "row" }, h("strong", { text: ref }), h("span", { class: `pill state-${state}`, text: state })),
        h("div", { class: "meta" }, [c.restarts ? `restarts ${c.restarts}` : null, c.backlog ? `backlog ${c.backlog}` : null].filter(Boolean).join(" · ") || "no restarts, nothing waiting"),
        c.last_error ? h("div", { class: "tag error", text: String(c.last_error) }) : null));
    }
  }

  async function drawSessions() {
    let data;
    try {
      data = await get("/api/sessions?limit=200");
    } catch (e) {
      clear(liveBox).append(unavailable(e, "Sessions"));
      return;
    }
    const live = data.sessions.filter((s) => LIVE.has(s.status));
    clear(liveBox);
    liveBox.append(h("p", { class: "meta" }, `${live.length} with a turn under way, of ${data.sessions.length} listed.`));
    if (!live.length) return;
    liveBox.append(h("ul", { class: "sessions" }, live.map((s) =>
      h("li", { class: "session ov-live", "data-session": s.session_id },
        h("a", { class: "session-open", href: `#/chat/${encodeURIComponent(s.session_id)}` },
          h("div", { class: "row" }, h("span", { class: "name", text: label(s) }), h("span", { class: `pill state-${s.status}`, text: s.status })),
          h("div", { class: "sub", text: `${s.effective_provider} / ${s.effective_model}${s.latest_message_at ? ` · ${fmtTime(s.latest_message_at)}` : ""}` }))))));
  }

  async function drawErrors() {
    clear(errBox);
    if (!admin) return errBox.append(unavailable({ status: 403 }, "The error log"));
    let data;
    try {
      data = await get("/api/logs?level=error&limit=10");
    } catch (e) {
      errBox.append(unavailable(e, "The error log"));
      return;
    }
    if (!data.logs.length) return errBox.append(h("p", { class: "muted", id: "ov-no-errors" }, "No errors logged."));
    errBox.append(h("div", { class: "logs" }, data.logs.map((r) =>
      h("div", { class: `log ${r.level}` }, h("time", { text: r.ts.replace("T", " ").replace("Z", "") }), h("span", { class: "lvl", text: r.level }), h("span", { class: "logger", text: r.logger }), h("span", { class: "msgtext", text: r.msg })))));
  }

  async function drawAll() {
    await Promise.all([drawHealth(), drawSessions(), drawErrors()]);
    view.querySelector(".overview")?.setAttribute("data-drawn", "1");
    if (!gone) timer = setTimeout(drawAll, EVERY_MS);
  }
  await drawAll();
}

// The gist of a service's structured details: each part's state or number, never a dump of JSON.
function summary(details) {
  if (!details || typeof details !== "object") return "";
  const parts = [];
  for (const [k, v] of Object.entries(details)) {
    if (v && typeof v === "object" && !Array.isArray(v)) parts.push(v.state ? `${k}: ${v.state}` : `${k}: ${Object.keys(v).length}`);
    else if (Array.isArray(v)) parts.push(`${k}: ${v.length}`);
    else if (v !== null && v !== false) parts.push(`${k}: ${v}`);
  }
  return parts.join(" · ");
}

function fact(name, st, detail, id) {
  return h("article", { class: "card fact", id },
    h("div", { class: "row" }, h("strong", { text: name }), st ? h("span", { class: `pill ${st === "ok" ? "ok" : "error"}`, text: st }) : null),
    h("div", { class: "meta", text: detail || "" }));
}
