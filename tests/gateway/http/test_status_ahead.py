"""`GET /api/status` answered ahead of the Starlette app (`gateway.http.front.LazyApp`) is the app's own answer:
the same status, headers and body for every caller, credential, limit and failure, side by side with the Starlette
app of the same running gateway served on its own port."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from gateway.http.asgi import build_app
from tests.conftest import TOKEN, RunningGateway, make_config, start_gateway
from tests.gateway.rest import error_of, register

PATH = "/api/status"


@asynccontextmanager
async def starlette_app_of(gw: RunningGateway) -> AsyncIterator[str]:
    """The gateway's Starlette app (`build_app`, on the same runtime) served on a port of its own; its base URL."""
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    stop = trio.Event()
    asgi: Any = build_app(gw.runtime)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve, asgi, config, shutdown_trigger=stop.wait))
        try:
            yield binds[0]
        finally:
            stop.set()


def _without_uptime(body: Any) -> Any:
    """The body without what moves between two answers a few milliseconds apart: the uptime, the free space on the
    data folder's disk (the suite's other workers write to the same tmpfs meanwhile) and actors' backlogs."""
    if isinstance(body, dict):
        if body.get("service") == "disk" and isinstance(body.get("details"), str):
            return {**body, "details": re.sub(r"\d+", "N", body["details"])}
        return {k: _without_uptime(v) for k, v in body.items() if k not in ("uptime", "backlog")}
    if isinstance(body, list):
        return [_without_uptime(v) for v in body]
    return body


def shape(r: httpx.Response, *, waits: bool = True) -> tuple[int, list[tuple[str, str]], Any]:
    """What a client sees of an answer, but its date, server name and length (the uptime's digits vary); with
    `waits=False`, a 429's seconds to wait too (two answers a moment apart may round them differently)."""
    skip = {"date", "server", "content-length"} | (set() if waits else {"retry-after"})
    headers = [(k, v) for k, v in r.headers.multi_items() if k not in skip]
    body = _without_uptime(r.json()) if r.content else None
    if not waits and body is not None:
        body["error"].pop("details", None)
        body["error"]["message"] = body["error"]["message"].rstrip(" s0123456789")
    return r.status_code, headers, body


async def both(ahead: str, app: str, method: str = "GET", **kwargs: Any) -> tuple[httpx.Response, httpx.Response]:
    """The same request to the gateway (answered ahead of the app) and to its Starlette app, one after the other."""
    async with httpx.AsyncClient(timeout=30) as client:
        first = await client.request(method, ahead + PATH, **kwargs)
        second = await client.request(method, app + PATH, **kwargs)
    return first, second


async def test_every_caller_gets_the_apps_own_answer(gateway: RunningGateway) -> None:
    with trio.fail_after(60):
        admin = await register(gateway, "root", role="super_admin")
        plain = await register(gateway, "pleb", role="user")
        async with starlette_app_of(gateway) as app:
            cases: list[tuple[str, dict[str, Any]]] = [
                ("GET", {}),  # no credential
                ("GET", {"headers": {"Authorization": "Basic dXNlcjpwdw=="}}),
                ("GET", {"headers": {"Authorization": "Bearer not-the-token"}}),  # a guess: counted
                ("GET", {"headers": {"Authorization": "Bearer a.b.c"}}),  # a forged JWT: counted
                ("GET", {"headers": {"authorization": f"bearer {TOKEN}"}}),  # any case, as Starlette reads them
                ("GET", {"headers": {"Authorization": f"Bearer {plain.access}"}}),  # a user: 403
                ("GET", {"headers": {"Authorization": f"Bearer {admin.access}"}}),  # an admin account
                ("GET", {"headers": {"Authorization": f"Bearer {TOKEN}"}, "params": {"verbose": "1"}}),
                ("HEAD", {"headers": {"Authorization": f"Bearer {TOKEN}"}}),  # served by the app in both
                ("POST", {"headers": {"Authorization": f"Bearer {TOKEN}"}}),  # 405
                ("GET", {"headers": {"Authorization": f"Bearer {TOKEN}"}, "content": b"{}"}),  # a body: the app's
            ]
            statuses = []
            for method, kwargs in cases:
                ahead, own = await both(gateway.base_url, app, method, **kwargs)
                assert shape(ahead) == shape(own), (method, kwargs)
                statuses.append(ahead.status_code)
            assert statuses == [401, 401, 401, 401, 200, 403, 200, 200, 200, 405, 200]
            # A service in error: 503 with the report in the error's details.
            gateway.runtime.status_checks["broken"] = lambda: {"status": "error", "details": "it broke"}
            ahead, own = await both(gateway.base_url, app, headers={"Authorization": f"Bearer {TOKEN}"})
            assert ahead.status_code == 503 and shape(ahead) == shape(own)
            assert error_of(ahead)["code"] == "SERVICE_UNAVAILABLE"
            # Failed authentications from one address are throttled the same way (the free ones were used above).
            guess: dict[str, Any] = {"headers": {"Authorization": "Bearer still-not-it"}}
            async with httpx.AsyncClient(timeout=30) as client:
                for _ in range(6):
                    await client.get(gateway.base_url + PATH, **guess)
            ahead, own = await both(gateway.base_url, app, **guess)
            assert ahead.status_code == 429 and shape(ahead, waits=False) == shape(own, waits=False)
            assert 1 <= int(ahead.headers["retry-after"]) <= int(own.headers["retry-after"]) + 1
        await admin.client.aclose()
        await plain.client.aclose()


async def test_the_api_rate_limit_applies_ahead_of_the_app(nursery: trio.Nursery, tmp_path: Path) -> None:
    gw = await start_gateway(nursery, *make_config(tmp_path, limits={"api_per_minute": 1, "api_burst": 2}))
    token: dict[str, Any] = {"headers": {"Authorization": f"Bearer {TOKEN}"}}
    with trio.fail_after(60):
        async with starlette_app_of(gw) as app:
            ahead, own = await both(gw.base_url, app, **token)  # the two requests the burst allows
            assert ahead.status_code == own.status_code == 200
            ahead, own = await both(gw.base_url, app, **token)
            assert ahead.status_code == 429 and shape(ahead, waits=False) == shape(own, waits=False)
            assert error_of(ahead)["code"] == "RATE_LIMITED" and 1 <= int(ahead.headers["retry-after"]) <= 60
        await gw.stop()
