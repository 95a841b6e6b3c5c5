"""Every session route reaches a connector's session by its key (`telegram:tg1:555`, `external:ext1:rk:team:a`)."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from tests.conftest import make_config, start_gateway
from tests.gateway.connectors.helpers import admin, put, wait_for
from tests.gateway.connectors.test_telegram import message

SHARED = "shared-token-for-key-tests-1234"


async def test_every_session_route_reaches_connector_sessions_by_key(nursery: trio.Nursery, tmp_path: Path) -> None:
    config, paths = make_config(tmp_path)
    gw = await start_gateway(nursery, config, paths)
    with trio.fail_after(40):
        async with admin(gw) as c:
            assert (await put(c, "external", "ext1", {"shared_token": {"value": SHARED}})).status_code == 201
            hook = {"secret_token": {"value": "webhook-secret-0001"}, "ingress_mode": "webhook"}
            assert (await put(c, "telegram", "tg1", hook)).status_code == 201
            async with httpx.AsyncClient(base_url=gw.base_url, timeout=30) as t:
                for n, (chat, thread) in enumerate([(555, None), (556, 7)]):
                    r = await t.post(
                        "/v1/connectors/telegram/tg1",
                        json=message(n + 1, "hi", chat=chat, thread=thread),
                        headers={"X-Telegram-Bot-Api-Secret-Token": "webhook-secret-0001"},
                    )
                    assert r.status_code == 200, r.text
                r = await t.post(
                    "/v1/connectors/external/ext1/events",
                    json={"event_id": "e1", "routing_key": "team:a", "content": "hi"},
                    headers={"Authorization": f"Bearer {SHARED}"},
                )
                assert r.status_code == 200, r.text
            by_key = {s["key"]: s for s in (await c.get("/api/sessions")).json()["sessions"]}
            assert set(by_key) == {"telegram:tg1:555", "telegram:tg1:556:7", "external:ext1:rk:team:a"}
            for key, view in by_key.items():
                sid = view["session_id"]
                got = await c.get(f"/api/sessions/{key}")
                assert got.status_code == 200 and got.json()["session_id"] == sid, (key, got.text)

                async def ended(key: str = key) -> bool:
                    events = (await c.get(f"/api/sessions/{key}/events")).json()["events"]
                    return any(e["type"] == "turn_ended" for e in events)

                await wait_for(ended)
                assert (await c.post(f"/api/sessions/{key}/stop")).json()["status"] == "ok"
                assert (await c.post(f"/api/sessions/{key}/clear-unread-message-count")).status_code == 200
                assert (await c.get(f"/api/sessions/{key}/files")).json() == {"files": []}
                renamed = await c.put(f"/api/chat/sessions/{key}", json={"title": "by key"})
                assert renamed.status_code == 200 and renamed.json()["session_id"] == sid
            # A key that is not there is a 404 whatever its shape; deletion by key works like by id.
            for missing in ("telegram:tg1:999", "telegram:tg1", "external:ext1:rk:team:b", "a:b:c:d:e:f"):
                r = await c.get(f"/api/sessions/{missing}")
                assert r.status_code == 404 and r.json()["error"]["code"] == "SESSION_NOT_FOUND", missing
            assert (await c.delete("/api/sessions/external:ext1:rk:team:a")).status_code == 200
            assert (await c.delete("/api/sessions/telegram:tg1:556:7")).status_code == 200
            left = [s["key"] for s in (await c.get("/api/sessions")).json()["sessions"]]
            assert left == ["telegram:tg1:555"]
    await gw.stop()
