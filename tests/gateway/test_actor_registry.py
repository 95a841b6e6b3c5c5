"""The registry of live actors (issue 2): awake sessions and /ws connection actors are listed, and leave it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from actors.messages import SessionKey
from tests.conftest import make_config, start_gateway
from tests.gateway.connectors.helpers import wait_for
from tests.gateway.rest import admin_client
from tests.gateway.wshelpers import client, until


def _actors(status: dict[str, Any]) -> dict[str, Any]:
    services = {s["service"]: s for s in status["services"]}
    details: dict[str, Any] = services["actors"]["details"]
    return details


async def test_sessions_and_connections_are_listed_while_live(nursery: trio.Nursery, tmp_path: Path) -> None:
    # Kept live while its client listens (the default parks it 0.25 s after a turn): this lists live actors.
    config, paths = make_config(tmp_path, sessions={"idle_timeout": 0.5, "subscribed_idle_timeout": 60})
    gw = await start_gateway(nursery, config, paths)
    registry = gw.runtime.registry
    key = SessionKey("api", "77")
    with trio.fail_after(30):
        async with client(gw, chat_id=77) as c:
            await c.send({"type": "message", "text": "hello there"})
            await until(c, "result")
            stats = registry.statistics()
            session = stats[f"session:{key}"]
            assert session["state"] == "running" and session["restarts"] == 0 and session["last_error"] is None
            assert isinstance(session["backlog"], int)
            conns = [s for name, s in stats.items() if name.startswith("connection:") and name.endswith(f":{key}")]
            assert len(conns) == 1 and conns[0]["state"] == "running" and conns[0]["backlog"] == 0
            # The same facts over the API, for the operator.
            async with admin_client(gw) as http:
                actors = _actors((await http.get("/api/status")).json())
            assert actors["live"]["session"] == 1 and actors["live"]["connection"] == 1
            assert f"session:{key}" in [a["name"] for a in actors["actors"]]

        async def connection_gone() -> bool:
            return not any(name.startswith("connection:") for name in registry.statistics())

        # The client left: its connection actor is no longer listed.
        await wait_for(connection_gone)
        # Idle with no subscriber: the session hibernates to storage and leaves the registry too.

        async def hibernated() -> bool:
            return f"session:{key}" not in registry.statistics() and gw.runtime.router.address_of(key) is None

        await wait_for(hibernated)
        assert registry.count("session:") == 0 and registry.count("connection:") == 0
        # The next message wakes it, listed again.
        async with client(gw, chat_id=77) as c:
            await c.send({"type": "message", "text": "again"})
            await until(c, "result")
            assert registry.statistics()[f"session:{key}"]["state"] == "running"
        await gw.stop()
