"""A fan-out hub: publishers post items, every live subscriber gets each one; slow subscribers are cut off."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

import trio

from actors.messages import Sink

T = TypeVar("T")


class Broadcast(Generic[T]):
    """Used for gateway-wide pushes such as notifications; `publish` never blocks."""

    def __init__(self, *, buffer: int = 256) -> None:
        self._buffer = buffer
        self._subscribers: set[Sink[T]] = set()

    def publish(self, item: T) -> int:
        """Send `item` to every subscriber now; return how many got it. A full subscriber is closed."""
        delivered = 0
        for ch in list(self._subscribers):
            try:
                ch.send_nowait(item)
                delivered += 1
            except trio.WouldBlock:
                ch.close()
                self._subscribers.discard(ch)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.discard(ch)
        return delivered

    @contextmanager
    def subscribe(self) -> Iterator[trio.MemoryReceiveChannel[T]]:
        """Yield a channel receiving every item published while the block runs."""
        send, receive = trio.open_memory_channel[T](self._buffer)
        self._subscribers.add(send)
        try:
            with receive:
                yield receive
        finally:
            self._subscribers.discard(send)
            send.close()

    def add(self, sink: Sink[T]) -> None:
        """Push every item published from now on into `sink` (closed when it is full) until `discard`."""
        self._subscribers.add(sink)

    def discard(self, sink: Sink[T]) -> None:
        self._subscribers.discard(sink)

    def __len__(self) -> int:
        return len(self._subscribers)
