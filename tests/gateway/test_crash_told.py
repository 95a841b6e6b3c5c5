"""A crash is told: SIGKILL a gateway process with turns streaming to a v1 and a v2 /ws client and an SSE stream,
restart it, and check every resume (`resume_from`, `Last-Event-ID`) ends the turn it was following."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx
import trio

from gateway.ws.client import connect
from tests.conftest import TOKEN
from tests.gateway.crashkit import Gateway, config_file, query, reap, spawn
from tests.gateway.rest import sse_events

LONG = " ".join(f"w{i}" for i in range(400))  # 20 s at 50 ms a word: still streaming when killed
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


async def _ws_until_deltas(gw: Gateway, chat: int, v2: bool, last: dict[str, int], started: trio.Event) -> None:
    """Start the long turn and follow it until the kill cuts the socket; remember the last seq seen."""
    try:
        async with connect(gw.base_url.replace("http://", "ws://") + "/ws", TOKEN, chat_id=chat, v2=v2) as c:
            await c.send_message(LONG)
            deltas = 0
            while True:
                frame = await c.receive()
                if isinstance(frame.get("seq"), int):
                    last[f"ws{chat}"] = frame["seq"]
                deltas += frame["type"] == "text_delta"
                if deltas == 3:
                    started.set()
    except Exception:  # the kill closes the socket under us
        return


async def _sse_until_deltas(gw: Gateway, session_id: str, last: dict[str, int], started: trio.Event) -> None:
    try:
        async with (
            httpx.AsyncClient(base_url=gw.base_url, headers=HEADERS, timeout=30) as client,
            client.stream("POST", f"/api/sessions/{session_id}/chat", json={"message": LONG}) as r,
        ):
            deltas = 0
            async for line in r.aiter_lines():
                if line.startswith("id: "):
                    last["sse"] = int(line[4:])
                if line == "event: text_delta":
                    deltas += 1
                    if deltas == 3:
                        started.set()
    except Exception:  # the kill cuts the stream
        return


async def _resume_ws(gw: Gateway, chat: int, v2: bool, after: int) -> list[dict[str, Any]]:
    """Resume from `after` and collect frames until the turn's end (v1: its `error`; v2: its `turn_ended`)."""
    frames: list[dict[str, Any]] = []
    url = gw.base_url.replace("http://", "ws://") + "/ws"
    with trio.fail_after(20):  # before the fix, a resume after a kill waited forever for the turn's end
        async with connect(url, TOKEN, chat_id=chat, v2=v2, resume_from=after) as c:
            while True:
                frames.append(await c.receive())
                if frames[-1]["type"] == ("turn_ended" if v2 else "system_status") and frames[-1].get("seq"):
                    return frames


async def test_after_sigkill_every_resume_ends_the_turn(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = config_file(tmp_path, "[providers.echo]\ndelay_ms = 50\n[ws]\nping_interval = 0\n")
    last: dict[str, int] = {}
    gw: Gateway | None = None
    try:
        with trio.fail_after(90):
            async with trio.open_nursery() as nursery:
                gw = await spawn(config, nursery, tmp_path)
                async with httpx.AsyncClient(base_url=gw.base_url, headers=HEADERS) as client:
                    r = await client.post("/api/sessions", json={"title": "sse"})
                    assert r.status_code == 201, r.text
                    sse_session = r.json()["session_id"]
                streaming = [trio.Event() for _ in range(3)]
                async with trio.open_nursery() as clients:
                    clients.start_soon(_ws_until_deltas, gw, 1, False, last, streaming[0])
                    clients.start_soon(_ws_until_deltas, gw, 2, True, last, streaming[1])
                    clients.start_soon(_sse_until_deltas, gw, sse_session, last, streaming[2])
                    for event in streaming:
                        await event.wait()
                    gw.process.send_signal(signal.SIGKILL)
                await gw.process.wait()
                assert len(query(data / "gateway.db", "SELECT id FROM turns WHERE state = 'running'")) == 3

                gw = await spawn(config, nursery, tmp_path)
                v1 = await _resume_ws(gw, 1, False, last["ws1"])
                error = next(f for f in v1 if f["type"] == "error")
                assert error["code"] == "interrupted" and "send the message again" in error["message"]
                assert v1[-1]["data"] == "interrupted"
                v2 = await _resume_ws(gw, 2, True, last["ws2"])
                assert [f["code"] for f in v2 if f["type"] == "error"] == ["interrupted"]
                assert v2[-1]["state"] == "interrupted" and v2[-1]["seq"] > last["ws2"]
                async with (
                    httpx.AsyncClient(base_url=gw.base_url, headers=HEADERS, timeout=30) as client,
                    client.stream(
                        "POST",
                        f"/api/sessions/{sse_session}/chat",
                        json={"message": "unused when resuming"},
                        headers={"Last-Event-ID": str(last["sse"])},
                    ) as r,
                ):
                    assert r.status_code == 200
                    events = await sse_events(r)  # the stream ends by itself once the turn has ended
                assert [e["event"] for e in events] == ["error", "turn_ended"], events
                assert events[0]["data"]["code"] == "INTERRUPTED" and events[1]["data"]["state"] == "interrupted"
                assert int(events[0]["id"]) > last["sse"]
                nursery.cancel_scope.cancel()
    finally:
        await reap(gw)
