"""An idle session's turn starts while its acceptance commits (issue 17): what a refused commit leaves."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from actors.base import ask
from actors.messages import SessionKey, Submit, TurnAccepted
from actors.providers.echo import EchoProvider
from storage import messages as msg_db
from tests.actors.harness import harness, until_turn_ends

KEY = SessionKey("api", "start")


class Refused(Exception):
    pass


def _refuse(conn: sqlite3.Connection) -> None:
    raise Refused("the acceptance's transaction failed")


async def test_a_turn_whose_acceptance_commit_fails_is_cut_off_and_nothing_of_it_is_stored(tmp_path: Path) -> None:
    # A slow echo: the turn is still streaming when its acceptance's transaction fails.
    async with harness(tmp_path, lambda: EchoProvider(delay=0.01)) as h:
        _, events, _ = await h.subscribe(KEY)
        text = "never stored " + "word " * 200
        with pytest.raises(Refused):
            # `also` runs in the acceptance's transaction: failing there fails the commit, as a full disk would.
            await ask(h.address, lambda r: Submit(KEY, text, r, also=_refuse), timeout=5)
        seen = await until_turn_ends(events)
        assert seen[0].type == "turn_started"
        assert seen[-1].data["state"] == "failed"
        assert not any(e.type == "result" for e in seen)
        # Cut off, not streamed to the end.
        assert "".join(str(e.data["data"]) for e in seen if e.type == "text_delta") != text
        refused_turn = seen[0].turn_id
        assert refused_turn is not None
        # The next turn runs, and its history holds nothing of the refused one.
        accepted: TurnAccepted = await h.submit(KEY, "after")
        after = await until_turn_ends(events)
        assert [e.data["text"] for e in after if e.type == "result"] == ["after"]
        with sqlite3.connect(h.db_path) as conn:
            assert msg_db.get_turn(conn, refused_turn) is None
            assert msg_db.get_turn(conn, accepted.turn_id) is not None
            contents = [m.content for m in msg_db.history(conn, accepted.session_id)]
        assert text not in contents and "after" in contents
        # Its events are numbered in order with the next turn's: no number shown twice.
        seqs = [e.seq for e in seen + after]
        assert seqs == sorted(set(seqs))
