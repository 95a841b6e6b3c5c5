"""Tells open session-list streams (`POST /api/sessions/stream`) that a list may have changed; free when unused."""

from __future__ import annotations

import trio

from gateway.core import Runtime
from storage.events import EventRow


class SessionsFeed:
    """A change signal: `changed` is set (and replaced) on each change. Read it before reading the list, then wait
    on it, so a change made while the list was read is never missed."""

    def __init__(self) -> None:
        self.changed = trio.Event()

    def bump(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def on_event(self, event: EventRow) -> None:
        """Session event listener: a turn starting or ending changes its session's status and latest message."""
        if event.type in ("turn_started", "turn_ended"):
            self.bump()


def feed_of(runtime: Runtime) -> SessionsFeed:
    """The runtime's feed, made (and hooked to session events) by the first stream that needs it."""
    feed = runtime.services.sessions_feed
    if feed is None:
        feed = runtime.services.sessions_feed = SessionsFeed()
        runtime.event_listeners.append(feed.on_event)
    return feed


def sessions_changed(runtime: Runtime) -> None:
    """Say that sessions were created, renamed or deleted (nothing to do while no stream was ever opened)."""
    feed = runtime.services.sessions_feed
    if feed is not None:
        feed.bump()
