"""The frames every surface makes of a recorded turn are byte for byte those captured before events were typed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from actors import events as evs
from gateway.http.routes.openai_compat import ChunkStream, Delta
from storage.events import EventRow
from tests.gateway import golden_frames as golden


@pytest.fixture(scope="module")
def fixture() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(golden.FIXTURE.read_text())
    return data


def test_the_recorded_events_are_what_the_session_actor_emits_for_their_structs() -> None:
    for row in golden.recorded():
        typed = evs.typed(row)
        assert typed is not None, row
        assert evs.kind_of(typed) == row.type
        assert list(evs.payload(typed).items()) == list(row.data.items())  # same fields, same order


@pytest.mark.parametrize("name", ["ws_v1_one_by_one", "ws_v2_one_by_one", "ws_v1_batched", "ws_v2_batched"])
def test_ws_frames_are_unchanged(fixture: dict[str, Any], name: str) -> None:
    version = 1 if "v1" in name else 2
    batch = 1 if "one_by_one" in name else 256
    assert golden.ws_frames(golden.recorded(), version, batch=batch) == fixture[name]


def test_batched_deltas_are_still_coalesced(fixture: dict[str, Any]) -> None:
    frames = [json.loads(f) for f in fixture["ws_v2_batched"]]
    assert {"type": "text_delta", "data": "Hello", "seq": 3} in frames


def test_session_sse_events_are_unchanged(fixture: dict[str, Any]) -> None:
    assert golden.session_sse(golden.recorded()) == fixture["sessions_sse"]


@pytest.mark.parametrize("turn", ["t1", "t2", "t3", "t5", "t6"])
@pytest.mark.parametrize("include_usage", [False, True])
async def test_openai_stream_chunks_are_unchanged(fixture: dict[str, Any], turn: str, include_usage: bool) -> None:
    async def events() -> AsyncIterator[EventRow]:
        for row in golden.recorded():
            if row.turn_id == turn:
                yield row

    stream = ChunkStream(f"chatcmpl-{turn}", 1_700_000_000, "gateway", include_usage=include_usage)
    got = [chunk.decode() async for chunk in stream.chunks(events())]
    assert got == fixture["openai"][f"{turn}/{include_usage}"]
    assert stream.chunk(Delta(role="assistant", content="")).startswith(b'data: {"id":"chatcmpl-')
