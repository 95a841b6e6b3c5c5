"""`gateway status` data: lock + /health + /api/status (when present) + the identity hook, token shortened."""

from __future__ import annotations

import io
import sys
import types
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway import control
from gateway.asgi import build_app
from gateway.config import Paths
from gateway.lock import acquire
from gateway.runtime import Runtime, run
from gateway.term import Term
from tests.conftest import TOKEN, RunningGateway, make_config


async def _api_status(request: Request) -> Response:
    if request.headers.get("authorization") != f"Bearer {TOKEN}":
        return JSONResponse({"error": {"code": "UNAUTHORIZED", "message": "no"}}, status_code=401)
    return JSONResponse({"services": [{"name": "telegram", "status": "error"}, {"name": "store", "status": "ok"}]})


@pytest.fixture
def fake_identity() -> Iterator[None]:
    module = types.ModuleType("gateway.identity")

    def identity_fingerprint(paths: Paths) -> str | None:
        return "SHA256:ab12cd34"

    module.identity_fingerprint = identity_fingerprint  # type: ignore[attr-defined]
    sys.modules["gateway.identity"] = module
    yield
    del sys.modules["gateway.identity"]


async def test_status_merges_lock_health_api_status_and_identity(
    nursery: trio.Nursery, tmp_path: Path, fake_identity: None
) -> None:
    config, paths = make_config(tmp_path)

    def app(rt: Runtime) -> object:
        return build_app(rt, [Route("/api/status", _api_status)])

    rt: Runtime = await nursery.start(partial(run, config, paths, token=TOKEN, app_factory=app))
    lock = acquire(paths)  # this test process plays the gateway's part in the lock
    lock.update(url=rt.binds[0], port=int(rt.binds[0].rsplit(":", 1)[1]))
    try:
        with trio.fail_after(30):
            data = await trio.to_thread.run_sync(control.collect_status, config, paths)
    finally:
        lock.release()
        rt.shutdown.set()
    assert data["running"] and data["healthy"]
    assert data["services"] == [{"name": "telegram", "status": "error"}, {"name": "store", "status": "ok"}]
    assert data["identity"] == "SHA256:ab12cd34"
    assert data["token"] == f"{TOKEN[:4]}…{TOKEN[-4:]}"
    assert data["connections"] == 0 and data["sessions"] == 0
    term_out = io.StringIO()
    control.print_status(data, Term(term_out))
    text = term_out.getvalue()
    assert "identity:    SHA256:ab12cd34" in text and "telegram:" in text and TOKEN not in text


async def test_status_omits_services_when_api_status_is_absent(gateway: RunningGateway) -> None:
    paths, config = gateway.runtime.paths, gateway.runtime.config
    lock = acquire(paths)
    lock.update(url=gateway.base_url)
    try:
        with trio.fail_after(30):
            data = await trio.to_thread.run_sync(control.collect_status, config, paths)
    finally:
        lock.release()
    assert data["running"] and data["healthy"]
    assert "services" not in data and "note" not in data
    assert data["identity"] is None
