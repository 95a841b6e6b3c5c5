"""Crash safety of /ws turns: SIGKILL the gateway while clients stream turns, restart, resume, check the store."""

from __future__ import annotations

import random
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, HandshakeError

from gateway.ws.client import Client, connect
from storage.clock import now_ms
from tests.conftest import TOKEN, RunningGateway
from tests.gateway.crashkit import Gateway, integrity, query, spawn

CLIENTS = 4
KILLS = 3
TURNS_PER_LIFE = 6  # results the clients see between two kills
WORDS = 40
LONG = CLIENTS + 1  # a chat whose turn in each killed life lasts ~20 s: the kill lands while it runs
LONG_WORDS = 10_000


class Life:
    """What the clients report during one life of the gateway process."""

    def __init__(self) -> None:
        self.results = 0
        self.enough = trio.Event()  # TURNS_PER_LIFE results seen
        self.long_running = trio.Event()  # the long chat's turn of this life has shown its first delta


@pytest.mark.slow
async def test_sigkill_during_ws_turns_leaves_no_running_turn_and_resume_loses_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = tmp_path / "config.toml"
    # The echo agent streams a word every 2 ms, so each turn is in flight for ~80 ms: kills land mid-turn.
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = 0\ntoken = "{TOKEN}"\n'
        f'[storage]\ndata_dir = "{data}"\n'
        "[providers.echo]\ndelay_ms = 2\n"
        "[ws]\nping_interval = 0\n"
    )
    db = data / "gateway.db"
    rng = random.Random(9)
    seen: dict[int, list[int]] = {c: [] for c in range(1, LONG + 1)}  # chat -> every seq received, in order
    results: dict[int, list[tuple[int, str]]] = {c: [] for c in range(1, LONG + 1)}  # chat -> (seq, text)
    session_of: dict[int, str] = {}
    last_seq: dict[int, int | None] = dict.fromkeys(seen)
    kills = 0
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            gw = await spawn(config, nursery, tmp_path)
            while True:
                life = Life()

                @asynccontextmanager
                async def resumed(gw: Gateway, chat: int) -> AsyncIterator[Client]:
                    """The chat's connection, resuming after the last number it saw, on the same session."""
                    url = gw.base_url.replace("http://", "ws://") + "/ws"
                    async with connect(url, TOKEN, chat_id=chat, resume_from=last_seq[chat]) as c:
                        sid = str(c.auth_ok["session_id"])
                        assert session_of.setdefault(chat, sid) == sid  # the same session after a restart
                        yield c

                async def receive(c: Client, chat: int) -> dict[str, Any]:
                    """The next frame, its sequence number noted for the checks and the next resume."""
                    frame = await c.receive()
                    seq = frame.get("seq")
                    if isinstance(seq, int):
                        seen[chat].append(seq)
                        last_seq[chat] = seq
                    return frame

                async def client(chat: int, gw: Gateway, life: Life, done: trio.Event) -> None:
                    try:
                        async with resumed(gw, chat) as c:
                            n = 0
                            while not done.is_set():
                                n += 1
                                await c.send_message(" ".join(f"c{chat}w{i}" for i in range(WORDS)) + f" n{n}")
                                while True:
                                    frame = await receive(c, chat)
                                    if frame["type"] == "result":
                                        results[chat].append((int(frame["seq"]), str(frame["text"])))
                                        life.results += 1
                                        if life.results >= TURNS_PER_LIFE:
                                            life.enough.set()
                                        break
                    except (ConnectionClosed, HandshakeError, OSError, trio.BrokenResourceError):
                        return  # the gateway died under us: reconnect (with resume_from) after the restart

                async def long_client(gw: Gateway, life: Life, mark: str) -> None:
                    # One turn that outlasts the others' TURNS_PER_LIFE results by far: once its own first delta
                    # (marked with this life's word, not one replayed from the turn the last kill cut off) has been
                    # shown, the turn is running, and it still is when the kill comes.
                    try:
                        async with resumed(gw, LONG) as c:
                            await c.send_message(mark + " w" * LONG_WORDS)
                            while True:
                                frame = await receive(c, LONG)
                                if frame["type"] == "text_delta" and mark in str(frame["data"]):
                                    life.long_running.set()
                                assert frame["type"] != "result", "the long turn ended before the kill"
                    except (ConnectionClosed, HandshakeError, OSError, trio.BrokenResourceError):
                        return

                done = trio.Event()
                killed = kills < KILLS
                async with trio.open_nursery() as clients:
                    for chat in range(1, CLIENTS + 1):
                        clients.start_soon(client, chat, gw, life, done)
                    if killed:
                        clients.start_soon(long_client, gw, life, f"life{kills}")
                        # Kill while the short turns stream and the long one surely runs.
                        await life.enough.wait()
                        await life.long_running.wait()
                        await trio.sleep(rng.uniform(0, 0.01))
                        gw.process.send_signal(signal.SIGKILL)
                        kills += 1
                    else:
                        await life.enough.wait()
                        done.set()
                if not killed:
                    # The last life, never killed: stopped below. (Asking the process whether it is alive right
                    # after a SIGKILL is a race: it may not be reaped yet, and the test would stop a dying one.)
                    break
                await gw.process.wait()
                died_ms = now_ms()
                gw = await spawn(config, nursery, tmp_path)
                # The restart marked every turn the kill cut off `interrupted`: none started before it still runs
                # (a queued turn the restart resumed may run now, but it started after).
                running = query(db, "SELECT id FROM turns WHERE state = 'running' AND started_at <= ?", died_ms)
                assert running == [], running

            gw.process.send_signal(signal.SIGTERM)
            with trio.fail_after(15):
                await gw.process.wait()
            nursery.cancel_scope.cancel()
    assert kills == KILLS
    assert integrity(db) == "ok"
    states = dict(query(db, "SELECT state, count(*) FROM turns GROUP BY state"))
    assert "running" not in states and "queued" not in states, states
    assert states.get("interrupted", 0) >= KILLS, states  # each kill cut off at least the long turn
    for chat, seqs in seen.items():
        # Across reconnects with resume_from: every event once, in order, never a number reissued.
        assert seqs == sorted(set(seqs)), (chat, seqs)
        sid = session_of[chat]
        stored: dict[int, Any] = dict(query(db, "SELECT seq, type FROM events WHERE session_id = ?", sid))
        for seq, _text in results[chat]:
            assert stored.get(seq) == "result", (chat, seq)  # every result a client saw is stored, once
        assert len(stored) == len(set(stored))
    assert sum(len(r) for r in results.values()) >= TURNS_PER_LIFE * (KILLS + 1)


async def test_a_result_is_committed_before_any_client_sees_it(gateway: RunningGateway) -> None:
    # What the crash test relies on, checked on every turn: the moment a client has the `result` frame,
    # the database already holds it (so no crash can take back a result a client saw).
    db = gateway.runtime.paths.db_file
    with trio.fail_after(30):
        async with connect(gateway.ws_url + "/ws", gateway.token, chat_id=7) as c:
            sid = str(c.auth_ok["session_id"])
            for n in range(20):
                await c.send_message(f"turn {n} " + "w " * 5)
                while (frame := await c.receive())["type"] != "result":
                    pass
                stored = query(db, "SELECT type FROM events WHERE session_id = ? AND seq = ?", sid, frame["seq"])
                assert stored == [("result",)], (n, frame)
