"""Sessions over a real server: CRUD and ownership, the SSE chat with Last-Event-ID resume, stop, messages, agent."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from tests.conftest import RunningGateway, make_config, start_gateway
from tests.gateway.rest import admin_client, error_of, register, sse_events


async def test_session_crud_and_ownership(gateway: RunningGateway) -> None:
    with trio.fail_after(30):
        admin = await register(gateway, "alice")
        bob = await register(gateway, "bob")
        carol = await register(gateway, "carol")
        r = await bob.client.post("/api/sessions", json={"title": "Bob's"})
        assert r.status_code == 201
        s = r.json()
        assert s["title"] == "Bob's" and s["status"] == "pending" and s["unread_message_count"] == 0
        sid = s["session_id"]
        assert [x["session_id"] for x in (await bob.client.get("/api/sessions")).json()["sessions"]] == [sid]
        assert (await carol.client.get("/api/sessions")).json()["sessions"] == []
        assert sid in [x["session_id"] for x in (await admin.client.get("/api/sessions")).json()["sessions"]]
        # By id or by key.
        assert (await bob.client.get(f"/api/sessions/{sid}")).json()["key"] == s["key"]
        assert (await bob.client.get(f"/api/sessions/{s['key']}")).json()["session_id"] == sid
        for method, path, body in [
            ("GET", f"/api/sessions/{sid}", None),
            ("PUT", f"/api/chat/sessions/{sid}", {"title": "mine now"}),
            ("POST", f"/api/sessions/{sid}/stop", None),
            ("POST", f"/api/sessions/{sid}/clear-unread-message-count", None),
            ("GET", f"/api/sessions/{sid}/files", None),
            ("POST", f"/api/sessions/{sid}/chat", {"message": "hi"}),
            ("DELETE", f"/api/sessions/{sid}", None),
        ]:
            r = await carol.client.request(method, path, json=body)
            assert r.status_code == 403, (method, path)
            assert error_of(r)["code"] == "SESSION_FORBIDDEN"
        assert (await admin.client.get(f"/api/sessions/{sid}")).status_code == 200
        missing = await bob.client.get("/api/sessions/nope")
        assert missing.status_code == 404 and error_of(missing)["code"] == "SESSION_NOT_FOUND"
        renamed = await bob.client.put(f"/api/chat/sessions/{sid}", json={"title": "Renamed"})
        assert renamed.json()["title"] == "Renamed"
        assert (await bob.client.put(f"/api/chat/sessions/{sid}", json={})).status_code == 422
        assert (await bob.client.post("/api/sessions", json={"channel": "Bad Channel!"})).status_code == 422
        assert (await bob.client.get(f"/api/sessions/{sid}/files")).json() == {"files": []}
        assert (await bob.client.delete(f"/api/sessions/{sid}")).status_code == 200
        assert (await bob.client.get(f"/api/sessions/{sid}")).status_code == 404
        async with httpx.AsyncClient(base_url=gateway.base_url) as anon:
            assert error_of(await anon.get("/api/sessions"))["code"] == "UNAUTHORIZED"


async def test_chat_streams_sse_with_seq_ids_and_resumes(gateway: RunningGateway) -> None:
    with trio.fail_after(30):
        user = await register(gateway, "dave")
        sid = (await user.client.post("/api/sessions", json={})).json()["session_id"]
        async with user.client.stream("POST", f"/api/sessions/{sid}/chat", json={"message": "one two three"}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            events = await sse_events(r)
        assert events[0]["event"] == "turn_accepted"
        seq_events = events[1:]
        assert [e["event"] for e in seq_events] == [
            "turn_started", "text_delta", "text_delta", "text_delta", "result", "turn_ended"
        ]  # fmt: skip
        assert [int(e["id"]) for e in seq_events] == list(range(1, 7))
        assert "".join(e["data"]["data"] for e in seq_events if e["event"] == "text_delta") == "one two three"
        assert seq_events[-2]["data"]["text"] == "one two three"

        # The client lost the stream after event 3: it re-posts with Last-Event-ID and gets the rest, once.
        headers = {"Last-Event-ID": "3"}
        async with user.client.stream("POST", f"/api/sessions/{sid}/chat", json={"message": "x"}, headers=headers) as r:
            resumed = await sse_events(r)
        assert [int(e["id"]) for e in resumed] == [4, 5, 6]
        assert resumed[-1]["data"]["state"] == "completed"
        # Nothing new after the last event: the stream ends at once, and no turn was submitted.
        async with user.client.stream(
            "POST", f"/api/sessions/{sid}/chat", json={"message": "x"}, headers={"Last-Event-ID": "6"}
        ) as r:
            assert await sse_events(r) == []
        bad = await user.client.post(
            f"/api/sessions/{sid}/chat", json={"message": "x"}, headers={"Last-Event-ID": "abc"}
        )
        assert bad.status_code == 400
        s = (await user.client.get(f"/api/sessions/{sid}")).json()
        assert s["status"] == "completed" and s["latest_message"] == "one two three" and s["unread_message_count"] == 1
        assert (await user.client.post(f"/api/sessions/{sid}/clear-unread-message-count")).status_code == 200
        assert (await user.client.get(f"/api/sessions/{sid}")).json()["unread_message_count"] == 0
        empty = await user.client.post(f"/api/sessions/{sid}/chat", json={"message": ""})
        assert empty.status_code == 422 and error_of(empty)["details"][0]["loc"] == ["body", "message"]


async def test_stop_aborts_a_running_turn(nursery: trio.Nursery, tmp_path: Path) -> None:
    gw = await start_gateway(nursery, *make_config(tmp_path, providers={"echo": {"delay_ms": 500.0}}))
    with trio.fail_after(30):
        async with admin_client(gw) as client:
            sid = (await client.post("/api/sessions", json={})).json()["session_id"]
            seen: list[str] = []
            async with client.stream("POST", f"/api/sessions/{sid}/chat", json={"message": "a b c d e f g h"}) as r:
                async for line in r.aiter_lines():
                    if line.startswith("event: "):
                        seen.append(line[7:])
                        if line == "event: text_delta":
                            running = (await client.get(f"/api/sessions/{sid}")).json()["status"]
                            assert running == "running"
                            stop = await client.post(f"/api/sessions/{sid}/stop")
                            assert stop.status_code == 200 and stop.json()["status"] == "ok"
            assert seen[-1] == "turn_ended" and seen.count("text_delta") < 8
            assert (await client.get(f"/api/sessions/{sid}")).json()["status"] == "completed"
        await gw.stop()


async def test_concurrent_streams_are_limited(nursery: trio.Nursery, tmp_path: Path) -> None:
    # Slow words keep the first stream open well past the second request, even on a loaded machine.
    config = make_config(tmp_path, limits={"max_streams": 1}, providers={"echo": {"delay_ms": 1000.0}})
    gw = await start_gateway(nursery, *config)
    with trio.fail_after(30):
        async with admin_client(gw) as client:
            sid = (await client.post("/api/sessions", json={})).json()["session_id"]
            other = (await client.post("/api/sessions", json={})).json()["session_id"]
            async with client.stream("POST", f"/api/sessions/{sid}/chat", json={"message": "a b c d"}) as r:
                async for line in r.aiter_lines():
                    if line.startswith("event: text_delta"):
                        second = await client.post(f"/api/sessions/{other}/chat", json={"message": "x"})
                        assert second.status_code == 429 and "retry-after" in second.headers
                        break
            # The slot is free again once the first stream is closed.
            async with client.stream("POST", f"/api/sessions/{other}/chat", json={"message": "y"}) as r:
                assert r.status_code == 200
                await sse_events(r)
        await gw.stop()


async def test_message_sync_agent_and_background_notification(gateway: RunningGateway) -> None:
    with trio.fail_after(30):
        async with admin_client(gateway) as client:
            # The chats of a configured connector (a webhook bot without a token: replies go nowhere).
            hook = {"secret_token": {"value": "webhook-secret-0001"}, "ingress_mode": "webhook"}
            assert (await client.put("/v1/runtime/connectors/telegram/bot", json=hook)).status_code == 201
            with gateway.runtime.notifications.subscribe() as pushed:
                r = await client.post("/api/message", json={"channel": "telegram", "chat_id": 42, "content": "ping"})
                assert r.status_code == 202 and r.json()["status"] == "ok"
                note = await pushed.receive()
            assert set(note) >= {"id", "title", "body", "read"}
            assert note["read"] is False and note["body"] == "ping" and "telegram:bot:42" in note["title"]
            r = await client.post("/api/message/sync", json={"channel": "telegram", "chat_id": "42", "content": "pong"})
            assert r.status_code == 200 and r.json()["reply"] == "pong"
            bad = await client.post("/api/message", json={"channel": "../etc", "chat_id": 1, "content": "x"})
            assert bad.status_code == 422 and error_of(bad)["details"][0]["loc"] == ["body", "channel"]
            missing = await client.post("/api/message", json={"channel": "slack", "content": "x"})
            assert missing.status_code == 422
            r = await client.post("/api/agent", json={"message": "what is 2+2"})
            # echo reports no usage: the gateway's estimate (about 4 characters a token), marked as such.
            usage = {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10, "estimated": True, "model": "echo"}
            assert r.json() == {
                "status": "ok", "reply": "what is 2+2", "session": "default", "session_id": r.json()["session_id"],
                "usage": usage,
            }  # fmt: skip
            again = await client.post("/api/agent", json={"message": "again", "session": "default"})
            assert again.json()["session_id"] == r.json()["session_id"]
            assert (await client.post("/api/agent", json={"message": "x", "session": "bad name!"})).status_code == 422
            # Deleting a live session retires its actor: the same name starts afresh, with a new id.
            old = r.json()["session_id"]
            assert (await client.delete(f"/api/sessions/{old}")).status_code == 200
            fresh = await client.post("/api/agent", json={"message": "after delete"})
            assert fresh.status_code == 200 and fresh.json()["session_id"] != old
            assert fresh.json()["reply"] == "after delete"
        await register(gateway, "root")  # the first user is the admin; erin is a plain user
        user = await register(gateway, "erin")
        # Connector chats are the admins': a user can neither post into one nor claim one's session.
        r = await user.client.post("/api/message", json={"channel": "telegram", "chat_id": 43, "content": "x"})
        assert r.status_code == 403
        claim = await user.client.post("/api/sessions", json={"channel": "telegram", "chat_id": "43"})
        assert claim.status_code == 403 and error_of(claim)["code"] == "CHANNEL_FORBIDDEN"
        # A webchat session with a chosen chat_id that another user owns is not handed over either.
        async with admin_client(gateway) as client:
            assert (await client.post("/api/sessions", json={"chat_id": "shared1"})).status_code == 201
        taken = await user.client.post("/api/sessions", json={"chat_id": "shared1"})
        assert taken.status_code == 403 and error_of(taken)["code"] == "SESSION_FORBIDDEN"
        # A user's "default" agent session is their own, not the admin's.
        mine = await user.client.post("/api/agent", json={"message": "hello"})
        assert mine.status_code == 200 and mine.json()["session_id"] != r.json().get("session_id")


async def test_resume_mid_turn_continues_live_without_gaps(nursery: trio.Nursery, tmp_path: Path) -> None:
    gw = await start_gateway(nursery, *make_config(tmp_path, providers={"echo": {"delay_ms": 300.0}}))
    with trio.fail_after(30):
        async with admin_client(gw) as client:
            sid = (await client.post("/api/sessions", json={})).json()["session_id"]
            words = "w1 w2 w3 w4 w5 w6"
            seen: list[int] = []
            async with client.stream("POST", f"/api/sessions/{sid}/chat", json={"message": words}) as r:
                async for line in r.aiter_lines():
                    if line.startswith("id: "):
                        seen.append(int(line[4:]))
                        if len(seen) == 3:
                            break  # the connection drops while the turn is still streaming
            headers = {"Last-Event-ID": str(seen[-1])}
            async with client.stream("POST", f"/api/sessions/{sid}/chat", json={"message": "x"}, headers=headers) as r:
                rest = await sse_events(r)
        ids = seen + [int(e["id"]) for e in rest]
        assert ids == list(range(1, len(ids) + 1)), "every event once, in order"
        assert rest[-1]["event"] == "turn_ended" and rest[-1]["data"]["state"] == "completed"
        text = [e["data"]["text"] for e in rest if e["event"] == "result"]
        assert text == [words]
        await gw.stop()


async def test_agent_requests_racing_a_session_delete_all_get_an_answer(nursery: trio.Nursery, tmp_path: Path) -> None:
    """Issue 13: /api/agent racing DELETE of its session raised a foreign-key IntegrityError (500) and left a request
    hanging. Each request now gets its reply (200), or a clear 502 when the delete aborted its turn."""
    config, paths = make_config(
        tmp_path, providers={"echo": {"delay_ms": 2}}, limits={"chat_per_minute": 10_000.0, "api_per_minute": 10_000.0}
    )
    gw = await start_gateway(nursery, config, paths)
    statuses: list[int] = []
    with trio.fail_after(60):
        async with admin_client(gw) as client:

            async def agent(n: int) -> None:
                r = await client.post("/api/agent", json={"message": f"m{n} a b c d", "session": "race"})
                statuses.append(r.status_code)
                assert r.status_code in (200, 502), r.text
                if r.status_code == 502:
                    assert error_of(r)["code"] == "AGENT_ERROR" and "aborted" in error_of(r)["message"]

            async def delete(session_id: str) -> None:
                r = await client.delete(f"/api/sessions/{session_id}")
                assert r.status_code in (200, 404), r.text

            for round_ in range(15):
                first = await client.post("/api/agent", json={"message": "start", "session": "race"})
                assert first.status_code == 200, first.text
                async with trio.open_nursery() as racers:
                    for n in range(4):
                        racers.start_soon(agent, round_ * 10 + n)
                    for _ in range(round_ % 4):  # the delete lands at a different point each round
                        await trio.lowlevel.checkpoint()
                    racers.start_soon(delete, first.json()["session_id"])
    assert statuses.count(200) > 0
    await gw.stop()


async def test_a_session_is_called_by_its_title_else_its_first_message(gateway: RunningGateway) -> None:
    long = "Where   does the gateway\nkeep its data, and how do I back it up before upgrading to the next version?"
    with trio.fail_after(30):
        async with admin_client(gateway) as admin:
            sid = (await admin.post("/api/sessions", json={})).json()["session_id"]
            fresh = (await admin.get(f"/api/sessions/{sid}")).json()
            assert (fresh["title"], fresh["display_title"]) == ("", "")
            for text in (long, "a second question"):
                async with admin.stream("POST", f"/api/sessions/{sid}/chat", json={"message": text}) as r:
                    await sse_events(r)
            listed = {s["session_id"]: s for s in (await admin.get("/api/sessions")).json()["sessions"]}
            shown = listed[sid]["display_title"]
            # The first message, whitespace collapsed and cut to 80 characters, not the internal key.
            assert shown == " ".join(long.split())[:79].rstrip() + "…" and len(shown) <= 80
            assert listed[sid]["title"] == "" and listed[sid]["latest_message"] == "a second question"
            renamed = await admin.put(f"/api/chat/sessions/{sid}", json={"title": "Backups"})
            assert renamed.json()["display_title"] == "Backups"
            assert (await admin.get(f"/api/sessions/{sid}")).json()["display_title"] == "Backups"
            named = (await admin.post("/api/sessions", json={"title": "Given"})).json()
            assert named["display_title"] == "Given"
