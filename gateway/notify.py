"""Creating notifications: persist, then publish `{"id","title","body","read"}` on `runtime.notifications`."""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import trio

from actors.messages import SessionKey
from gateway.core import Runtime
from storage import notifications as notes_db
from storage.clock import now_ms
from storage.events import EventRow
from storage.notifications import NotificationRow

log = logging.getLogger("gateway.notify")


async def notify(runtime: Runtime, *, title: str, body: str, source: str, owner: str | None) -> NotificationRow:
    """Store a notification and push it to every live subscriber (the WebSocket edge forwards it; each notification
    stream reads the caller's own from the store when woken)."""
    row = await runtime.store.call(notes_db.add, title=title, body=body, source=source, owner=owner, now_ms=now_ms())
    # Exactly the seed's shape: the WebSocket edge forwards it as it is to every authenticated client.
    runtime.notifications.publish({"id": row.id, "title": row.title, "body": row.body, "read": row.read})
    return row


@dataclass(frozen=True, slots=True)
class Watched:
    title: str
    source: str
    owner: str | None
    # A connector's or webhook's turn: told only when it did not complete, at most once a minute for its chat.
    chat: str | None = None


# Per chat: a provider that is down fails every turn of a busy bot, and each notification goes to every /ws client.
CHAT_QUIET = 60.0


class BackgroundTurns:
    """Turns nobody is streaming (async messages, cron runs): when one ends, a notification says how."""

    def __init__(self, runtime: Runtime, *, remember: int = 1024) -> None:
        self.runtime = runtime
        self._watched: dict[str, Watched] = {}
        self._results: OrderedDict[str, str] = OrderedDict()
        # Turns that ended before anyone watched them: a fast turn can end before `watch()` is called
        # (the caller learns the turn id only after Submit returns). Bounded, oldest forgotten first.
        self._ended: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._remember = remember
        self._told: OrderedDict[str, float] = OrderedDict()  # chat -> when it was last told (trio clock)
        self._send, self._receive = trio.open_memory_channel[tuple[Watched, str, str]](1024)

    def watch(self, turn_id: str, *, title: str, source: str, owner: str | None, chat: str | None = None) -> None:
        watched = Watched(title, source, owner, chat)
        ended = self._ended.pop(turn_id, None)
        if ended is not None:
            self._queue(watched, *ended)
        else:
            self._watched[turn_id] = watched

    def watch_ingress(self, key: SessionKey, turn_id: str) -> None:
        """A turn fed by a connector's ingress (`source` `connector`, or `webhook` for an http connector): its reply
        goes to the chat through the outbox, so only an end without one (failed, aborted, interrupted) is told."""
        source = "webhook" if key.transport.startswith("http:") else "connector"
        self.watch(turn_id, title=f"Reply in {key}", source=source, owner=None, chat=str(key))

    def failed(self, *, title: str, error: str, source: str, owner: str | None) -> None:
        """Notify that something never started (e.g. a cron job whose target is gone)."""
        self._queue(Watched(title, source, owner), "failed", error)

    def _queue(self, watched: Watched, state: str, text: str) -> None:
        if watched.chat is not None:
            if state == "completed":
                return
            now = trio.current_time()
            last = self._told.get(watched.chat)
            if last is not None and now - last < CHAT_QUIET:
                return
            self._told[watched.chat] = now
            self._told.move_to_end(watched.chat)
            if len(self._told) > self._remember:
                self._told.popitem(last=False)
        try:
            self._send.send_nowait((watched, state, text))
        except trio.WouldBlock:
            log.warning("notification queue full; dropped %r", watched.title)

    def _remember_bounded(self, table: OrderedDict[str, Any], key: str, value: Any) -> None:
        table[key] = value
        while len(table) > self._remember:
            table.popitem(last=False)

    def on_event(self, event: EventRow) -> None:
        """An event listener (synchronous, cheap): remember results, queue a notification at the turn's end."""
        if event.turn_id is None:
            return
        if event.type == "result":
            self._remember_bounded(self._results, event.turn_id, str(event.data.get("text", "")))
        elif event.type == "error":
            self._remember_bounded(self._results, event.turn_id, "error: " + str(event.data.get("message", "")))
        elif event.type == "turn_ended":
            text = self._results.pop(event.turn_id, "")
            state = str(event.data.get("state", ""))
            watched = self._watched.pop(event.turn_id, None)
            if watched is None:
                self._remember_bounded(self._ended, event.turn_id, (state, text))
            else:
                self._queue(watched, state, text)

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
