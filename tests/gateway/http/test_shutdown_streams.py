"""Long-lived HTTP responses end promptly at shutdown: the SSE chat (resumable) and streamed OpenAI completions."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.conftest import RunningGateway, make_config, start_gateway
from tests.gateway.rest import admin_client, sse_events

# Far longer than any bound below: a stream that holds the stop would make the test fail, not just slow it.
GRACEFUL = 30.0
SLOW_WORDS = {"echo": {"delay_ms": 400.0}}
WORDS = " ".join(f"w{i}" for i in range(40))  # 16 s of streaming at 400 ms a word


async def events_of(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Yield SSE events as they arrive: {"id"?, "event"?, "retry"?, "data"} (data JSON-decoded)."""
    current: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if line == "":
            if current:
                yield current
                current = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(": ")
            current[field] = json.loads(value) if field == "data" else value


async def stop_soon(gw: RunningGateway, stopped: trio.Event) -> None:
    await gw.stop()
    stopped.set()


async def test_sse_chat_ends_at_shutdown_and_resumes_after_restart(nursery: trio.Nursery, tmp_path: Path) -> None:
    config, paths = make_config(tmp_path, server={"graceful_timeout": GRACEFUL}, providers=SLOW_WORDS)
    gw = await start_gateway(nursery, config, paths)
    seen: list[dict[str, Any]] = []
    stopped = trio.Event()
    with trio.fail_after(20):
        async with admin_client(gw) as client:
            sid = (await client.post("/api/sessions", json={})).json()["session_id"]
            async with client.stream("POST", f"/api/sessions/{sid}/chat", json={"message": WORDS}) as r:
                assert r.status_code == 200
                with trio.fail_after(8):  # far below the graceful timeout: the stream must not hold the stop
                    async for event in events_of(r):
                        seen.append(event)
                        if event.get("event") == "text_delta" and len(seen) == 4:
                            nursery.start_soon(stop_soon, gw, stopped)
                    await stopped.wait()
    # The stream ended cleanly, with an event saying why and when to come back, not by a cut connection.
    farewell = seen[-1]
    assert farewell["event"] == "shutdown" and farewell["data"]["type"] == "shutdown" and "retry" in farewell
    assert "turn_ended" not in [e.get("event") for e in seen], "the turn was still streaming"
    before = [int(e["id"]) for e in seen if "id" in e]
    assert before, "events with ids were streamed before the shutdown"

    gw = await start_gateway(nursery, config, paths)
    with trio.fail_after(20):
        async with admin_client(gw) as client:
            headers = {"Last-Event-ID": str(before[-1])}
            async with client.stream("POST", f"/api/sessions/{sid}/chat", json={"message": "x"}, headers=headers) as r:
                assert r.status_code == 200
                rest = await sse_events(r)
        await gw.stop()
    ids = before + [int(e["id"]) for e in rest]
    assert ids == list(range(1, len(ids) + 1)), "every event once, in order, across the restart"
    assert rest[-1]["event"] == "turn_ended" and rest[-1]["data"]["state"] == "interrupted"


async def test_openai_stream_ends_at_shutdown_without_done(nursery: trio.Nursery, tmp_path: Path) -> None:
    config, paths = make_config(tmp_path, server={"graceful_timeout": GRACEFUL}, providers=SLOW_WORDS)
    gw = await start_gateway(nursery, config, paths)
    chunks: list[Any] = []
    stopped = trio.Event()
    body = {"model": "echo", "stream": True, "messages": [{"role": "user", "content": WORDS}]}
    with trio.fail_after(20):
        async with admin_client(gw) as client, client.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            with trio.fail_after(8):
                async for event in events_of(r):
                    chunks.append(event["data"])
                    if len(chunks) == 3:
                        nursery.start_soon(stop_soon, gw, stopped)
                await stopped.wait()
    assert chunks[0]["object"] == "chat.completion.chunk"
    # An OpenAI client must not take the cut-short answer for a whole one: an error, and no [DONE].
    assert chunks[-1] == {"error": {"code": "SHUTTING_DOWN", "message": chunks[-1]["error"]["message"]}}
    assert "[DONE]" not in chunks
