"""`gateway status` data: lock + /health + /api/status (when present) + the identity hook, token shortened."""

from __future__ import annotations

import io
from functools import partial
from pathlib import Path

import msgspec
import trio

from gateway.core import Runtime
from gateway.daemon import control
from gateway.daemon.lock import acquire
from gateway.daemon.term import Term
from gateway.runtime import run
from gateway.ws.identity import identity_fingerprint
from tests.conftest import TOKEN, RunningGateway, make_config


async def test_status_merges_lock_health_api_status_and_identity(nursery: trio.Nursery, tmp_path: Path) -> None:
    config, paths = make_config(tmp_path, connectors={"http": {"hooks": {"allow_unauthenticated_ingress": True}}})
    rt: Runtime = await nursery.start(partial(run, config, paths, token=TOKEN))
    lock = acquire(paths)  # this test process plays the gateway's part in the lock
    lock.update(url=rt.binds[0], port=int(rt.binds[0].rsplit(":", 1)[1]))
    try:
        with trio.fail_after(30):
            data = await trio.to_thread.run_sync(control.collect_status, config, paths)
    finally:
        lock.release()
        rt.shutdown.set()
    assert data["running"] and data["healthy"]
    services = {s["service"]: s["status"] for s in data["services"]}
    assert services == {
        "storage": "ok",
        "scheduler": "ok",
        "disk": "ok",
        "connectors": "ok",
        "mcp": "ok",
        "sessions": "ok",
        "actors": "ok",
    }
    assert data["identity"] == identity_fingerprint(paths)
    assert data["token"] == f"{TOKEN[:4]}…{TOKEN[-4:]}"
    assert data["connections"] == 0 and data["sessions"] == 0
    term_out = io.StringIO()
    control.print_status(data, Term(term_out))
    text = term_out.getvalue()
    assert f"identity:    {data['identity']}" in text and "connectors:" in text and TOKEN not in text
    # Connector health, one line per connector.
    connectors = next(s for s in data["services"] if s["service"] == "connectors")["details"]
    assert connectors["http/hooks"]["state"] == "running"
    assert "    http/hooks:" in text and "running" in text.split("http/hooks:", 1)[1].splitlines()[0]


async def test_status_says_when_the_token_is_not_the_gateways(gateway: RunningGateway) -> None:
    paths, config = gateway.runtime.paths, gateway.runtime.config
    other = msgspec.structs.replace(config, server=msgspec.structs.replace(config.server, token="x" * 32))
    lock = acquire(paths)
    lock.update(url=gateway.base_url)
    try:
        with trio.fail_after(30):
            data = await trio.to_thread.run_sync(control.collect_status, other, paths)
    finally:
        lock.release()
    assert data["running"] and data["healthy"]
    assert "services" not in data
    assert "the gateway refuses the token file's token" in data["note"]
