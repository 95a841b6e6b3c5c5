"""Keeps an internal error in one hypercorn connection from ending the whole server, and so the gateway."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio
from hypercorn.events import Closed, Event
from hypercorn.trio.tcp_server import TCPServer

from actors.supervisor import describe_error

log = logging.getLogger("gateway.http")

_installed = False


def install() -> None:
    """Wrap hypercorn's per-connection task so that an exception escaping it drops that connection only, and treat
    a send that races the connection's close as a send to a closed connection.

    hypercorn.trio (0.18) serves every connection in one server-wide nursery, so an exception escaping one
    connection cancels `serve`: a single unauthenticated request (a WebSocket upgrade followed by stray bytes,
    hypercorn issue #225) or a client's close racing a send (`BusyResourceError` between `send_eof` and
    `send_all`) stopped the whole gateway. The connection's own cleanup has already run when the error reaches
    this wrapper (hypercorn closes the stream in a `finally`). Cancellation is not an `Exception` and passes
    through. The race itself: hypercorn's `_close()` sends EOF without the send lock its `protocol_send` holds, so
    a response (or a close frame) written while the peer goes away raised `BusyResourceError` into the app; the
    connection is closing then, exactly the case hypercorn already handles for a broken stream. Calling this again
    does nothing.
    """
    global _installed
    if _installed:
        return
    original: Callable[[TCPServer], Awaitable[None]] = TCPServer.run

    async def run(self: TCPServer) -> None:
        try:
            await original(self)
        except Exception as exc:
            log.warning("dropped one connection after an internal HTTP server error: %s", describe_error(exc))

    original_send: Callable[[TCPServer, Event], Awaitable[None]] = TCPServer.protocol_send

    async def protocol_send(self: TCPServer, event: Event) -> None:
        try:
            await original_send(self, event)
        except trio.BusyResourceError:
            await self.protocol.handle(Closed())  # as hypercorn does for a broken or closed stream

    TCPServer.run = run  # type: ignore[method-assign]
    TCPServer.protocol_send = protocol_send  # type: ignore[method-assign]
    _installed = True
