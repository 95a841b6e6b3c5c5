"""Helpers for the `/ws` tests: connecting real trio-websocket clients and reading frames with bounds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from gateway.ws.client import Client, connect
from tests.conftest import RunningGateway


def url(gw: RunningGateway) -> str:
    return gw.ws_url + "/ws"


@asynccontextmanager
async def client(gw: RunningGateway, **kw: Any) -> AsyncIterator[Client]:
    async with connect(url(gw), gw.token, **kw) as c:
        yield c


@asynccontextmanager
async def raw(gw: RunningGateway) -> AsyncIterator[WebSocketConnection]:
    async with open_websocket_url(url(gw)) as ws:
        yield ws


async def plain(ws: WebSocketConnection) -> dict[str, Any]:
    obj: dict[str, Any] = msgspec.json.decode(await ws.get_message())
    return obj


async def until(c: Client, kind: str, *, timeout: float = 20) -> list[dict[str, Any]]:
    """Frames up to and including the first one of type `kind`."""
    out: list[dict[str, Any]] = []
    with trio.fail_after(timeout):
        while True:
            frame = await c.receive()
            out.append(frame)
            if frame["type"] == kind:
                return out


def deltas(frames: list[dict[str, Any]]) -> str:
    return "".join(f["data"] for f in frames if f["type"] == "text_delta")


def merged(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`frames` with consecutive text_deltas joined into one (the last one's seq), as the server may send them:
    it coalesces the deltas waiting for a connection, so frame boundaries depend on timing, not the text."""
    out: list[dict[str, Any]] = []
    for f in frames:
        if f["type"] == "text_delta" and out and out[-1]["type"] == "text_delta":
            out[-1] = {**out[-1], "data": out[-1]["data"] + f["data"], "seq": f["seq"]}
        else:
            out.append(f)
    return out
