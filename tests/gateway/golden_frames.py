"""A recorded turn's session events and the frames every surface made of them; `python -m` writes the fixture.

The fixture (data/event_frames.json) was captured from main before session events became typed structs: the
frames must stay byte for byte what they were.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import trio

from storage.events import EventRow

FIXTURE = Path(__file__).parent / "data" / "event_frames.json"
SID = "s-golden"
USAGE = {"input_tokens": 12, "output_tokens": 5, "total_tokens": 17, "estimated": False, "model": "m-1"}
GUESS = {"input_tokens": 3, "output_tokens": 0, "total_tokens": 3, "estimated": True, "model": ""}

_RAW: list[tuple[str | None, str, dict[str, Any]]] = [
    ("t1", "turn_started", {"turn_id": "t1", "text": "hello <file:/tmp/in.txt>"}),
    ("t1", "text_delta", {"data": "Hel"}),
    ("t1", "text_delta", {"data": "lo"}),
    ("t1", "tool_activity", {"data": "Bash"}),
    ("t1", "system_status", {"data": "thinking"}),
    ("t1", "text_delta", {"data": " see <file:/tmp/a.png>"}),
    ("t1", "text_delta", {"data": " é\u2028"}),
    (
        "t1",
        "result",
        {"text": "Hello see <file:/tmp/a.png> é\u2028", "stream_fallback": False, "files": [], "usage": USAGE},
    ),
    ("t1", "turn_ended", {"turn_id": "t1", "state": "completed", "usage": USAGE}),
    ("t2", "turn_started", {"turn_id": "t2", "text": "again"}),
    ("t2", "error", {"code": "AGENT_ERROR", "message": "RuntimeError: boom"}),
    ("t2", "turn_ended", {"turn_id": "t2", "state": "failed"}),
    ("t3", "turn_started", {"turn_id": "t3", "text": "long"}),
    ("t3", "text_delta", {"data": "par"}),
    ("t3", "error", {"code": "INTERRUPTED", "message": "the gateway stopped during this turn"}),
    ("t3", "turn_ended", {"turn_id": "t3", "state": "interrupted", "usage": GUESS}),
    ("t4", "turn_ended", {"turn_id": "t4", "state": "aborted", "started": False}),
    ("t5", "turn_started", {"turn_id": "t5", "text": "stop me"}),
    ("t5", "turn_ended", {"turn_id": "t5", "state": "aborted"}),
    ("t6", "turn_started", {"turn_id": "t6", "text": "whole"}),
    ("t6", "result", {"text": "all at once", "stream_fallback": True, "files": []}),
    ("t6", "turn_ended", {"turn_id": "t6", "state": "completed"}),
]


def recorded() -> list[EventRow]:
    """The recorded turns' events, numbered from 1."""
    return [EventRow(SID, i, turn, t, dict(d), 1_700_000_000_000 + i) for i, (turn, t, d) in enumerate(_RAW, 1)]


class _Wire:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    async def send_frame(self, frame: Any) -> None:
        self.frames.append(frame)


class _Plain:
    def seal_frame(self, plaintext: bytes) -> bytes:
        return plaintext


class _Auth:
    def __init__(self, version: int) -> None:
        self.version = version
        self.channel = _Plain()


def ws_frames(events: list[EventRow], version: int, *, batch: int) -> list[str]:
    """The plaintext frames a /ws client of `version` gets, the events delivered `batch` at a time."""
    from gateway.ws.connection import Connection

    conn = Connection.__new__(Connection)
    conn.wire = _Wire()  # type: ignore[assignment]
    conn.auth = _Auth(version)  # type: ignore[assignment]
    conn._lock = trio.Lock()
    conn._own_turns = set()
    conn.last_seq = 0

    async def main() -> None:
        for start in range(0, len(events), batch):
            await conn._deliver(events[start : start + batch])

    trio.run(main)
    return [f.decode() for f in conn.wire.frames]  # type: ignore[attr-defined]


def session_sse(events: list[EventRow]) -> list[str]:
    """`POST /api/sessions/{id}/messages` and the resume stream: one SSE event per session event."""
    from gateway.http.routes.sessions import event_payload
    from gateway.http.sse import sse_event

    return [sse_event(event_payload(e), event=e.type, id=e.seq).decode() for e in events]


def openai_stream(events: list[EventRow], turn_id: str, *, include_usage: bool) -> list[str]:
    """`/v1/chat/completions` with `stream`: the chunks one turn's events become (main's code, as captured)."""
    import msgspec

    from gateway.http.routes.openai_compat import Chunk, ChunkChoice, Delta, Usage
    from gateway.http.sse import sse_event

    cid, created, model = f"chatcmpl-{turn_id}", 1_700_000_000, "gateway"

    def chunk(delta: Delta, finish: str | None = None) -> bytes:
        body = Chunk(
            id=cid,
            created=created,
            model=model,
            choices=[ChunkChoice(index=0, delta=delta, finish_reason=finish)],
            usage=None if include_usage else msgspec.UNSET,
        )
        return sse_event(body)

    out: list[bytes] = []
    streamed = False
    ended: dict[str, Any] | None = None
    for event in events:
        if event.turn_id != turn_id:
            continue
        if event.type == "text_delta":
            streamed = True
            out.append(chunk(Delta(content=str(event.data.get("data", "")))))
        elif event.type == "result" and not streamed:
            out.append(chunk(Delta(content=str(event.data.get("text", "")))))
        elif event.type == "error":
            out.append(sse_event({"error": {"code": "AGENT_ERROR", "message": str(event.data.get("message", ""))}}))
        elif event.type == "turn_ended":
            ended = event.data
            out.append(chunk(Delta(), "stop" if event.data.get("state") == "completed" else "error"))
    if include_usage and ended is not None:
        got = ended.get("usage") or {}
        tokens_in, tokens_out = int(got.get("input_tokens", 0)), int(got.get("output_tokens", 0))
        usage = Usage(prompt_tokens=tokens_in, completion_tokens=tokens_out, total_tokens=tokens_in + tokens_out)
        out.append(sse_event(Chunk(id=cid, created=created, model=model, choices=[], usage=usage)))
    out.append(sse_event("[DONE]"))
    return [b.decode() for b in out]


def capture() -> dict[str, Any]:
    events = recorded()
    return {
        "ws_v1_one_by_one": ws_frames(events, 1, batch=1),
        "ws_v2_one_by_one": ws_frames(events, 2, batch=1),
        "ws_v1_batched": ws_frames(events, 1, batch=256),
        "ws_v2_batched": ws_frames(events, 2, batch=256),
        "sessions_sse": session_sse(events),
        "openai": {
            f"{turn}/{usage}": openai_stream(events, turn, include_usage=usage)
            for turn in ("t1", "t2", "t3", "t5", "t6")
            for usage in (False, True)
        },
    }


if __name__ == "__main__":
    FIXTURE.write_text(json.dumps(capture(), indent=1, ensure_ascii=False) + "\n")
    sys.stdout.write(f"wrote {FIXTURE}\n")
