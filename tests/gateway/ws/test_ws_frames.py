"""Pure mapping of session events to `/ws` frames, and `<file:…>` tags (no sockets)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway.ws.connection import event_frame
from gateway.ws.filetags import parse_file_tags
from storage.events import EventRow


def ev(type_: str, data: dict[str, Any], seq: int = 7) -> EventRow:
    return EventRow("s", seq, "t1", type_, data, 0)


def test_v1_gets_only_known_types() -> None:
    assert event_frame(ev("text_delta", {"data": "hi"}), 1) == {"type": "text_delta", "data": "hi", "seq": 7}
    assert event_frame(ev("turn_started", {"turn_id": "t1", "text": "x"}), 1) is None
    assert event_frame(ev("turn_ended", {"turn_id": "t1", "state": "completed"}), 1) is None
    assert event_frame(ev("turn_ended", {"turn_id": "t1", "state": "aborted"}), 1) == {
        "type": "system_status",
        "data": "aborted",
        "seq": 7,
    }
    err = event_frame(ev("error", {"code": "AGENT_ERROR", "message": "boom"}), 1)
    assert err == {"type": "error", "code": "internal_error", "message": "boom", "seq": 7}


def test_v2_gets_every_event_with_turn_and_seq() -> None:
    frame = event_frame(ev("turn_ended", {"turn_id": "t1", "state": "completed"}), 2)
    assert frame == {"type": "turn_ended", "turn_id": "t1", "state": "completed", "seq": 7}


def test_result_lists_file_tags() -> None:
    frame = event_frame(ev("result", {"text": "a <file:/x/b.JPG> c <file:/x/d.txt>", "files": []}), 1)
    assert frame is not None
    assert frame["files"] == [
        {"path": "/x/b.JPG", "name": "b.JPG", "is_image": True},
        {"path": "/x/d.txt", "name": "d.txt", "is_image": False},
    ]
    assert frame["stream_fallback"] is False


_path = st.text(alphabet=st.characters(blacklist_characters="<>\x00\n"), min_size=1, max_size=40).filter(str.strip)


@given(st.lists(_path, max_size=5), st.text(alphabet="ab <", max_size=20))
def test_every_tag_is_found_once_in_order(paths: list[str], filler: str) -> None:
    text = filler.join(f"<file:{p}>" for p in paths)
    found = [f["path"] for f in parse_file_tags(text)]
    expected: list[str] = []
    for p in paths:
        if p.strip() not in expected:
            expected.append(p.strip())
    assert found == expected
