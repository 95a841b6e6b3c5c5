"""Telegram: a fake Bot API on loopback for polling (with failures), webhooks, file downloads and sendMessage."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from storage import ingress as ingress_db
from tests.conftest import make_config, start_gateway
from tests.gateway.connectors.helpers import admin, connector_status, fake_server, put, wait_for

BOT = "123456:telegram-test-token"
SECRET = "webhook-secret_token-1"


class FakeBotApi:
    """Just enough of the Bot API, in its real wire format."""

    def __init__(self) -> None:
        self.updates: list[dict[str, Any]] = []
        self.offsets: list[int] = []
        self.sent: list[dict[str, Any]] = []
        self.downloads: list[str] = []
        self.fail_next = 2  # the first getUpdates calls fail, so the poller must restart
        # Answer the next getUpdates with every update, whatever its offset: what Telegram does when the
        # offset confirming them never reached it (the gateway died before it polled again).
        self.replay_once = False
        self.changed = trio.Event()

    def routes(self) -> list[Route]:
        return [
            Route("/bot{token}/{method}", self.method, methods=["POST"]),
            Route("/file/bot{token}/{path:path}", self.file),
        ]

    async def method(self, request: Request) -> Response:
        if request.path_params["token"] != BOT:
            return JSONResponse({"ok": False, "error_code": 401, "description": "Unauthorized"}, status_code=401)
        body = await request.json()
        name = request.path_params["method"]
        if name == "getUpdates":
            if self.fail_next > 0:
                self.fail_next -= 1
                return JSONResponse({"ok": False, "error_code": 502, "description": "Bad Gateway"}, status_code=502)
            offset = int(body.get("offset", 0))
            self.offsets.append(offset)
            if self.replay_once:
                self.replay_once = False
                return JSONResponse({"ok": True, "result": list(self.updates)})
            with trio.move_on_after(min(float(body.get("timeout", 0)), 0.5)):
                while not [u for u in self.updates if u["update_id"] >= offset]:
                    await self.changed.wait()
            return JSONResponse({"ok": True, "result": [u for u in self.updates if u["update_id"] >= offset]})
        if name == "getFile":
            return JSONResponse(
                {"ok": True, "result": {"file_id": body["file_id"], "file_path": f"docs/{body['file_id']}"}}
            )
        if name == "sendMessage":
            self.sent.append(body)
            return JSONResponse({"ok": True, "result": {"message_id": len(self.sent)}})
        return JSONResponse({"ok": False, "description": "Not Found"}, status_code=404)

    async def file(self, request: Request) -> Response:
        if request.path_params["token"] != BOT:
            return Response(status_code=401)
        self.downloads.append(request.path_params["path"])
        return Response(b"content of " + request.path_params["path"].encode())

    def push(self, update: dict[str, Any]) -> None:
        self.updates.append(update)
        self.changed.set()
        self.changed = trio.Event()


def message(update_id: int, text: str, chat: int = 42, thread: int | None = None, **more: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {"message_id": update_id, "chat": {"id": chat, "type": "supergroup"}, "text": text, **more}
    msg["from"] = {"id": 7, "is_bot": False, "first_name": "A"}
    if thread is not None:
        msg["message_thread_id"] = thread
        msg["is_topic_message"] = True
    return {"update_id": update_id, "message": msg}


async def test_polling_files_offsets_restarts_and_send_message(nursery: trio.Nursery, tmp_path: Path) -> None:
    api = FakeBotApi()
    async with fake_server(api.routes()) as base:
        config, paths = make_config(tmp_path)
        gw = await start_gateway(nursery, config, paths)
        store = gw.runtime.store
        with trio.fail_after(60):
            api.push(message(100, "hello", thread=5))
            api.push(message(101, "a photo", photo=[{"file_id": "small"}, {"file_id": "big"}], thread=5))
            api.push(message(102, "", document={"file_id": "doc1", "file_name": "r.pdf"}, chat=43))
            async with admin(gw) as c:
                r = await put(
                    c,
                    "telegram",
                    "poll",
                    {
                        "bot_token": {"value": BOT},
                        "ingress_mode": "polling",
                        "polling_timeout_seconds": 1,
                        "api_base_url": base,
                        "include_self_output": True,
                    },
                )
                assert r.status_code == 201, r.text

                def count(conn: sqlite3.Connection) -> int:
                    return ingress_db.count_events(conn, "telegram/poll")

                async def stored() -> bool:
                    return await store.call(count) == 3

                await wait_for(stored, timeout=30)
                assert await store.call(ingress_db.poll_offset, "telegram/poll") == 103

                def texts(conn: sqlite3.Connection) -> list[tuple[str, str]]:
                    return conn.execute("SELECT event_key, text FROM ingress_events ORDER BY id").fetchall()

                rows = dict(await store.call(texts))
                assert rows["100"] == "hello"
                assert "big" in rows["101"] and "small" not in rows["101"]
                folder = paths.workspace / "connectors" / "telegram" / "poll"
                assert sorted(p.read_bytes() for p in folder.iterdir()) == [
                    b"content of docs/big",
                    b"content of docs/doc1",
                ]
                # The failing getUpdates calls restarted the poller; status shows it.
                st = await connector_status(c, "telegram/poll")
                assert st["restarts"] >= 1 and st["state"] == "running"

                # Replies go back to the chat and topic through sendMessage.
                async def sent() -> list[dict[str, Any]]:
                    return [m for m in api.sent if m["text"].startswith("hello")]

                reply = (await wait_for(sent))[0]
                assert reply["chat_id"] == 42 and reply["message_thread_id"] == 5
        await gw.stop()

        # A new gateway on the same data polls from the saved offset; updates Telegram sends again
        # (as after a crash before the offset reached it) are recognised by update_id and stored once.
        api.offsets.clear()
        api.replay_once = True
        api.push(message(103, "after the restart"))
        gw = await start_gateway(nursery, config, paths)
        store = gw.runtime.store
        with trio.fail_after(60):

            async def four() -> bool:
                return await store.call(count) == 4

            await wait_for(four, timeout=30)
            assert api.offsets[0] == 103, api.offsets
            assert sorted(dict(await store.call(texts))) == ["100", "101", "102", "103"]
            assert await store.call(ingress_db.poll_offset, "telegram/poll") == 104
            assert sorted(api.downloads) == ["docs/big", "docs/doc1"], "re-sent updates download nothing again"
        await gw.stop()


async def test_webhook_secret_dedupe_and_sessions(nursery: trio.Nursery, tmp_path: Path) -> None:
    config, paths = make_config(tmp_path)
    gw = await start_gateway(nursery, config, paths)
    with trio.fail_after(30):
        async with admin(gw) as c:
            r = await put(c, "telegram", "hook", {"secret_token": {"value": SECRET}, "ingress_mode": "webhook"})
            assert r.status_code == 201, r.text
        url = "/v1/connectors/telegram/hook"
        good = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
        async with httpx.AsyncClient(base_url=gw.base_url, timeout=30) as t:
            assert (await t.post(url, json=message(1, "x"))).status_code == 401
            bad = await t.post(url, json=message(1, "x"), headers={"X-Telegram-Bot-Api-Secret-Token": "nope"})
            assert bad.status_code == 401
            r1 = await t.post(url, json=message(1, "x", thread=9), headers=good)
            assert r1.status_code == 200 and r1.json()["status"] == "accepted"
            r2 = await t.post(url, json=message(1, "x", thread=9), headers=good)
            assert r2.json()["status"] == "duplicate" and r2.json()["session_id"] == r1.json()["session_id"]
            r3 = await t.post(url, json=message(2, "y", thread=9), headers=good)
            assert r3.json()["session_id"] == r1.json()["session_id"]
            r4 = await t.post(url, json=message(3, "z", thread=10), headers=good)
            assert r4.json()["session_id"] != r1.json()["session_id"]
            assert (await t.post(url, content=b"nope", headers=good)).status_code == 400
            assert (await t.post(url, json={"message": {}}, headers=good)).status_code == 400

            # Concurrent deliveries of one update store one row.
            async def send() -> None:
                r = await t.post(url, json=message(50, "burst"), headers=good)
                assert r.status_code == 200

            async with trio.open_nursery() as n:
                for _ in range(10):
                    n.start_soon(send)

    def count(conn: sqlite3.Connection) -> int:
        return ingress_db.count_events(conn, "telegram/hook")

    assert await gw.runtime.store.call(count) == 4
    await gw.stop()


async def test_api_message_to_a_telegram_chat_replies_through_send_message(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    api = FakeBotApi()
    async with fake_server(api.routes()) as base:
        config, paths = make_config(tmp_path)
        gw = await start_gateway(nursery, config, paths)
        with trio.fail_after(40):
            async with admin(gw) as c:
                body = {"bot_token": {"value": BOT}, "secret_token": {"value": SECRET}, "api_base_url": base}
                assert (await put(c, "telegram", "bot", body)).status_code == 201
                # A chat the bot has never heard from: the agent's reply still goes to it, through the connector.
                r = await c.post(
                    "/api/message",
                    json={"channel": "telegram", "accountId": "bot", "chat_id": 77, "topic_id": "3", "content": "hi"},
                )
                assert r.status_code == 202, r.text
                sid = r.json()["session_id"]

                async def sent() -> list[dict[str, Any]]:
                    return [m for m in api.sent if m["text"] == "hi"]

                assert (await wait_for(sent)) == [{"chat_id": 77, "text": "hi", "message_thread_id": 3}]
                targets = (await c.get(f"/v1/sessions/{sid}/reply-targets")).json()["reply_targets"]
                assert targets == [
                    {"plugin": "telegram", "connector": "bot", "address": {"chat_id": 77, "message_thread_id": 3}}
                ]
                # A cron job for another chat of the connector replies there too.
                job = await c.post(
                    "/api/cron/create",
                    json={
                        "prompt": "daily ping",
                        "interval_seconds": 3600,
                        "connector": "telegram:bot",
                        "chat_id": "78",
                    },
                )
                assert job.status_code == 201, job.text
                assert (await c.post("/api/cron/trigger", json={"job_id": job.json()["id"]})).status_code == 200

                async def pinged() -> list[dict[str, Any]]:
                    return [m for m in api.sent if m["text"] == "daily ping"]

                assert (await wait_for(pinged)) == [{"chat_id": 78, "text": "daily ping"}]
                # Targets chosen over the API are kept: the next message does not reset them.
                assert (await c.put(f"/v1/sessions/{sid}/reply-targets", json={"reply_targets": []})).is_success
                r = await c.post(
                    "/api/message/sync",
                    json={"channel": "telegram:bot", "chat_id": "77", "topic_id": "3", "content": "quiet"},
                )
                assert r.status_code == 200 and r.json()["session_id"] == sid
                assert (await c.get(f"/v1/sessions/{sid}/reply-targets")).json()["reply_targets"] == []
        await gw.stop()


async def test_a_poller_that_keeps_failing_puts_status_in_error(nursery: trio.Nursery, tmp_path: Path) -> None:
    api = FakeBotApi()
    async with fake_server(api.routes()) as base:
        config, paths = make_config(tmp_path)
        gw = await start_gateway(nursery, config, paths)
        with trio.fail_after(40):
            async with admin(gw) as c:
                # A revoked bot token: every getUpdates is a 401, so the poller crashes and backs off, again and again.
                body = {"bot_token": {"value": "999:revoked"}, "ingress_mode": "polling", "api_base_url": base}
                assert (await put(c, "telegram", "dead", body)).status_code == 201

                async def in_error() -> dict[str, Any] | None:
                    r = await c.get("/api/status")
                    return r.json() if r.status_code == 503 else None

                down = await wait_for(in_error, timeout=30, interval=0.2)
                services = {s["service"]: s for s in down["error"]["details"]["services"]}
                assert services["connectors"]["status"] == "error"
                dead = services["connectors"]["details"]["telegram/dead"]
                assert dead["state"] in ("restarting", "failed") and dead["restarts"] >= 1
                assert "getUpdates: HTTP 401" in dead["last_error"] and "999:revoked" not in str(down)
        await gw.stop()
