// The live notification stream (GET /api/notifications/stream, SSE): each one as it is made, resumed with
// Last-Event-ID after a drop; the caller polls slowly only while it is down.

import { raw } from "./api.js";
import { readSse } from "./engine.js";

const pause = (ms) => new Promise((res) => setTimeout(res, ms));

// Follow the stream until the returned function is called. `onUp` when it is (again) open, `onDown` when it fails.
export function followNotifications({ onNote, onUp, onDown }) {
  const ctl = new AbortController();
  let stopped = false;
  let last = null; // the id of the last notification (or the stream's starting point): where a reconnect resumes
  (async () => {
    let attempt = 0;
    while (!stopped) {
      let restarting = false;
      try {
        const headers = { Accept: "text/event-stream" };
        if (last) headers["Last-Event-ID"] = last;
        const r = await raw("/api/notifications/stream", { headers, signal: ctl.signal });
        await readSse(r.body, (ev) => {
          if (ev.type === "ready") {
            attempt = 0;
            last ??= ev.cursor;
            onUp();
          } else if (ev.type === "notification") {
            last = ev.notification.id;
            onNote(ev.notification);
          } else if (ev.type === "shutdown") {
            restarting = true;
          }
        });
      } catch (e) {
        if (stopped || e.name === "AbortError") return;
        if (e.status === 401) return; // the credential is refused: the app signs out
      }
      if (stopped) return;
      onDown();
      // A restart says when to come back; anything else backs off up to half a minute.
      await pause(restarting ? 2000 : Math.min(30_000, 1000 * 2 ** attempt++));
    }
  })();
  return () => {
    stopped = true;
    ctl.abort();
  };
}
