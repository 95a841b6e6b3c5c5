// The Usage screen: tokens in and out per day (UTC), per model and per session (the largest), with totals, over a
// chosen range of days; an
// account sees its own, the gateway token and admins everyone's (or one account's). Counts a provider did not report
// are estimated (about 4 characters a token) and marked so.

import { auth, canAdmin, get, isToken } from "./api.js";
import { clear, h, panel, unavailable } from "./ui.js";

const fmt = new Intl.NumberFormat();
const SESSION_ROWS = 20;

// A session's title (else its key) opening its chat; a deleted session keeps its usage under its id.
function sessionCell(r) {
  if (r.label == null) return h("span", { class: "muted", text: `${r.key} (deleted)` });
  return h("a", { href: `#/chat/${encodeURIComponent(r.key)}`, text: r.label });
}

function isoDay(d) {
  return d.toISOString().slice(0, 10);
}

function sumsTable(id, head, rows, total, keyOf) {
  const line = (r, cls, key) => h("tr", { class: cls, "data-key": r.key ?? "" },
    h("th", { scope: "row" }, key),
    h("td", { class: "num", text: fmt.format(r.input_tokens) }),
    h("td", { class: "num", text: fmt.format(r.output_tokens) }),
    h("td", { class: "num", text: fmt.format(r.total_tokens) }),
    h("td", { class: "num", text: fmt.format(r.turns) }),
    h("td", { class: "num", text: r.estimated_turns ? `${fmt.format(r.estimated_turns)} estimated` : "—" }));
  if (!rows.length) return h("p", { class: "muted", id, text: "No turns in this range." });
  return h("div", { class: "table-scroll" }, h("table", { class: "usage-table", id },
    h("thead", {}, h("tr", {}, [head, "in", "out", "total", "turns", "estimated"].map((t, i) => h("th", { scope: "col", class: i ? "num" : "", text: t })))),
    h("tbody", {}, rows.map((r) => line(r, "", keyOf(r)))),
    h("tfoot", {}, line(total, "usage-total", "total"))));
}

export async function usageView(view) {
  const admin = canAdmin();
  const today = new Date();
  const from = h("input", { type: "date", id: "usage-from", value: isoDay(new Date(today.getTime() - 29 * 86400_000)) });
  const to = h("input", { type: "date", id: "usage-to", value: isoDay(today) });
  const who = h("input", { id: "usage-user", autocomplete: "off", placeholder: "everyone", "aria-label": "Account id" });
  const todayBox = h("div", { id: "usage-today" });
  const days = h("div", { id: "usage-days-box" });
  const models = h("div", { id: "usage-models-box" });
  const sessions = h("div", { id: "usage-sessions-box" });
  const form = h("form", { class: "form-row usage-range", id: "usage-range" },
    h("label", {}, "From (UTC) ", from), h("label", {}, "to ", to),
    admin ? h("label", {}, "account ", who) : null,
    h("button", { type: "submit", class: "small primary" }, "Show"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    draw();
  });
  const whose = admin ? "Everyone's turns, or one account's (its id; `none`: turns of no account)." : `Your turns (${isToken() ? "gateway token" : auth.user.username || auth.user.email}).`;
  clear(view).append(
    panel("Usage", [], h("p", { class: "muted" }, `${whose} Tokens in and out as each provider reported them; where one reported none (echo, some CLIs) they are estimated at about 4 characters a token.`), form, todayBox),
    panel("Per day", [], days),
    panel("Per model", [], models),
    panel(`Per session (the ${SESSION_ROWS} largest)`, [], sessions));

  async function draw() {
    const q = new URLSearchParams();
    if (from.value) q.set("from", from.value);
    if (to.value) q.set("to", to.value);
    if (admin && who.value.trim()) q.set("user", who.value.trim());
    let byDay, byModel, bySession;
    try {
      [byDay, byModel, bySession] = await Promise.all([
        get(`/api/usage?group=day&${q}`),
        get(`/api/usage?group=model&${q}`),
        get(`/api/usage?group=session&limit=${SESSION_ROWS}&${q}`),
      ]);
    } catch (e) {
      clear(days).append(unavailable(e, "Usage"));
      clear(models);
      clear(sessions);
      return;
    }
    clear(days).append(sumsTable("usage-days", "day (UTC)", byDay.rows, byDay.total, (r) => r.key));
    clear(models).append(sumsTable("usage-models", "model", byModel.rows, byModel.total, (r) => r.key || "(unknown)"));
    clear(sessions).append(sumsTable("usage-sessions", "session", bySession.rows, bySession.total, sessionCell));
    clear(todayBox);
    const t = byDay.today;
    if (t) {
      const capText = t.cap == null ? "no daily cap" : `of a daily cap of ${fmt.format(t.cap)}`;
      const reached = t.cap != null && t.used >= t.cap;
      todayBox.append(h("p", { class: reached ? "notice error" : "notice", id: "usage-today-line" },
        `Today (UTC): ${fmt.format(t.used)} tokens ${capText}.`, reached ? " The cap is reached: new messages are refused until midnight UTC." : ""));
    }
    view.querySelector("#usage-days-box")?.setAttribute("data-drawn", "1");
  }
  await draw();
}
