"""Keeps an internal error in one hypercorn connection from ending the whole server, and so the gateway."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from hypercorn.trio.tcp_server import TCPServer

from actors.supervisor import describe_error

log = logging.getLogger("gateway.http")

_installed = False


def install() -> None:
    """Wrap hypercorn's per-connection task so that an exception escaping it drops that connection only.

    hypercorn.trio (0.18) serves every connection in one server-wide nursery, so an exception escaping one
    connection cancels `serve`: a single unauthenticated request (a WebSocket upgrade followed by stray bytes,
    hypercorn issue #225) or a client's close racing a send (`BusyResourceError` between `send_eof` and
    `send_all`) stopped the whole gateway. The connection's own cleanup has already run when the error reaches
    this wrapper (hypercorn closes the stream in a `finally`). Cancellation is not an `Exception` and passes
    through. Calling this again does nothing.
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

    TCPServer.run = run  # type: ignore[method-assign]
    _installed = True
