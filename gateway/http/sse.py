"""A Server-Sent Events response that owns its stream: ends on disconnect or shutdown, frees its slot, keeps alive."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import trio
from starlette.responses import Response

from gateway.logs import redactor
from gateway.types import Receive, Scope, Send

KEEPALIVE = 15.0


def sse_event(data: Any, *, event: str | None = None, id: int | str | None = None) -> bytes:
    """Encode one SSE event; `data` is JSON-encoded on one line, so it never needs splitting."""
    lines = []
    if id is not None:
        lines.append(f"id: {id}")
    if event is not None:
        lines.append(f"event: {event}")
    payload = data if isinstance(data, str) else msgspec.json.encode(data).decode()
    lines.append(f"data: {payload}")
    return redactor.redact_bytes(("\n".join(lines) + "\n\n").encode())


def shutdown_event(retry_ms: int = 2000) -> bytes:
    """The last event of a stream cut short by shutdown: why it ended, and (`retry`) when to reconnect."""
    body = sse_event(
        {
            "type": "shutdown",
            "message": "the gateway is restarting; send the request again with Last-Event-ID to get the rest",
        },
        event="shutdown",
    )
    return f"retry: {retry_ms}\n".encode() + body


class SSEResponse(Response):
    """Streams `source` (already-encoded events); `on_close` runs however the stream ends.

    `head` goes out first, whatever happens next. When `shutdown` is set the stream ends at once and cleanly: what
    the source already produced is sent, then `farewell` (an event saying why), then the end of the body.
    Otherwise an open stream would hold the gateway's stop for hypercorn's whole graceful timeout. Every event
    carries its `id`, so the client resumes with `Last-Event-ID` after the restart and loses nothing.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        source: AsyncIterator[bytes],
        *,
        on_close: Callable[[], None] | None = None,
        headers: dict[str, str] | None = None,
        head: bytes | None = None,
        shutdown: trio.Event | None = None,
        farewell: bytes | None = None,
    ) -> None:
        # Not Response.__init__: it would declare `Content-Length: 0` for the empty initial body.
        self.status_code = 200
        self.background = None
        all_headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})}
        self.raw_headers = [(b"content-type", b"text/event-stream; charset=utf-8")] + [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in all_headers.items()
        ]
        self.source = source
        self.on_close = on_close
        self.head = head
        self.shutdown = shutdown
        self.farewell = farewell

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            if self.head is not None:
                await send({"type": "http.response.body", "body": self.head, "more_body": True})
            async with trio.open_nursery() as nursery:

                async def watch_disconnect() -> None:
                    while True:
                        message = await receive()
                        if message["type"] == "http.disconnect":
                            nursery.cancel_scope.cancel()
                            return

                nursery.start_soon(watch_disconnect)
                # The source runs in its own task: timing out a wait on it would cancel it for good.
                chunks_in, chunks_out = trio.open_memory_channel[bytes](16)
                pump_scope = trio.CancelScope()
                ending = False

                async def pump() -> None:
                    with pump_scope:
                        async with chunks_in:
                            async for chunk in self.source:
                                await chunks_in.send(chunk)

                async def watch_shutdown(shutdown: trio.Event) -> None:
                    nonlocal ending
                    await shutdown.wait()
                    ending = True
                    # Stopping the source closes `chunks_in`: the loop below sends what is buffered, then ends.
                    pump_scope.cancel()

                nursery.start_soon(pump)
                if self.shutdown is not None:
                    nursery.start_soon(watch_shutdown, self.shutdown)
                async with chunks_out:
                    while True:
                        chunk: bytes | None = None
                        with trio.move_on_after(KEEPALIVE):
                            try:
                                chunk = await chunks_out.receive()
                            except trio.EndOfChannel:
                                break
                        # A comment line keeps proxies and idle timers from closing a quiet stream.
                        body = chunk if chunk is not None else b": keepalive\n\n"
                        await send({"type": "http.response.body", "body": body, "more_body": True})
                if ending and self.farewell is not None:
                    await send({"type": "http.response.body", "body": self.farewell, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                nursery.cancel_scope.cancel()
        finally:
            if self.on_close is not None:
                self.on_close()
            aclose = getattr(self.source, "aclose", None)
            if aclose is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await aclose()
