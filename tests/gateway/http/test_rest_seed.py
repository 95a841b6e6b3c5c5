"""The seeds' session and cron behaviour over a real gateway: reuse of an empty session, agentId, POST delete, the
sessions SSE stream, /api/message to a missing channel, cron toggle with a body and jobs without a target."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import trio

from tests.conftest import RunningGateway, make_config, start_gateway
from tests.gateway.agenthelpers import sse_turn
from tests.gateway.connectors.helpers import put, wait_for
from tests.gateway.http.test_shutdown_streams import events_of
from tests.gateway.rest import admin_client, error_of, register


async def test_post_sessions_reuses_your_untouched_session_and_takes_agent_id(gateway: RunningGateway) -> None:
    with trio.fail_after(30):
        await register(gateway, "root")
        bob = await register(gateway, "bob")
        carol = await register(gateway, "carol")
        first = await bob.client.post("/api/sessions", json={})
        assert first.status_code == 201, first.text
        again = await bob.client.post("/api/sessions", json={})
        assert again.status_code == 200 and again.json()["session_id"] == first.json()["session_id"]
        # Another user's empty session is never handed over; a title or a pin asks for a session of its own.
        assert (await carol.client.post("/api/sessions", json={})).json()["session_id"] != first.json()["session_id"]
        titled = await bob.client.post("/api/sessions", json={"title": "Plans"})
        assert titled.status_code == 201 and titled.json()["session_id"] != first.json()["session_id"]
        # Once used, it is no longer empty: the next {} makes a new one.
        await sse_turn(bob.client, first.json()["session_id"], "hello")
        fresh = await bob.client.post("/api/sessions", json={})
        assert fresh.status_code == 201 and fresh.json()["session_id"] != first.json()["session_id"]

        # agentId (the seed's agent is a provider here): the session runs on it, one per chat and agent.
        agent = await bob.client.post("/api/sessions", json={"agentId": "echo"})
        assert agent.status_code == 201, agent.text
        view = agent.json()
        assert view["key"].endswith(":echo") and view["provider"] == "echo" and view["effective_provider"] == "echo"
        same = await bob.client.post("/api/sessions", json={"agentId": "echo"})
        assert same.status_code == 200 and same.json()["session_id"] == view["session_id"]
        bad = await bob.client.post("/api/sessions", json={"agentId": "nope"})
        assert bad.status_code == 422 and error_of(bad)["details"][0]["loc"] == ["body", "agentId"]
        clash = await bob.client.post("/api/sessions", json={"agentId": "echo", "provider": "openai"})
        assert clash.status_code == 422 and error_of(clash)["details"][0]["loc"] == ["body", "agentId"]


async def test_post_delete_is_the_seeds_delete(gateway: RunningGateway) -> None:
    with trio.fail_after(30):
        await register(gateway, "root")
        bob = await register(gateway, "bob")
        carol = await register(gateway, "carol")
        sid = (await bob.client.post("/api/sessions", json={"title": "doomed"})).json()["session_id"]
        await sse_turn(bob.client, sid, "some history")
        refused = await carol.client.post(f"/api/sessions/{sid}/delete")
        assert refused.status_code == 403 and error_of(refused)["code"] == "SESSION_FORBIDDEN"
        gone = await bob.client.post(f"/api/sessions/{sid}/delete")
        assert gone.status_code == 200 and gone.json() == {"status": "ok"}
        missing = await bob.client.get(f"/api/sessions/{sid}")
        assert missing.status_code == 404 and error_of(missing)["code"] == "SESSION_NOT_FOUND"
        again = await bob.client.post(f"/api/sessions/{sid}/delete")
        assert again.status_code == 404 and error_of(again)["code"] == "SESSION_NOT_FOUND"


async def test_sessions_stream_sends_the_list_then_each_change(nursery: trio.Nursery, tmp_path: Path) -> None:
    gw = await start_gateway(nursery, *make_config(tmp_path, limits={"max_streams": 1}))
    with trio.fail_after(40):
        await register(gw, "root")
        bob = await register(gw, "bob")
        carol = await register(gw, "carol")
        await carol.client.post("/api/sessions", json={"title": "carol's"})
        await bob.client.post("/api/sessions", json={"title": "kept"})
        async with bob.client.stream("POST", "/api/sessions/stream") as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            events = events_of(r)

            async def titles() -> dict[str, str]:
                event = await events.__anext__()
                assert event["event"] == "sessions"
                return {s["title"]: s["status"] for s in event["data"]["sessions"]}

            assert await titles() == {"kept": "pending"}  # only bob's
            # A second stream at once is over this caller's limit (max_streams = 1).
            over = await bob.client.post("/api/sessions/stream")
            assert over.status_code == 429 and "retry-after" in over.headers
            made = (await bob.client.post("/api/sessions", json={"title": "new"})).json()["session_id"]
            assert await titles() == {"kept": "pending", "new": "pending"}
            # A turn (over /api/agent: a chat stream would take the only slot) makes a session and completes.
            assert (await bob.client.post("/api/agent", json={"message": "hi"})).status_code == 200
            while (seen := await titles()).get("") != "completed":
                pass
            assert seen == {"kept": "pending", "new": "pending", "": "completed"}
            assert (await bob.client.post(f"/api/sessions/{made}/delete")).status_code == 200
            while "new" in (seen := await titles()):
                pass
            assert seen == {"kept": "pending", "": "completed"}
        # Closing the stream gave its slot back.
        async with bob.client.stream("POST", "/api/sessions/stream") as r:
            assert r.status_code == 200
    await gw.stop()


async def test_message_to_a_channel_that_does_not_exist_is_404_and_runs_nothing(gateway: RunningGateway) -> None:
    def turns(conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT count(*) FROM turns").fetchone()[0])

    with trio.fail_after(30):
        async with admin_client(gateway) as admin:
            for body in (
                {"channel": "telegram", "chat_id": 42, "content": "ping"},
                {"channel": "telegram", "accountId": "nobot", "chat_id": 42, "content": "ping"},
                {"channel": "slack:nobot", "chat_id": "C1", "content": "ping"},
                {"channel": "webchat", "chat_id": "1", "content": "ping"},
            ):
                for path in ("/api/message", "/api/message/sync"):
                    r = await admin.post(path, json=body)
                    assert r.status_code == 404, (path, body, r.text)
                    assert error_of(r)["code"] == "CHANNEL_NOT_FOUND"
            assert (await admin.get("/api/sessions")).json()["sessions"] == []
            assert await gateway.runtime.store.call(turns) == 0
            # With two telegram connectors, `telegram` alone is ambiguous; with the name it is found.
            hook = {"secret_token": {"value": "webhook-secret-0001"}, "ingress_mode": "webhook"}
            assert (await put(admin, "telegram", "one", hook)).status_code == 201
            assert (await put(admin, "telegram", "two", hook)).status_code == 201
            r = await admin.post("/api/message", json={"channel": "telegram", "chat_id": 42, "content": "x"})
            assert r.status_code == 422 and error_of(r)["details"][0]["loc"] == ["body", "accountId"]
            r = await admin.post("/api/message", json={"channel": "telegram:two", "chat_id": 42, "content": "x"})
            assert r.status_code == 202, r.text
            assert (await admin.get(f"/api/sessions/{r.json()['session_id']}")).json()["key"] == "telegram:two:42"


async def test_cron_toggle_honours_the_body_and_a_job_without_a_target_has_its_own_session(
    gateway: RunningGateway,
) -> None:
    with trio.fail_after(30):
        await register(gateway, "root")
        bob = await register(gateway, "bob")
        r = await bob.client.post("/api/cron/create", json={"name": "tick", "interval_seconds": 3600, "prompt": "tock"})
        assert r.status_code == 201, r.text
        job = r.json()
        sid = job["session_id"]
        assert sid is not None and job["connector"] is None
        view = (await bob.client.get(f"/api/sessions/{sid}")).json()
        assert view["title"] == "Cron: tick" and view["key"] == f"cron:{job['id']}"
        toggle = f"/api/cron/{job['id']}/toggle"
        for body, enabled in [({"enabled": False}, False), ({"enabled": False}, False), (None, True),
                              ({"enabled": True}, True), ({}, False)]:  # fmt: skip
            r = await bob.client.post(toggle, json=body) if body is not None else await bob.client.post(toggle)
            assert r.json() == {"status": "ok", "enabled": enabled}, body
            listed = {j["id"]: j for j in (await bob.client.get("/api/cron")).json()["jobs"]}[job["id"]]
            assert listed["enabled"] is enabled and (listed["next_fire_at"] is not None) is enabled
        bad = await bob.client.post(toggle, json={"enabled": "no"})
        assert bad.status_code == 422 and error_of(bad)["details"][0]["loc"] == ["body", "enabled"]
        fired = await bob.client.post("/api/cron/trigger", json={"job_id": job["id"]})
        assert fired.json()["status"] == "ok" and fired.json()["session_id"] == sid

        async def answered() -> bool:
            events = (await bob.client.get(f"/api/sessions/{sid}/events")).json()["events"]
            return any(e["type"] == "result" and e["text"] == "tock" for e in events)

        await wait_for(answered)
