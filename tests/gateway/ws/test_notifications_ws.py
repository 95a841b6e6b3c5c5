"""End to end: a notification made by a cron run arrives encrypted on every authenticated /ws connection."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import msgspec
import trio

from gateway.ws.client import Client
from tests.conftest import RunningGateway, make_config, start_gateway
from tests.fakes.openai_server import FakeOpenAI, Script
from tests.gateway.agenthelpers import use_fake_openai
from tests.gateway.connectors.helpers import wait_for
from tests.gateway.rest import admin_client
from tests.gateway.wshelpers import client


async def next_notification(c: Client) -> tuple[dict[str, object], str | bytes]:
    """The next notification frame, decrypted, with the raw frame as it crossed the wire."""
    while True:
        raw = await c.ws.get_message()
        obj: dict[str, object] = msgspec.json.decode(c.channel.open(raw))
        if obj["type"] == "notification":
            return obj, raw


async def test_a_cron_run_notifies_every_ws_client_encrypted(gateway: RunningGateway) -> None:
    with trio.fail_after(30):
        async with admin_client(gateway) as http, client(gateway) as a, client(gateway, chat_id=9) as b:
            sid = (await http.post("/api/sessions", json={})).json()["session_id"]
            job = await http.post(
                "/api/cron/create",
                json={"name": "digest", "interval_seconds": 3600, "session_id": sid, "prompt": "daily digest"},
            )
            assert job.status_code == 201, job.text
            fired = await http.post("/api/cron/trigger", json={"job_id": job.json()["id"]})
            assert fired.status_code == 200
            got_a, wire = await next_notification(a)
            got_b, _ = await next_notification(b)
            listed = (await http.get("/api/notifications", params={"unread_only": "true"})).json()
    note = got_a["notification"]
    assert got_a == got_b
    assert isinstance(note, dict)
    assert note["title"] == "Cron digest: completed" and note["body"] == "daily digest" and note["read"] is False
    # On the wire it is base64 of nonce ‖ box, not JSON: nothing of the text is visible.
    assert isinstance(wire, str) and b"digest" not in base64.b64decode(wire) and "digest" not in wire
    assert note["id"] in [n["id"] for n in listed["notifications"]]


async def test_connector_and_webhook_turns_that_fail_notify_ws_clients(nursery: trio.Nursery, tmp_path: Path) -> None:
    fake = FakeOpenAI()
    fake_base = await fake.start(nursery)
    gateway = await start_gateway(nursery, *make_config(tmp_path, providers={"openai": {"max_retries": 0}}))
    secret = {"X-Telegram-Bot-Api-Secret-Token": "webhook-secret-0001"}

    def update(n: int, text: str) -> dict[str, object]:
        return {"update_id": n, "message": {"message_id": n, "chat": {"id": 555}, "text": text}}

    with trio.fail_after(30):
        async with (
            admin_client(gateway) as http,
            client(gateway) as ws,
            httpx.AsyncClient(base_url=gateway.base_url, timeout=30) as outside,
        ):
            hook = {"secret_token": {"value": "webhook-secret-0001"}, "ingress_mode": "webhook"}
            assert (await http.put("/v1/runtime/connectors/telegram/tg1", json=hook)).status_code == 201
            body = {"allow_unauthenticated_ingress": True, "default_binding_keys": ["orders"]}
            assert (await http.put("/v1/runtime/connectors/http/hooks", json=body)).status_code == 201
            # A completed turn is answered in its chat (the outbox): no notification.
            r = await outside.post("/v1/connectors/telegram/tg1", json=update(1, "fine"), headers=secret)
            sid = r.json()["session_id"]

            async def ended(n: int) -> bool:
                events = (await http.get(f"/api/sessions/{sid}/events")).json()["events"]
                return len([e for e in events if e["type"] == "turn_ended"]) == n

            await wait_for(lambda: ended(1))
            # The model refuses every turn from now on: the chat gets no reply, so the gateway's users are told.
            fake.scripts.extend(Script(status=400, error="model refused") for _ in range(3))
            await use_fake_openai(http, fake_base)
            await outside.post("/v1/connectors/telegram/tg1", json=update(2, "broken"), headers=secret)
            got, _ = await next_notification(ws)
            note = got["notification"]
            assert isinstance(note, dict)
            assert note["title"] == "Reply in telegram:tg1:555: failed" and "model refused" in str(note["body"])
            # The same chat failing again within the minute is not told twice; the webhook's failure is.
            await outside.post("/v1/connectors/telegram/tg1", json=update(3, "broken again"), headers=secret)
            await wait_for(lambda: ended(3))
            r = await outside.post("/v1/connectors/http/hooks", json={"content": "order 42 shipped"})
            assert r.status_code == 202, r.text
            got, _ = await next_notification(ws)
            note = got["notification"]
            assert isinstance(note, dict) and note["title"] == "Reply in http:hooks:bind:orders: failed"
            listed = (await http.get("/api/notifications")).json()["notifications"]
            assert [(n["title"], n["source"]) for n in listed] == [
                ("Reply in http:hooks:bind:orders: failed", "webhook"),
                ("Reply in telegram:tg1:555: failed", "connector"),
            ]
    await gateway.stop()
