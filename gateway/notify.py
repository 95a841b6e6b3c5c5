"""Creating notifications: persist, then publish `{"id","title","body","read"}` on `runtime.notifications`."""

from __future__ import annotations

import logging
from collections import OrderedDict

import msgspec
import trio

from actors.events import TurnOutcome
from actors.messages import SessionKey
from gateway.core import Runtime
from storage import messages as msg_db
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


class Watched(msgspec.Struct, frozen=True):
    title: str
    source: str
    owner: str | None
    # A connector's or webhook's turn: told only when it did not complete, at most once a minute for its chat.
    chat: str | None = None


# Per chat: a provider that is down fails every turn of a busy bot, and each notification goes to every /ws client.
CHAT_QUIET = 60.0


class BackgroundTurns:
    """Turns nobody is streaming (async messages, cron runs): when one ends, a notification says how.

    How it ended is read from `runtime.outcomes`, the one place a turn's outcome is kept.
    """

    def __init__(self, runtime: Runtime, *, remember: int = 1024) -> None:
        self.runtime = runtime
        self._watched: dict[str, Watched] = {}
        self._remember = remember
        self._told: OrderedDict[str, float] = OrderedDict()  # chat -> when it was last told (trio clock)
        self._send, self._receive = trio.open_memory_channel[tuple[Watched, str, str]](1024)
        self._check, self._to_check = trio.open_memory_channel[str](1024)

    def watch(self, turn_id: str, *, title: str, source: str, owner: str | None, chat: str | None = None) -> None:
        watched = Watched(title, source, owner, chat)
        # A fast turn can end before `watch()` is called (the caller learns the turn id only after Submit returns).
        ended = self.runtime.outcomes.get(turn_id)
        if ended is not None:
            self._queue(watched, ended.state, _told_text(ended))
            return
        self._watched[turn_id] = watched
        try:
            # Ended so long ago that the outcomes forgot it (many turns ended since)? Storage says; else its
            # entry here would wait for a turn_ended already gone.
            self._check.send_nowait(turn_id)
        except trio.WouldBlock:
            log.warning("cannot check turn %s in storage now; it is told when its end is seen", turn_id)

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

    def on_event(self, event: EventRow) -> None:
        """An event listener (synchronous, cheap): queue a notification when a watched turn ends."""
        if event.type != "turn_ended" or event.turn_id is None:
            return
        watched = self._watched.pop(event.turn_id, None)
        outcome = self.runtime.outcomes.get(event.turn_id)
        if watched is not None and outcome is not None:
            self._queue(watched, outcome.state, _told_text(outcome))

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._checker)
            await self._notifier()

    async def _checker(self) -> None:
        async for turn_id in self._to_check:
            try:
                row = await self.runtime.store.call(msg_db.get_turn, turn_id)
            except Exception as exc:
                log.warning("cannot read turn %s: %r", turn_id, exc)
                continue
            if row is None or row.state in ("queued", "running"):
                continue  # its turn_ended is still to come
            watched = self._watched.pop(turn_id, None)
            if watched is not None:
                done = row.state == "completed"
                text = (row.result or "") if done else "error: " + (row.error or row.state)
                self._queue(watched, row.state, text)

    async def _notifier(self) -> None:
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


def _told_text(outcome: TurnOutcome) -> str:
    """A notification's body: the reply, or what went wrong."""
    if outcome.error is not None:
        return "error: " + outcome.error
    return outcome.text
