"""Shared helpers for connector tests: an admin client, polling with a deadline, fake platform servers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TypeVar, cast

import httpx
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from tests.conftest import RunningGateway

T = TypeVar("T")


def admin(gw: RunningGateway) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=gw.base_url, headers={"Authorization": f"Bearer {gw.token}"}, timeout=30)


async def wait_for(fn: Callable[[], Awaitable[T | None]], *, timeout: float = 20, interval: float = 0.05) -> T:
    """Poll `fn` until it returns something truthy, failing after `timeout` seconds."""
    with trio.fail_after(timeout):
        while True:
            value = await fn()
            if value:
                return value
            await trio.sleep(interval)


async def put(client: httpx.AsyncClient, kind: str, name: str, body: dict[str, Any]) -> httpx.Response:
    return await client.put(f"/v1/runtime/connectors/{kind}/{name}", json=body)


@asynccontextmanager
async def fake_server(routes: Sequence[BaseRoute]) -> AsyncIterator[str]:
    """Serve a small Starlette app with hypercorn on 127.0.0.1:0; yield its base URL."""
    app = Starlette(routes=list(routes))
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 0.5
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(partial(serve, cast(Any, app), config, shutdown_trigger=shutdown.wait))
        try:
            yield binds[0]
        finally:
            shutdown.set()


async def connector_status(client: Any, ref: str) -> dict[str, Any]:
    """One connector's health from `GET /api/status` (the report sits in the error details on a 503)."""
    r = await client.get("/api/status")
    body = r.json()
    report = body["error"]["details"] if r.status_code == 503 else body
    services = {s["service"]: s for s in report["services"]}
    details: dict[str, Any] = services["connectors"]["details"]
    return dict(details[ref])
