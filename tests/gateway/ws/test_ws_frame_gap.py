"""`/ws` while a turn streams: the first delta goes at once, the burst behind it leaves joined (FRAME_GAP)."""

from __future__ import annotations

import pytest

from gateway.ws import connection
from gateway.ws.identity import identity_fingerprint
from tests.conftest import RunningGateway
from tests.gateway.wshelpers import client, deltas, merged, until

WORDS = " ".join(f"w{i}" for i in range(60))


@pytest.fixture
def long_gap(monkeypatch: pytest.MonkeyPatch) -> None:
    # A gap far longer than the echo provider needs for 60 words, so the frames it cuts are not a matter of timing.
    monkeypatch.setattr(connection, "FRAME_GAP", 2.0)


def delta_frames(frames: list[dict[str, object]]) -> list[str]:
    return [str(f["data"]) for f in frames if f["type"] == "text_delta"]


@pytest.mark.usefixtures("long_gap")
async def test_v1_first_delta_alone_then_the_burst_joined(gateway: RunningGateway) -> None:
    async with client(gateway, chat_id=21) as c:
        await c.send_message(WORDS)
        frames = await until(c, "result")
    sent = delta_frames(frames)
    # The first delta leaves at once (with the few the provider added while the sender was being scheduled; held
    # for the gap it would carry all 60), the rest of the burst waits out the gap and leaves as one frame, or two
    # if the provider outlasted a gap.
    assert len(sent[0].split()) < 20, sent[:3]
    assert 2 <= len(sent) <= 3, [len(s.split()) for s in sent]
    assert deltas(frames) == WORDS and frames[-1]["text"] == WORDS
    seqs = [f["seq"] for f in merged(frames)]
    assert seqs == sorted(seqs)


@pytest.mark.usefixtures("long_gap")
async def test_v2_turn_started_frame_does_not_hold_the_first_delta(gateway: RunningGateway) -> None:
    pin = identity_fingerprint(gateway.runtime.paths)
    async with client(gateway, v2=True, pin=pin, chat_id=22) as c:
        await c.send_message(WORDS)
        frames = await until(c, "turn_ended")
    assert frames[0]["type"] == "turn_started"
    sent = delta_frames(frames)
    # The gap follows delta frames only: sending turn_started lets the provider add a few words (a scheduling
    # round per await of the send path), but a first delta held for the gap would carry all 60.
    assert len(sent[0].split()) < 20, sent[:3]
    assert len(sent) <= 3 and deltas(frames) == WORDS
