"""An idle session's turn starts while its acceptance commits (issue 17): what a refused commit leaves, and the
acceptance committing after the turn's first output (or a few ms without one)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from actors.base import Reply, ask
from actors.messages import SessionKey, Submit, TurnAccepted
from actors.providers.base import ProviderEvent, TurnRequest
from actors.providers.echo import EchoProvider, EchoTurn
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


class _Watched(EchoProvider):
    """The echo provider, telling the test once its turn has produced three deltas."""

    def __init__(self) -> None:
        super().__init__(delay=0.0)
        self.produced = trio.Event()

    def start_turn(self, request: TurnRequest) -> EchoTurn:
        watched = self

        class Turn(EchoTurn):
            async def events(self) -> AsyncIterator[ProviderEvent]:
                n = 0
                async for item in super().events():
                    yield item
                    n += 1
                    if n == 3:
                        watched.produced.set()

        return Turn(request.prompt, 0.0)


async def test_no_number_is_shown_that_a_crash_could_hand_out_again(tmp_path: Path) -> None:
    # A turn's events are shown while its acceptance commits: each number shown must already be reserved (or stored)
    # in storage, or a crash in between lets the next life hand it out again (a resuming client sees one seq twice).
    # Checked for a session's first turn and for a later one (a turn's end once gave the reservation back).
    provider = _Watched()
    release = threading.Event()

    def slow_commit(conn: sqlite3.Connection) -> None:
        release.wait(10)

    async with harness(tmp_path, lambda: provider, inline=False) as h:
        _, events, _ = await h.subscribe(KEY)
        for n in range(2):
            provider.produced = trio.Event()
            release.clear()
            async with trio.open_nursery() as nursery:
                text = f"turn {n} one two three four five"

                def make(r: Reply[TurnAccepted], text: str = text) -> Submit:
                    return Submit(KEY, text, r, also=slow_commit)

                nursery.start_soon(partial(ask, h.address, make, timeout=10))
                await provider.produced.wait()
                shown = [events.receive_nowait().seq for _ in range(events.statistics().current_buffer_used)]
                # Another connection, as the next life would read it: the acceptance is still uncommitted.
                with sqlite3.connect(h.db_path) as conn:
                    (session_id,) = conn.execute("SELECT id FROM sessions").fetchone()
                    floor = msg_db.seq_floor(conn, session_id)
                # Shown at once (the numbers were reserved when the actor woke), and every one of them safe.
                assert len(shown) >= 2 and max(shown) <= floor, (shown, floor)
                release.set()
            seen = await until_turn_ends(events)
            assert [e.data["text"] for e in seen if e.type == "result"] == [text]


async def test_an_idle_sessions_acceptance_commits_after_its_first_delta_was_shown(tmp_path: Path) -> None:
    # The store runs inline here: `also` runs in the acceptance's transaction, on the trio thread, and sees what
    # the subscriber holds at that moment. A first turn reserves numbers for the session's life, so the second
    # turn's first events may be shown before its own acceptance commits.
    async with harness(tmp_path, EchoProvider) as h:
        _, events, _ = await h.subscribe(KEY)
        await h.submit(KEY, "first")
        await until_turn_ends(events)
        shown_at_commit: list[int] = []

        def count(conn: sqlite3.Connection) -> None:
            shown_at_commit.append(events.statistics().current_buffer_used)

        accepted: TurnAccepted = await ask(h.address, lambda r: Submit(KEY, "one two three", r, also=count), timeout=5)
        seen = await until_turn_ends(events)
        # turn_started and at least the first text_delta went out before the commit began; no result before it.
        assert len(shown_at_commit) == 1 and shown_at_commit[0] >= 2
        assert [e.type for e in seen[:2]] == ["turn_started", "text_delta"]
        assert [e.data["text"] for e in seen if e.type == "result"] == ["one two three"]
        with sqlite3.connect(h.db_path) as conn:
            turn = msg_db.get_turn(conn, accepted.turn_id)
        assert turn is not None and turn.state == "completed"


async def test_a_new_sessions_first_turn_reads_nothing_while_nothing_was_written_since_it_was_created(
    tmp_path: Path,
) -> None:
    async with harness(tmp_path, EchoProvider, inline=False, reader=True) as h:
        assert h.store.reader is not None
        reader = h.store.reader
        _, events, _ = await h.subscribe(KEY)  # creates the session
        await h.submit(KEY, "first")
        await until_turn_ends(events)
        assert reader.reads == 0  # empty history, no pin, no cap: known from the open
        await h.submit(KEY, "second")
        assert [e.data["text"] for e in await until_turn_ends(events) if e.type == "result"] == ["second"]
        assert reader.reads == 1  # it has a history now

        other = SessionKey("api", "other")
        _, others, _ = await h.subscribe(other)
        await h.store.call(lambda conn: conn.execute("INSERT INTO settings (key, value) VALUES ('x', 'y')"))
        await h.submit(other, "third")
        await until_turn_ends(others)
        assert reader.reads == 2  # something was written after it was created: read as any turn


async def test_a_slow_first_output_does_not_hold_back_the_acceptance(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # A provider whose first word takes 60 s (a model thinking): the turn is accepted, and its acceptance stored,
    # while it waits; the result still comes after.
    async with harness(tmp_path, lambda: EchoProvider(delay=60.0), timeout=600) as h:
        _, events, _ = await h.subscribe(KEY)
        accepted = await h.submit(KEY, "late")
        assert events.statistics().current_buffer_used == 1  # turn_started only: no output yet
        with sqlite3.connect(h.db_path) as conn:
            turn = msg_db.get_turn(conn, accepted.turn_id)
        assert turn is not None and turn.state == "running"
        seen = await until_turn_ends(events)
        assert [e.data["text"] for e in seen if e.type == "result"] == ["late"]
