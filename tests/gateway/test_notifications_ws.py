"""End to end: a notification made by a cron run arrives encrypted on every authenticated /ws connection."""

from __future__ import annotations

import base64

import msgspec
import trio

from gateway.client import Client
from tests.conftest import RunningGateway
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
