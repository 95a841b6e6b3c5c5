"""Ingress benchmark (issue 4): `/events/batch` vs raw SQLite, and single `/events` vs a bare hypercorn-trio POST."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from storage.db import open_db  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from benchlib import Server, row  # noqa: E402

TOKEN = "bench-admin-token-0123456789"
SHARED = "bench-shared-token-0123456789"
SESSIONS = 10

_BARE_SERVER = """
import sys, trio
from hypercorn.config import Config
from hypercorn.trio import serve

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif m["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        m = await receive()
        more = m.get("more_body", False)
    body = b'{"status":"accepted"}'
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})

async def main():
    c = Config(); c.bind = ["127.0.0.1:0"]; c.accesslog = None
    async with trio.open_nursery() as n:
        binds = await n.start(serve, app, c)
        print("listening on " + binds[0], flush=True)

trio.run(main)
"""


def event(i: int, run: str) -> dict[str, Any]:
    """About 400 bytes, like the performance page's reference event."""
    return {
        "event_id": f"{run}-{i:08d}",
        "thread": {"path": ["bench", str(i % SESSIONS)]},
        "occurred_at_ms": 1_700_000_000_000 + i,
        "content": f"event {i} " + "lorem ipsum dolor sit amet " * 10,
        "metadata": {"source": "bench", "seq": i},
    }


def raw_sqlite(n: int, batch: int = 100, run: str = "") -> float:
    """Rows/s inserting the same ingress rows straight into SQLite: same schema, pragmas and transaction size."""
    with tempfile.TemporaryDirectory() as d:
        conn = open_db(Path(d) / "floor.db")
        rows = []
        run = run or f"raw{time.time_ns()}"
        for i in range(n):
            payload = msgspec.json.encode(event(i, run))
            fp = hashlib.blake2b(payload, digest_size=16).digest()
            # The rows the gateway writes: the event's text and its bytes as sent (so the same sizes, same pages).
            text = str(event(i, run)["content"])
            rows.append(("external/bench", f"{run}-{i:08d}", fp, f"s{i % SESSIONS:031d}", text, payload, 0))
        sql = (
            "INSERT INTO ingress_events (connector, event_key, fingerprint, session_id, text, payload, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        start = time.perf_counter()
        for b in range(0, n, batch):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(sql, rows[b : b + batch])
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - start
        conn.close()
    return n / elapsed


def gateway(tmp: Path) -> Server:
    config = tmp / "config.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = 0\ntoken = "{TOKEN}"\n'
        f'[storage]\ndata_dir = "{tmp / "data"}"\n'
        # The agent streams ~50 words/s per session, like a real model; the echo provider's default (no delay)
        # would spend the CPU on emitting words as fast as Python can, which no deployed agent does.
        "[providers.echo]\ndelay_ms = 20\n"
        f'[connectors.external.bench]\nshared_token = {{ value = "{SHARED}" }}\nmax_batch_events = 100\n'
    )
    env = {**os.environ, "GATEWAY_SERVER_PORT": "0", "XDG_CONFIG_HOME": str(tmp)}
    return Server([sys.executable, "-m", "gateway", "serve", "--config", str(config)], env)


class _Status(msgspec.Struct):
    status: str


class _Results(msgspec.Struct):
    results: list[_Status]


_results = msgspec.json.Decoder(_Results)  # only what the check reads: the client's share of the CPU stays small


async def _drive(url: str, bodies: list[bytes], concurrency: int, expect_items: int) -> float:
    """Post every body with `concurrency` workers; return bodies/s. Every answer must be a 200 acceptance."""
    queue = list(reversed(bodies))
    headers = {"Authorization": f"Bearer {SHARED}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=60) as client:

        async def worker() -> None:
            while queue:
                body = queue.pop()
                for attempt in range(3):
                    try:
                        r = await client.post(url, content=body)
                        break
                    except (httpx.RemoteProtocolError, httpx.ConnectError, httpx.ReadError, httpx.WriteError) as exc:
                        # A keep-alive connection closed or reset by the server under load: send again (the
                        # gateway answers a re-sent batch `duplicate`, which the check below accepts).
                        if attempt == 2:
                            raise RuntimeError(f"{url}: {exc!r} three times") from exc
                        print(f"ingress: {url}: {exc!r}; sending again", file=sys.stderr, flush=True)
                if r.status_code != 200:
                    raise RuntimeError(f"{url} answered {r.status_code}: {r.text[:200]}")
                if expect_items > 1:
                    statuses = {x.status for x in _results.decode(r.content).results}
                    if not statuses <= {"accepted", "duplicate"}:
                        raise RuntimeError(f"unexpected statuses {statuses}")

        start = time.perf_counter()
        async with trio.open_nursery() as n:
            for _ in range(concurrency):
                n.start_soon(worker)
        return len(bodies) / (time.perf_counter() - start)


def _row(name: str, value: float, unit: str, floor: float, target: float, floor_name: str) -> dict[str, Any]:
    return row(
        name,
        round(value),
        unit,
        floor=round(floor),
        floor_name=floor_name,
        target=f"≥ {target} x floor",
        met=bool(floor) and value / floor >= target,
    )


ROUNDS = 3


def _batches(run: str, n: int) -> list[bytes]:
    return [
        msgspec.json.encode({"protocol_version": 2, "events": [event(i, run) for i in range(b, b + 100)]})
        for b in range(0, n, 100)
    ]


def _gateway_round(run: str, n_batch: int, n_single: int, clients: int) -> tuple[float, float]:
    """(batch events/s, single requests/s) of a gateway started afresh for this round (a new data folder)."""
    with tempfile.TemporaryDirectory() as d:
        gw = gateway(Path(d))
        try:
            base = gw.url + "/v1/connectors/external/bench"
            warm = [msgspec.json.encode({"events": [event(i, "warm" + run) for i in range(100)]})]
            trio.run(_drive, base + "/events/batch", warm, 1, 100)
            per_s = trio.run(_drive, base + "/events/batch", _batches(run, n_batch), clients, 100) * 100
            singles = [msgspec.json.encode(event(i, "s" + run)) for i in range(n_single)]
            single_rate = trio.run(_drive, base + "/events", singles, 32, 1)
        finally:
            gw.stop()
    return per_s, single_rate


def run(quick: bool) -> list[dict[str, Any]]:
    """Measure both hot paths and their floors in this run; return one row per comparison.

    Interleaved: each of `ROUNDS` rounds (one with `quick`) measures raw SQLite, the bare HTTP server and a gateway
    started afresh, in an order rotated every round, so a shared machine's drifting load falls on all three alike;
    each figure is its events over its time summed across the rounds. The gateway is stopped while the floors run
    (its agent's streamed turns never share their CPU) and the bare server idles while the gateway runs.
    """
    n_batch = 1_000 if quick else 10_000  # per round
    n_single = 70 if quick else 2_700
    n_rounds = 1 if quick else ROUNDS  # --quick shows the rows work, not a figure to judge
    clients = 8
    singles_bare = [msgspec.json.encode(event(i, "bare")) for i in range(n_single)]
    batches_bare = _batches("bare", n_batch)
    time_of = {"sqlite": 0.0, "http": 0.0, "gateway": 0.0, "http1": 0.0, "gateway1": 0.0}
    rounds: list[float] = []  # each round's own ratio, for the note
    bare = Server([sys.executable, "-c", _BARE_SERVER])
    try:
        for r in range(n_rounds):
            rates: dict[str, float] = {}
            run_id = f"r{r}x{time.time_ns()}"
            steps = ["sqlite", "http", "gateway"]
            for step in steps[r % 3 :] + steps[: r % 3]:
                if step == "sqlite":
                    rates["sqlite"] = raw_sqlite(n_batch, run=run_id)
                elif step == "http":
                    rates["http"] = trio.run(_drive, bare.url + "/", batches_bare, clients, 1) * 100
                    rates["http1"] = trio.run(_drive, bare.url + "/", singles_bare, 32, 1)
                else:
                    rates["gateway"], rates["gateway1"] = _gateway_round(run_id, n_batch, n_single, clients)
            for k, v in rates.items():
                time_of[k] += (n_single if k.endswith("1") else n_batch) / v
            rounds.append(rates["gateway"] * (1 / rates["http"] + 1 / rates["sqlite"]))
    finally:
        bare.stop()
    floor_rows = n_rounds * n_batch / time_of["sqlite"]
    bare_batch = n_rounds * n_batch / time_of["http"]
    per_s = n_rounds * n_batch / time_of["gateway"]
    bare_rate = n_rounds * n_single / time_of["http1"]
    single_rate = n_rounds * n_single / time_of["gateway1"]
    # The pipeline floor: a server that must both take the bodies over HTTP and insert their rows can go no faster
    # than the two costs added up, 1 / (1/http + 1/sqlite) events/s.
    pipeline = 1 / (1 / bare_batch + 1 / floor_rows)
    note = "rounds: " + ", ".join(f"{x:.2f}" for x in rounds)
    return [
        _row(
            "batch ingress, 100 events/request, 8 clients",
            per_s,
            "events/s",
            pipeline,
            0.8,
            "pipeline floor 1/(1/http + 1/sqlite): bare hypercorn-trio POST of the same bodies, raw sqlite3 "
            "inserting the same rows",
        )
        | {"note": note},
        _row(
            "batch ingress vs raw SQLite alone (context)",
            per_s,
            "events/s",
            floor_rows,
            0.8,
            "raw sqlite3, same rows, 100-row transactions, same pragmas",
        )
        | {"target": "context: the storage floor", "met": None},
        _row(
            "batch ingress vs an HTTP server that stores nothing (context)",
            per_s,
            "events/s",
            bare_batch,
            0.8,
            "bare hypercorn-trio POST of the same bodies",
        )
        | {"target": "context: the HTTP floor", "met": None},
        _row(
            "single-event ingress /events, 32 clients",
            single_rate,
            "req/s",
            bare_rate,
            0.8,
            "bare hypercorn-trio POST",
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer events (for CI)")
    args = parser.parse_args()
    rows = run(args.quick)
    ok = True
    for r in rows:
        verdict = "ok" if r["met"] else "BELOW TARGET"
        ok = ok and verdict == "ok"
        line = f"{r['name']}: {r['value']} {r['unit']} / floor {r['floor']} = {r['ratio']}"
        print(f"{line} (target {r['target']}) {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
