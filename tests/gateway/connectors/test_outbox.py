"""The reply outbox: final output reaches the session's reply targets, failing targets retry, then dead-letter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.conftest import make_config, start_gateway
from tests.gateway.connectors.helpers import admin, fake_server, put, wait_for


async def test_outbox_retries_then_delivers_and_dead_letters(nursery: trio.Nursery, tmp_path: Path) -> None:
    received: list[dict[str, Any]] = []
    keys: list[str] = []
    attempts = {"flaky": 0, "broken": 0}

    async def flaky(request: Request) -> Response:
        attempts["flaky"] += 1
        keys.append(request.headers.get("idempotency-key", ""))
        if attempts["flaky"] <= 2:
            return JSONResponse({"error": "try later"}, status_code=503)
        received.append(await request.json())
        return JSONResponse({"ok": True})

    async def broken(request: Request) -> Response:
        attempts["broken"] += 1
        return JSONResponse({"error": "down"}, status_code=500)

    async with fake_server(
        [Route("/flaky", flaky, methods=["POST"]), Route("/broken", broken, methods=["POST"])]
    ) as url:
        config, paths = make_config(tmp_path, outbox={"backoff": 0.2, "max_attempts": 4, "max_backoff": 0.8})
        gw = await start_gateway(nursery, config, paths)
        with trio.fail_after(40):
            async with admin(gw) as c:
                r = await put(
                    c,
                    "http",
                    "hooks",
                    {
                        "allow_unauthenticated_ingress": True,
                        "default_reply_targets": [
                            {"plugin": "http", "connector": "hooks", "address": f"{url}/flaky"},
                            {"plugin": "http", "connector": "hooks", "address": {"url": f"{url}/broken"}},
                        ],
                    },
                )
                assert r.status_code == 201, r.text
                r = await c.post(
                    "/v1/connectors/http/hooks",
                    json={"binding_keys": ["k"], "content": "hi there", "idempotency_key": "i1"},
                )
                assert r.status_code == 202, r.text
                sid = r.json()["session_id"]
                targets = (await c.get(f"/v1/sessions/{sid}/reply-targets")).json()["reply_targets"]
                assert [t["address"] for t in targets] == [f"{url}/flaky", {"url": f"{url}/broken"}]

                async def delivered() -> bool:
                    return bool(received)

                await wait_for(delivered)
                assert received[0]["text"] == "hi there" and received[0]["session_id"] == sid
                # Every attempt of one delivery carries the same idempotency key.
                assert len(set(keys)) == 1 and keys[0] == received[0]["delivery_id"]

                async def dead() -> list[dict[str, Any]]:
                    r = await c.get("/v1/runtime/outbox", params={"state": "dead_letter"})
                    return list(r.json()["deliveries"])

                rows = await wait_for(dead)
                assert rows[0]["attempts"] == 4 and "HTTP 500" in rows[0]["last_error"]
                # Exactly max_attempts, whatever the machine's speed; the backoff between them is checked on a
                # virtual clock in tests/actors/test_outbox.py.
                assert attempts["broken"] == 4
                ok = (await c.get("/v1/runtime/outbox", params={"state": "delivered"})).json()["deliveries"]
                assert len(ok) == 1 and ok[0]["attempts"] == 3
                # A dead letter can be retried by hand.
                retry = await c.post(f"/v1/runtime/outbox/{rows[0]['delivery_id']}/retry")
                assert retry.status_code == 200

                async def retried() -> bool:
                    return attempts["broken"] > 4

                await wait_for(retried)
                assert (await c.get("/v1/runtime/outbox", params={"state": "bogus"})).status_code == 422
                assert (await c.post("/v1/runtime/outbox/nope/retry")).status_code == 404
        await gw.stop()


async def test_a_sender_cannot_make_the_gateway_post_to_a_private_address(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """Issue 14: an unauthenticated http connector let anyone have the gateway POST to any URL via reply targets."""
    hits: list[str] = []

    async def listener(request: Request) -> Response:
        hits.append(request.url.path)
        return JSONResponse({"ok": True})

    async with fake_server([Route("/{path:path}", listener, methods=["POST"])]) as url:
        config, paths = make_config(tmp_path, outbox={"backoff": 0.05, "max_attempts": 2})
        gw = await start_gateway(nursery, config, paths)
        with trio.fail_after(40):
            async with admin(gw) as c:
                owner_target = {"plugin": "http", "connector": "open", "address": f"{url}/owner"}
                r = await put(c, "http", "open", {"allow_unauthenticated_ingress": True})
                assert r.status_code == 201, r.text
                port = url.rsplit(":", 1)[1]
                # No credentials at all: the sender names where the reply goes (loopback, by name and by address).
                for i, target in enumerate([f"{url}/attack", f"http://localhost:{port}/attack", f"{url}/x"]):
                    body: dict[str, Any] = {"binding_keys": [f"k{i}"], "content": "hi", "idempotency_key": f"i{i}"}
                    if i < 2:
                        body["reply_targets"] = [{"plugin": "http", "connector": "open", "address": target}]
                    else:  # the reply_plugin/reply_address form
                        body |= {"reply_plugin": "http", "reply_address": target}
                    r = await c.post("/v1/connectors/http/open", json=body)
                    assert r.status_code == 202, r.text

                async def dead() -> list[dict[str, Any]]:
                    r = await c.get("/v1/runtime/outbox", params={"state": "dead_letter"})
                    rows = list(r.json()["deliveries"])
                    return rows if len(rows) == 3 else []

                rows = await wait_for(dead)
                # Refused without a retry: the address stays refused.
                assert all(d["attempts"] == 1 and "refused by the outbound policy" in d["last_error"] for d in rows)
                assert hits == []
                # The same address named by the owner (the reply-targets route takes the gateway token) is delivered.
                sid = rows[0]["session_id"]
                r = await c.put(f"/v1/sessions/{sid}/reply-targets", json={"reply_targets": [owner_target]})
                assert r.status_code == 200 and r.json()["reply_targets"] == [owner_target], r.text
                r = await c.post(
                    "/v1/connectors/http/open",
                    json={"session_id": sid, "content": "again", "idempotency_key": "i9"},
                )
                assert r.status_code == 202, r.text

                async def owner_hit() -> bool:
                    return hits == ["/owner"]

                await wait_for(owner_hit)
        await gw.stop()
