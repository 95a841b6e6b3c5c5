"""What `info` shows: each HTTP request (no query, no token), cron firings, user and connector lifecycle."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import trio

from tests.conftest import TOKEN, make_config, start_gateway
from tests.gateway.agenthelpers import logging_to
from tests.gateway.rest import admin_client, register

SECRET_QUERY = "query-token-that-must-not-be-logged"


async def test_info_logs_requests_cron_users_and_connectors(nursery: trio.Nursery, tmp_path: Path) -> None:
    with logging_to(tmp_path / "gateway.log", min_level="info") as log_file, trio.fail_after(40):
        gw = await start_gateway(nursery, *make_config(tmp_path))
        try:
            await register(gw, "root")
            bob = await register(gw, "bob")
            async with admin_client(gw) as admin:
                assert (await admin.get("/api/sessions", params={"token": SECRET_QUERY})).status_code == 200
                assert (await admin.get("/api/sessions/nope")).status_code == 404
                sid = (await bob.client.post("/api/sessions", json={})).json()["session_id"]
                job = (await bob.client.post(
                    "/api/cron/create", json={"name": "digest", "interval_seconds": 3600, "session_id": sid,
                                              "prompt": "p"})).json()  # fmt: skip
                assert (await bob.client.post("/api/cron/trigger", json={"job_id": job["id"]})).status_code == 200
                assert (await admin.put(f"/api/admin/users/{bob.id}/status", json={"status": "banned"})).is_success
                assert (await admin.delete(f"/api/admin/users/{bob.id}")).is_success
                hook = {"secret_token": {"value": "webhook-secret-0001"}, "ingress_mode": "webhook"}
                assert (await admin.put("/v1/runtime/connectors/telegram/tg1", json=hook)).status_code == 201
                assert (await admin.delete("/v1/runtime/connectors/telegram/tg1")).status_code == 204
        finally:
            await gw.stop()
    text = log_file.read_text()  # after the block: closing the file's handler wrote every queued line
    assert re.search(r"info +gateway\.access: GET /api/sessions 200 \d+\.\dms", text), text
    assert re.search(r"gateway\.access: GET /api/sessions/nope 404 ", text)
    assert re.search(r"gateway\.access: POST /api/admin/users 201 ", text)
    assert SECRET_QUERY not in text and TOKEN not in text and bob.access not in text and "?" not in text
    assert re.search(rf"info +gateway\.cron: cron job {job['id']} \(digest\) fired \(manual\): turn \w+", text)
    assert re.search(rf"info +gateway\.users: user {bob.id} \(bob\) created as user, by the gateway token", text)
    assert f"user {bob.id} (bob) status active -> banned, by the gateway token" in text
    assert f"user {bob.id} (bob) deleted, by the gateway token" in text
    assert re.search(r"info +gateway\.connectors: connector telegram/tg1 started \(daemon\)", text)
    assert "connector telegram/tg1 stopped" in text


async def test_the_request_log_can_be_turned_off(nursery: trio.Nursery, tmp_path: Path) -> None:
    with logging_to(tmp_path / "gateway.log", min_level="info") as log_file, trio.fail_after(30):
        gw = await start_gateway(nursery, *make_config(tmp_path, log={"access": False}))
        try:
            async with httpx.AsyncClient(base_url=gw.base_url) as anon:
                assert (await anon.get("/health")).status_code == 200
        finally:
            await gw.stop()
    text = log_file.read_text()
    assert "listening on" in text and "gateway.access" not in text
