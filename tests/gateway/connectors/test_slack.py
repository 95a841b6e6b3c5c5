"""Slack ingress signed with slack_sdk's SignatureVerifier, url_verification, dedupe, files, chat.postMessage."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import trio
from slack_sdk.signature import SignatureVerifier
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from storage import ingress as ingress_db
from tests.conftest import make_config, start_gateway
from tests.gateway.connectors.helpers import admin, fake_server, put, wait_for

SIGNING = "8f742231b10e8888abcd99yyyzzz85a5"
BOT = "xoxb-test-bot-token-0001"
ROUTE = "/v1/connectors/slack/team"


def signed(body: bytes, ts: str | None = None, secret: str = SIGNING) -> dict[str, str]:
    stamp = ts if ts is not None else str(int(time.time()))
    verifier = SignatureVerifier(secret)
    signature = verifier.generate_signature(timestamp=stamp, body=body)
    assert signature is not None
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature, "Content-Type": "application/json"}


def event_body(event_id: str, text: str, **event: Any) -> bytes:
    inner = {"type": "message", "channel": "C1", "user": "U1", "text": text, "ts": "1700000000.000100", **event}
    return json.dumps({"type": "event_callback", "event_id": event_id, "team_id": "T1", "event": inner}).encode()


async def test_slack_signatures_events_files_and_replies(nursery: trio.Nursery, tmp_path: Path) -> None:
    posted: list[dict[str, Any]] = []
    file_auth: list[str] = []

    async def post_message(request: Request) -> Response:
        assert request.headers["authorization"] == f"Bearer {BOT}"
        posted.append(await request.json())
        return JSONResponse({"ok": True, "ts": "1.2"})

    async def download(request: Request) -> Response:
        file_auth.append(request.headers.get("authorization", ""))
        return Response(b"file-bytes", media_type="application/octet-stream")

    routes = [Route("/api/chat.postMessage", post_message, methods=["POST"]), Route("/files/F1", download)]
    async with fake_server(routes) as slack:
        config, paths = make_config(tmp_path)
        gw = await start_gateway(nursery, config, paths)
        with trio.fail_after(40):
            async with admin(gw) as c:
                r = await put(
                    c,
                    "slack",
                    "team",
                    {
                        "bot_token": {"value": BOT},
                        "signing_secret": {"value": SIGNING},
                        "api_base_url": f"{slack}/api",
                        "include_self_output": True,
                    },
                )
                assert r.status_code == 201, r.text
            async with httpx.AsyncClient(base_url=gw.base_url, timeout=30) as s:
                # url_verification answers the challenge.
                body = json.dumps({"type": "url_verification", "challenge": "ch-123", "token": "t"}).encode()
                r = await s.post(ROUTE, content=body, headers=signed(body))
                assert r.status_code == 200 and r.json() == {"challenge": "ch-123"}
                # Bad, stale, future and non-numeric timestamps are 401, never 500.
                body = event_body("Ev1", "hello")
                now = int(time.time())
                for headers in (
                    signed(body, secret="another-secret"),
                    signed(body, ts=str(now - 301)),
                    signed(body, ts=str(now + 301)),
                    {**signed(body), "X-Slack-Request-Timestamp": "notanint"},
                    {"Content-Type": "application/json"},
                ):
                    r = await s.post(ROUTE, content=body, headers=headers)
                    assert r.status_code == 401, (headers, r.text)
                    assert r.json()["error"]["code"] == "UNAUTHORIZED"
                tampered = await s.post(ROUTE, content=body + b" ", headers=signed(body))
                assert tampered.status_code == 401
                # A good event is stored once; Slack's retries are duplicates.
                r = await s.post(ROUTE, content=body, headers=signed(body))
                assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
                sid = r.json()["session_id"]
                retry = await s.post(ROUTE, content=body, headers={**signed(body), "X-Slack-Retry-Num": "1"})
                assert retry.json() == {"ok": True, "status": "duplicate", "session_id": sid}
                # Bot-authored events are ignored.
                bot = event_body("Ev2", "from a bot", bot_id="B1")
                r = await s.post(ROUTE, content=bot, headers=signed(bot))
                assert r.status_code == 200 and "ignored" in r.json()
                # A reply in the thread lands in the same session; a new thread root gets its own.
                in_thread = event_body("Ev3", "more", ts="1700000000.000200", thread_ts="1700000000.000100")
                r = await s.post(ROUTE, content=in_thread, headers=signed(in_thread))
                assert r.json()["session_id"] == sid
                other = event_body("Ev4", "new thread", ts="1700000001.000100")
                r = await s.post(ROUTE, content=other, headers=signed(other))
                assert r.json()["session_id"] != sid
                # Inbound files are downloaded with the bot token.
                files = [{"id": "F1", "name": "notes.txt", "url_private_download": f"{slack}/files/F1"}]
                with_file = event_body("Ev5", "see file", ts="1700000002.000100", files=files)
                r = await s.post(ROUTE, content=with_file, headers=signed(with_file))
                assert r.status_code == 200, r.text
                assert file_auth == [f"Bearer {BOT}"]
                # Slack's retry of it (sent when the first answer took over 3 s) is answered without a new download.
                retry = await s.post(ROUTE, content=with_file, headers={**signed(with_file), "X-Slack-Retry-Num": "1"})
                assert retry.json()["status"] == "duplicate" and retry.json()["session_id"] == r.json()["session_id"]
                assert file_auth == [f"Bearer {BOT}"]
                saved = list((paths.workspace / "connectors" / "slack" / "team").iterdir())
                assert [p.read_bytes() for p in saved] == [b"file-bytes"]

            # The agent's answer goes back to the same channel and thread root.
            async def replies() -> list[dict[str, Any]]:
                return [p for p in posted if p["text"].startswith("hello")]

            reply = (await wait_for(replies))[0]
            assert reply["channel"] == "C1" and reply["thread_ts"] == "1700000000.000100"

        def count(conn: sqlite3.Connection) -> int:
            return ingress_db.count_events(conn, "slack/team")

        assert await gw.runtime.store.call(count) == 4
        await gw.stop()


async def test_the_bot_token_goes_only_to_slacks_file_host_and_only_for_signed_events(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """Issue 14: an event naming any `url_private_download` made the gateway send `Bearer <bot token>` there."""
    stolen: list[str] = []

    async def listener(request: Request) -> Response:
        stolen.append(request.headers.get("authorization", ""))
        return Response(b"secret file")

    async def slack_file(request: Request) -> Response:
        stolen.append(request.headers.get("authorization", ""))
        return Response(b"file-bytes")

    async with (
        fake_server([Route("/{path:path}", listener)]) as evil,
        fake_server([Route("/files/{path:path}", slack_file)]) as slack,
    ):
        config, paths = make_config(tmp_path)
        gw = await start_gateway(nursery, config, paths)
        with trio.fail_after(40):
            async with admin(gw) as c:
                signed_one = {"bot_token": {"value": BOT}, "signing_secret": {"value": SIGNING}}
                r = await put(c, "slack", "team", {**signed_one, "api_base_url": f"{slack}/api"})
                assert r.status_code == 201, r.text
                unsigned = {"bot_token": {"value": BOT}, "allow_unauthenticated_ingress": True}
                r = await put(c, "slack", "open", {**unsigned, "api_base_url": f"{slack}/api"})
                assert r.status_code == 201, r.text
            async with httpx.AsyncClient(base_url=gw.base_url, timeout=30) as s:
                # A signed event whose file lives anywhere but Slack's file host (or the configured API host).
                for i, url in enumerate(
                    [f"{evil}/grab", "https://files.slack.com.evil.example/x", "http://files.slack.com/files-pri/x"]
                ):
                    files = [{"id": f"F{i}", "name": "x.txt", "url_private_download": url}]
                    body = event_body(f"Evil{i}", "look", ts=f"17000000{i}.000100", files=files)
                    r = await s.post(ROUTE, content=body, headers=signed(body))
                    assert r.status_code == 200, r.text
                # An unsigned event (allowed on this connector) may not make the gateway fetch anything at all.
                files = [{"id": "F9", "name": "x.txt", "url_private_download": f"{slack}/files/F9"}]
                body = event_body("Open1", "look", files=files)
                r = await s.post(
                    "/v1/connectors/slack/open", content=body, headers={"Content-Type": "application/json"}
                )
                assert r.status_code == 200, r.text

            def texts(conn: sqlite3.Connection) -> list[str]:
                return [str(row[0]) for row in conn.execute("SELECT text FROM ingress_events ORDER BY id")]

            stored = await gw.runtime.store.call(texts)
        assert stolen == []
        assert len(stored) == 4 and all("file not downloaded" in t for t in stored), stored
        assert "(the event was not signed)" in stored[-1] and "(not on Slack's file host)" in stored[0]
        await gw.stop()
