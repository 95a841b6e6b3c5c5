"""A connector chat over the daily token cap: its event stays stored, no turn runs, and the chat is told so by a reply
through the outbox (the connector's sessions belong to no account: `usage.unowned_daily_token_cap`)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from storage import ingress as ingress_db
from tests.conftest import make_config, start_gateway
from tests.gateway.connectors.helpers import admin, fake_server, put, wait_for


async def test_a_connector_message_over_the_cap_is_answered_with_the_reason(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    received: list[dict[str, Any]] = []

    async def hook(request: Request) -> Response:
        received.append(await request.json())
        return JSONResponse({"ok": True})

    async with fake_server([Route("/hook", hook, methods=["POST"])]) as url:
        config, paths = make_config(tmp_path, usage={"unowned_daily_token_cap": 1})
        gw = await start_gateway(nursery, config, paths)
        try:
            with trio.fail_after(40):
                async with admin(gw) as c:
                    target = {"plugin": "http", "connector": "hooks", "address": f"{url}/hook"}
                    body = {"allow_unauthenticated_ingress": True, "default_reply_targets": [target]}
                    r = await put(c, "http", "hooks", body)
                    assert r.status_code == 201, r.text
                    event = {"binding_keys": ["k"], "content": "first words", "idempotency_key": "i1"}
                    r = await c.post("/v1/connectors/http/hooks", json=event)
                    assert r.status_code == 202, r.text
                    # Under the cap (nothing used yet): the agent answers.
                    await wait_for(partial(_found, received, "first words"))
                    event = {"binding_keys": ["k"], "content": "second words", "idempotency_key": "i2"}
                    r = await c.post("/v1/connectors/http/hooks", json=event)
                    assert r.status_code == 202 and r.json()["status"] == "accepted", r.text
                    refusal = await wait_for(partial(_found, received, "daily token cap is reached"))
                    assert "Not sent to the agent" in refusal
                    assert not any("second words" in str(d) for d in received)
                    usage = (await c.get("/api/usage", params={"user": "none"})).json()
                    assert usage["total"]["turns"] == 1
            # Both events are stored; the refused one is fed (it never runs, after a restart neither).
            assert await gw.runtime.store.call(ingress_db.count_events) == 2
            assert await gw.runtime.store.call(ingress_db.backlog) == 0
        finally:
            await gw.stop()


async def _found(received: list[dict[str, Any]], text: str) -> str | None:
    for delivery in received:
        if text in str(delivery):
            return str(delivery)
    return None
