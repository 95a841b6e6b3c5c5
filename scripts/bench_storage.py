"""Storage benchmark: raw sqlite3 inserting event rows (the floor) vs the storage actor writing the same rows."""

from __future__ import annotations

import os
import sqlite3
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import trio

from actors.store import Store, StoreActor, StoreMsg
from actors.supervisor import ChildSpec, supervise
from storage import events as ev_db
from storage import sessions as sess_db
from storage.db import open_db
from storage.events import EventRow

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import row

PAYLOAD = {"data": "x" * 380}  # ~400 B per event, as in performance.md


def _rows(session_id: str, n: int, start: int = 1) -> list[EventRow]:
    return [EventRow(session_id, start + i, None, "text_delta", PAYLOAD, 0) for i in range(n)]


def _fresh(tmp: Path, name: str) -> tuple[sqlite3.Connection, str]:
    conn = open_db(tmp / name)
    sid = sess_db.get_or_create_session(conn, "bench", "1", "", now_ms=0).id
    return conn, sid


def raw_floor(tmp: Path, n: int, per_txn: int = 100) -> float:
    """Rows/s for plain sqlite3: same schema, same pragmas, one transaction per `per_txn` rows."""
    conn, sid = _fresh(tmp, "raw.db")
    rows = _rows(sid, n)
    t0 = time.perf_counter()
    for i in range(0, n, per_txn):
        conn.execute("BEGIN IMMEDIATE")
        ev_db.append_events(conn, rows[i : i + per_txn])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return n / elapsed


async def _actor_rate(tmp: Path, name: str, n: int, writers: int, rows_per_call: int) -> tuple[float, float]:
    conn, sid = _fresh(tmp, name)
    actor = StoreActor(conn)
    all_rows = _rows(sid, n)
    calls = [all_rows[i : i + rows_per_call] for i in range(0, n, rows_per_call)]
    async with trio.open_nursery() as nursery:
        spec: ChildSpec[StoreMsg] = ChildSpec("store", actor.run, capacity=8192)
        store = Store(await nursery.start(partial(supervise, spec)), stats=actor.stats)  # as the gateway makes it
        t0 = time.perf_counter()

        async def writer(k: int) -> None:
            for chunk in calls[k::writers]:
                await store.call(ev_db.append_events, chunk)

        async with trio.open_nursery() as w:
            for k in range(writers):
                w.start_soon(writer, k)
        elapsed = time.perf_counter() - t0
        nursery.cancel_scope.cancel()
    stored = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    assert stored == n, f"stored {stored} of {n}"
    conn.close()
    return n / elapsed, actor.stats.ops / max(actor.stats.batches, 1)


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Return benchmark rows: {name, value, unit, floor, floor_name, ratio, target, note}."""
    n = 5_000 if quick else 30_000
    repeats = 1 if quick else 3
    writers = 32
    samples: dict[str, list[float]] = {k: [] for k in ("floor100", "floor32", "batch", "single", "per_commit")}
    with tempfile.TemporaryDirectory(prefix="gw-bench-") as d:
        for r in range(repeats):
            tmp = Path(d) / str(r)
            for sub in ("a", "b", "c", "d"):
                (tmp / sub).mkdir(parents=True)
            samples["floor100"].append(raw_floor(tmp / "a", n, per_txn=100))
            # 32 single-row writers can share at most 32 rows per commit: the fair floor for that case.
            samples["floor32"].append(raw_floor(tmp / "b", n // 3, per_txn=writers))
            rate, _ = trio.run(_actor_rate, tmp / "c", "batch.db", n, 8, 100)
            samples["batch"].append(rate)
            rate, per_commit = trio.run(_actor_rate, tmp / "d", "single.db", n // 3, writers, 1)
            samples["single"].append(rate)
            samples["per_commit"].append(per_commit)
    med = {k: statistics.median(v) for k, v in samples.items()}
    rows = [
        (
            "storage actor, 100-row writes from 8 tasks",
            med["batch"],
            med["floor100"],
            "raw sqlite3, 100-row transactions",
            "",
        ),
        (
            f"storage actor, 1-row writes from {writers} tasks",
            med["single"],
            med["floor32"],
            f"raw sqlite3, {writers}-row transactions",
            f"{med['per_commit']:.0f} writes share each commit",
        ),
    ]
    return [
        row(
            name,
            round(value),
            "rows/s",
            floor=round(floor),
            floor_name=floor_name + ", same schema and pragmas (WAL, synchronous=FULL)",
            target="≥ 0.8 x floor",
            met=value / floor >= 0.8,
            note=note,
        )
        for name, value, floor, floor_name, note in rows
    ]


if __name__ == "__main__":
    for row in run(quick=bool(os.environ.get("QUICK"))):
        print(row)
