"""Creating notifications: persist, then publish `{"id","title","body","read"}` on `runtime.notifications`."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import trio

from gateway.runtime import Runtime
from storage import notifications as notes_db
from storage.events import EventRow
from storage.notifications import NotificationRow

log = logging.getLogger("gateway.notify")


async def notify(runtime: Runtime, *, title: str, body: str, source: str, owner: str | None) -> NotificationRow:
    """Store a notification and push it to every live subscriber (the WebSocket edge forwards it)."""
    row = await runtime.store.call(
        notes_db.add, title=title, body=body, source=source, owner=owner, now_ms=time.time_ns() // 1_000_000
    )
    # Exactly the seed's shape: the WebSocket edge forwards it as it is to every authenticated client.
    runtime.notifications.publish({"id": row.id, "title": row.title, "body": row.body, "read": row.read})
    return row


@dataclass(frozen=True, slots=True)
class Watched:
    title: str
    source: str
    owner: str | None


class BackgroundTurns:
    """Turns nobody is streaming (async messages, cron runs): when one ends, a notification says how."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._watched: dict[str, Watched] = {}
        self._results: dict[str, str] = {}
        self._send, self._receive = trio.open_memory_channel[tuple[Watched, str, str]](1024)

    def watch(self, turn_id: str, *, title: str, source: str, owner: str | None) -> None:
        self._watched[turn_id] = Watched(title, source, owner)

    def failed(self, *, title: str, error: str, source: str, owner: str | None) -> None:
        """Notify that something never started (e.g. a cron job whose target is gone)."""
        try:
            self._send.send_nowait((Watched(title, source, owner), "failed", error))
        except trio.WouldBlock:
            log.warning("notification queue full; dropped %r", title)

    def on_event(self, event: EventRow) -> None:
        """An event listener (synchronous, cheap): remember results, queue a notification at the turn's end."""
        if event.turn_id is None or event.turn_id not in self._watched:
            return
        if event.type == "result":
            self._results[event.turn_id] = str(event.data.get("text", ""))
        elif event.type == "error":
            self._results[event.turn_id] = "error: " + str(event.data.get("message", ""))
        elif event.type == "turn_ended":
            watched = self._watched.pop(event.turn_id)
            text = self._results.pop(event.turn_id, "")
            state = str(event.data.get("state", ""))
            try:
                self._send.send_nowait((watched, state, text))
            except trio.WouldBlock:
                log.warning("notification queue full; dropped the one for turn %s", event.turn_id)

    async def run(self) -> None:
        async for watched, state, text in self._receive:
            body = text if len(text) <= 500 else text[:497] + "..."
            try:
                await notify(
                    self.runtime,
                    title=f"{watched.title}: {state}",
                    body=body,
                    source=watched.source,
                    owner=watched.owner,
                )
            except Exception:
                log.exception("cannot store a notification")
