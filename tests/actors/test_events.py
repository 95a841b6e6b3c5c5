"""Session events as tagged structs: every kind round-trips; the turn outcome registry forgets ended turns."""

from __future__ import annotations

import msgspec
import pytest

from actors import events as evs
from storage import messages as msg_db
from storage.events import EventRow

USAGE = evs.TurnUsage(12, 5, 17, False, "m-1")

ONE_OF_EACH: list[evs.SessionEvent] = [
    evs.TurnStarted("t1", "hello"),
    evs.TextDelta("Hel"),
    evs.ToolActivity("Bash"),
    evs.SystemStatus("thinking"),
    evs.SystemStatus(None),
    evs.Result("Hello", stream_fallback=True, files=[{"path": "/a.png", "name": "a.png", "is_image": True}]),
    evs.Result("Hello", usage=USAGE),
    evs.Error("AGENT_ERROR", "RuntimeError: boom"),
    evs.TurnEnded("t1", "completed", usage=USAGE),
    evs.TurnEnded("t2", "aborted", started=False),
]


def test_every_kind_is_covered() -> None:
    assert {type(e) for e in ONE_OF_EACH} == set(evs.KINDS)


@pytest.mark.parametrize("event", ONE_OF_EACH, ids=lambda e: evs.kind_of(e))
def test_each_kind_round_trips_through_the_tagged_union(event: evs.SessionEvent) -> None:
    raw = evs.encode(event)
    assert msgspec.json.decode(raw)["type"] == evs.kind_of(event)  # `type` carries the tag
    assert raw.startswith(b'{"type":"' + evs.kind_of(event).encode())
    assert evs.decode(raw) == event
    # What storage keeps (the payload, as CBOR/JSON-able builtins) reads back as the same struct.
    row = EventRow("s", 1, "t1", evs.kind_of(event), evs.payload(event), 0)
    assert "type" not in row.data
    assert evs.typed(row) == event


def test_unset_fields_stay_off_the_payload() -> None:
    assert evs.payload(evs.TurnEnded("t", "failed")) == {"turn_id": "t", "state": "failed"}
    assert evs.payload(evs.Result("x")) == {"text": "x", "stream_fallback": False, "files": []}
    assert list(evs.payload(evs.TurnEnded("t", "aborted", started=False, usage=USAGE))) == [
        "turn_id",
        "state",
        "started",
        "usage",
    ]


def test_an_unknown_or_malformed_row_is_not_typed() -> None:
    assert evs.typed(EventRow("s", 1, None, "from_the_future", {"x": 1}, 0)) is None
    assert evs.typed(EventRow("s", 1, None, "text_delta", {"data": 3}, 0)) is None


def test_the_end_storage_writes_for_an_interrupted_turn_is_typed() -> None:
    rows = msg_db.interrupted_events("s", "t9", 4, now_ms=0)
    assert [evs.typed(r) for r in rows] == [
        evs.Error("INTERRUPTED", msg_db.INTERRUPTED_MESSAGE),
        evs.TurnEnded("t9", "interrupted"),
    ]


def _turn(outcomes: evs.TurnOutcomes, turn: str, seq: int, *ending: evs.SessionEvent) -> evs.TurnOutcome | None:
    got = None
    for i, event in enumerate(ending):
        got = outcomes.on_event(EventRow("s", seq + i, turn, evs.kind_of(event), evs.payload(event), 0))
    return got


def test_the_outcome_of_each_kind_of_end() -> None:
    outcomes = evs.TurnOutcomes()
    done = _turn(outcomes, "a", 1, evs.TextDelta("x"), evs.Result("hi", usage=USAGE), evs.TurnEnded("a", "completed"))
    assert done == evs.TurnOutcome("s", "a", "completed", "hi", None, None)
    failed = _turn(outcomes, "b", 5, evs.Error("AGENT_ERROR", "boom"), evs.TurnEnded("b", "failed", usage=USAGE))
    assert failed == evs.TurnOutcome("s", "b", "failed", "", "boom", USAGE)
    assert _turn(outcomes, "c", 9, evs.TurnEnded("c", "aborted", started=False)) == evs.TurnOutcome("s", "c", "aborted")
    assert outcomes.get("a") == done and outcomes.get("b") == failed
    assert outcomes.get("never") is None


def test_an_ended_turn_is_forgotten_once_newer_ones_take_its_place() -> None:
    outcomes = evs.TurnOutcomes(keep=2)
    for n in range(5):
        _turn(outcomes, f"t{n}", n * 10, evs.Result(f"r{n}"), evs.TurnEnded(f"t{n}", "completed"))
    assert outcomes.get("t0") is None and outcomes.get("t2") is None
    assert [outcomes.get(t).text for t in ("t3", "t4")] == ["r3", "r4"]  # type: ignore[union-attr]
    assert len(outcomes) == 2  # nothing else held: results were all claimed by their turn's end


def test_a_result_whose_end_never_comes_is_bounded_too() -> None:
    outcomes = evs.TurnOutcomes(keep=3)
    for n in range(10):
        _turn(outcomes, f"t{n}", n, evs.Result("orphan"))
    assert len(outcomes) == 3
