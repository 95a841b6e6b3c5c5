"""`GET /api/notifications/stream` over a real server: pushed as made, only the caller's, resumed with Last-Event-ID."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import trio

from tests.conftest import RunningGateway
from tests.gateway.connectors.helpers import wait_for
from tests.gateway.rest import User, admin_client, error_of, register

STREAM = "/api/notifications/stream"


async def events_of(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Each SSE event as it arrives: {"id"?, "event", "data"} (data JSON-decoded); comments skipped."""
    current: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if line == "":
            if current:
                yield current
                current = {}
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(": ")
        current[field] = json.loads(value) if field == "data" else value


async def cron_run(user: User, name: str) -> None:
    """Make a notification the way the gateway does: the user's cron job runs (its end is told)."""
    sid = (await user.client.post("/api/sessions", json={})).json()["session_id"]
    job = await user.client.post(
        "/api/cron/create", json={"name": name, "interval_seconds": 3600, "session_id": sid, "prompt": name}
    )
    assert job.status_code == 201, job.text
    fired = await user.client.post("/api/cron/trigger", json={"job_id": job.json()["id"]})
    assert fired.status_code == 200, fired.text


async def next_note(events: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    async for ev in events:
        if ev["event"] == "notification":
            assert ev["id"] == ev["data"]["notification"]["id"]
            return ev
    raise AssertionError("the stream ended")


async def test_a_cron_run_is_pushed_to_its_owner_only_and_admins_see_all(gateway: RunningGateway) -> None:
    await register(gateway, "root")
    bob = await register(gateway, "bob")
    carol = await register(gateway, "carol")
    with trio.fail_after(30):
        async with (
            bob.client.stream("GET", STREAM) as bob_stream,
            carol.client.stream("GET", STREAM) as carol_stream,
            admin_client(gateway) as admin,
            admin.stream("GET", STREAM) as admin_stream,
        ):
            assert bob_stream.status_code == 200
            assert bob_stream.headers["content-type"].startswith("text/event-stream")
            bob_events, carol_events = events_of(bob_stream), events_of(carol_stream)
            admin_events = events_of(admin_stream)
            for events in (bob_events, carol_events, admin_events):
                ready = await anext(events)
                assert ready["event"] == "ready" and len(ready["id"]) == 32
            await cron_run(carol, "carols digest")
            first_for_carol = await next_note(carol_events)  # stored (and published) before bob's run begins
            await cron_run(bob, "bobs digest")
            got = await next_note(bob_events)
            admin_saw = [await next_note(admin_events), await next_note(admin_events)]
    note = got["data"]["notification"]
    assert note["title"] == "Cron bobs digest: completed" and note["read"] is False and note["source"] == "cron"
    # Carol's own run reached her; the first notification on bob's stream was his, although carol's was made first.
    assert first_for_carol["data"]["notification"]["title"] == "Cron carols digest: completed"
    assert sorted(e["data"]["notification"]["title"] for e in admin_saw) == [
        "Cron bobs digest: completed",
        "Cron carols digest: completed",
    ]
    listed = (await bob.client.get("/api/notifications")).json()["notifications"]
    assert [n["id"] for n in listed] == [note["id"]]


async def test_last_event_id_sends_what_was_missed_then_follows_live(gateway: RunningGateway) -> None:
    bob = await register(gateway, "bob")
    with trio.fail_after(30):
        async with bob.client.stream("GET", STREAM) as first:
            ready = await anext(events_of(first))
        cursor = ready["id"]
        # Made while bob had no stream open.
        await cron_run(bob, "one")
        await cron_run(bob, "two")

        async def two_stored() -> bool:
            return len((await bob.client.get("/api/notifications")).json()["notifications"]) == 2

        await wait_for(two_stored)
        async with bob.client.stream("GET", STREAM, headers={"Last-Event-ID": cursor}) as again:
            events = events_of(again)
            missed = [await next_note(events), await next_note(events)]
            await cron_run(bob, "three")
            live = await next_note(events)
        # Resuming after the last one received sends only what came after it.
        async with bob.client.stream("GET", STREAM, headers={"Last-Event-ID": missed[0]["id"]}) as third:
            events = events_of(third)
            after_first = [await next_note(events), await next_note(events)]
    titles = [e["data"]["notification"]["title"] for e in missed]
    assert sorted(titles) == ["Cron one: completed", "Cron two: completed"]
    assert missed[0]["id"] < missed[1]["id"], "oldest first"
    assert live["data"]["notification"]["title"] == "Cron three: completed"
    assert [e["id"] for e in after_first] == [missed[1]["id"], live["id"]]


async def test_a_bad_last_event_id_is_400_and_streams_have_their_own_cap(gateway: RunningGateway) -> None:
    bob = await register(gateway, "bob")
    with trio.fail_after(30):
        r = await bob.client.get(STREAM, headers={"Last-Event-ID": "../../etc"})
        assert r.status_code == 400
        assert "Last-Event-ID" in error_of(r)["message"]
        async with httpx.AsyncClient(base_url=gateway.base_url) as anon:
            assert (await anon.get(STREAM)).status_code == 401
        # Each open stream holds one of the caller's `limits.max_streams` (4) slots, counted apart from the chat
        # streams': four tabs following their notifications leave the chat its own four.
        async with (
            bob.client.stream("GET", STREAM),
            bob.client.stream("GET", STREAM),
            bob.client.stream("GET", STREAM),
            bob.client.stream("GET", STREAM),
        ):
            r = await bob.client.get(STREAM)
            assert r.status_code == 429 and error_of(r)["code"] == "RATE_LIMITED"
            sid = (await bob.client.post("/api/sessions", json={})).json()["session_id"]
            async with bob.client.stream("POST", f"/api/sessions/{sid}/chat", json={"message": "hi"}) as chat:
                assert chat.status_code == 200
                await chat.aread()
