"""Crash safety: SIGKILL the gateway process at random moments during batched ingress with re-sends."""

from __future__ import annotations

import random
import signal
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.conftest import TOKEN
from tests.gateway.connectors.helpers import wait_for
from tests.gateway.crashkit import query, spawn

SHARED = "crash-test-shared-token-0001"
EVENTS = 3000
BATCH = 25
KILLS = 5


def _all_dispatched(db_file: Path) -> bool:
    db = sqlite3.connect(db_file, timeout=5)
    try:
        cursor = db.execute("SELECT last_id FROM ingress_cursor").fetchone()[0]
        top = db.execute("SELECT max(id) FROM ingress_events").fetchone()[0]
    finally:
        db.close()
    return bool(top) and cursor == top


def _event(i: int) -> dict[str, Any]:
    return {"event_id": f"ev-{i:05d}", "thread": {"path": ["crash", str(i % 7)]}, "content": f"event {i} " + "x" * 200}


@pytest.mark.slow
async def test_sigkill_during_batched_ingress_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = tmp_path / "config.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = 0\ntoken = "{TOKEN}"\n'
        f'[storage]\ndata_dir = "{data}"\n'
        f'[log]\nlevel = "info"\n'
        f'[connectors.external.crash]\nshared_token = {{ value = "{SHARED}" }}\n'
    )
    rng = random.Random(4)
    batches = [[_event(i) for i in range(b, min(b + BATCH, EVENTS))] for b in range(0, EVENTS, BATCH)]
    acked: dict[str, str] = {}  # event_id -> session_id from an answered request
    pending = list(range(len(batches)))
    # Kill points spread over the run, so every kill lands while batches are in flight.
    thresholds = sorted(rng.sample(range(EVENTS // 20, EVENTS * 9 // 10), KILLS))
    kills = 0
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            gw = await spawn(config, nursery, tmp_path)
            while True:
                url = f"http://127.0.0.1:{gw.port}/v1/connectors/external/crash/events/batch"
                async with httpx.AsyncClient(headers={"Authorization": f"Bearer {SHARED}"}, timeout=10) as client:
                    crossed = trio.Event()
                    target = thresholds[kills] if kills < KILLS else EVENTS

                    async def sender(url: str, target: int, crossed: trio.Event) -> None:
                        while pending:
                            idx = pending.pop(0)
                            # Sometimes re-send a batch right after its answer: it must come back `duplicate`.
                            resend = rng.random() < 0.2
                            try:
                                r = await client.post(url, json={"protocol_version": 2, "events": batches[idx]})
                                if resend:
                                    r2 = await client.post(url, json={"protocol_version": 2, "events": batches[idx]})
                                    assert all(x["status"] == "duplicate" for x in r2.json()["results"]), r2.text
                            except httpx.HTTPError:
                                pending.append(idx)  # maybe not acknowledged: send it again after the restart
                                return
                            assert r.status_code == 200, r.text
                            for x in r.json()["results"]:
                                assert x["status"] in ("accepted", "duplicate"), x
                                assert acked.setdefault(x["event_id"], x["session_id"]) == x["session_id"]
                            if len(acked) >= target or not pending:
                                crossed.set()
                        crossed.set()

                    async with trio.open_nursery() as senders:
                        for _ in range(3):
                            senders.start_soon(sender, url, target, crossed)
                        if kills < KILLS:
                            await crossed.wait()
                            await trio.sleep(rng.uniform(0, 0.03))
                            gw.process.send_signal(signal.SIGKILL)
                            kills += 1
                if gw.process.poll() is None and kills == KILLS and not pending:
                    break
                await gw.process.wait()
                gw = await spawn(config, nursery, tmp_path)

            # Events stored before a kill but not yet fed to the agent are fed after the restart, and every turn ends.
            async def dispatched() -> bool:
                busy = query(data / "gateway.db", "SELECT count(*) FROM turns WHERE state IN ('queued', 'running')")
                return _all_dispatched(data / "gateway.db") and busy[0][0] == 0

            await wait_for(dispatched, timeout=30, interval=0.1)
            gw.process.send_signal(signal.SIGTERM)
            with trio.fail_after(15):
                await gw.process.wait()
            nursery.cancel_scope.cancel()
    assert kills == KILLS
    assert len(acked) == EVENTS
    db = sqlite3.connect(data / "gateway.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = db.execute(
            "SELECT event_key, session_id FROM ingress_events WHERE connector = 'external/crash'"
        ).fetchall()
    finally:
        db.close()
    keys = [r[0] for r in rows]
    assert len(keys) == len(set(keys)) == EVENTS
    assert dict(rows) == acked
    # Fed to the agent exactly once across the kills: each event's text is in exactly one turn's prompt.
    prompts = [r[0] for r in query(data / "gateway.db", "SELECT prompt FROM turns")]
    fed = sorted(part.split(" ", 2)[1] for prompt in prompts for part in prompt.split("\n\n"))
    assert fed == sorted(str(i) for i in range(EVENTS))
    states = dict(query(data / "gateway.db", "SELECT state, count(*) FROM turns GROUP BY state"))
    assert "running" not in states and "queued" not in states, states
