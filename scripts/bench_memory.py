"""Memory: idle RSS, RSS per 1000 idle /ws connections with their sessions, RSS per 10k hibernated sessions."""

from __future__ import annotations

import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import trio
from nacl.public import PrivateKey
from trio_websocket import open_websocket_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import TOKEN, Row, floor_server, row, settled_rss_kib, zipapp_gateway

from gateway.ws import crypto
from gateway.ws.client import connect

SHARED = "bench-memory-shared-token-0123"
MIB = 1024.0


async def _hold(url: str, n: int, opener: Any, ready: trio.Event, release: trio.Event) -> None:
    """Open `n` authenticated connections (50 handshakes at a time), set `ready`, hold them until `release`."""
    limiter = trio.CapacityLimiter(50)
    opened = 0

    async def one(i: int) -> None:
        nonlocal opened
        gate = trio.Semaphore(1)
        await limiter.acquire_on_behalf_of(gate)
        try:
            async with opener(url, i):
                limiter.release_on_behalf_of(gate)
                gate = None
                opened += 1
                if opened == n:
                    ready.set()
                await release.wait()
        finally:
            if gate is not None:
                limiter.release_on_behalf_of(gate)

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(one, i)


class _FloorClient:
    """A v1-shaped handshake against the floor server: plaintext hello with a key, plaintext answer."""

    def __init__(self, url: str) -> None:
        self.cm = open_websocket_url(url)

    async def __aenter__(self) -> None:
        ws = await self.cm.__aenter__()
        own = PrivateKey.generate()
        await ws.send_message(msgspec.json.encode({"e2e_pk": crypto.b64encode(bytes(own.public_key))}).decode())
        await ws.get_message()

    async def __aexit__(self, *exc: Any) -> None:
        await self.cm.__aexit__(*exc)


def _connections_rss(pid: int, url: str, n: int, opener: Any) -> float:
    """KiB the process at `pid` grows by while `n` authenticated connections are open and idle."""
    before = settled_rss_kib(pid)

    async def main() -> int:
        ready, release = trio.Event(), trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_hold, url, n, opener, ready, release)
            with trio.fail_after(300):
                await ready.wait()
            await trio.sleep(1.0)  # let the server finish each connection's setup before reading
            during = await trio.to_thread.run_sync(settled_rss_kib, pid)
            release.set()
        return during

    during = trio.run(main)
    return float(during - before)


def _status(url: str) -> dict[str, Any]:
    r = httpx.get(url + "/api/status", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    body = r.json()
    services = body.get("services") or body["error"]["details"]["services"]
    return {s["service"]: s["details"] for s in services}


def _idle_kib(url: str, pid: int) -> int:
    """RSS of the gateway at `pid` once idle after three `/health` and one `/api/status` request."""
    for _ in range(3):
        httpx.get(url + "/health", timeout=30)
    _status(url)
    return settled_rss_kib(pid)


def _hibernated(tmp: Path, n: int) -> tuple[float, float, int]:
    """(idle KiB before, KiB after `n` sessions each ran one turn and hibernated, live sessions left)."""
    extra = (
        "[sessions]\nidle_timeout = 1.0\n"
        f'[connectors.external.mem]\nshared_token = {{ value = "{SHARED}" }}\nmax_batch_events = 100\n'
    )
    gw = zipapp_gateway(tmp, extra)
    try:
        httpx.get(gw.url + "/health", timeout=30)
        before = settled_rss_kib(gw.pid)
        url = gw.url + "/v1/connectors/external/mem/events/batch"
        with httpx.Client(headers={"Authorization": f"Bearer {SHARED}"}, timeout=60) as client:
            for b in range(0, n, 100):
                events = [
                    {"event_id": f"m{i}", "thread": {"path": ["mem", str(i)]}, "content": f"hello {i}"}
                    for i in range(b, min(b + 100, n))
                ]
                r = client.post(url, json={"protocol_version": 2, "events": events})
                r.raise_for_status()
        db = tmp / "data" / "gateway.db"
        deadline = time.monotonic() + 600
        live = -1
        while time.monotonic() < deadline:
            conn = sqlite3.connect(db, timeout=10)
            try:
                open_turns = conn.execute("SELECT count(*) FROM turns WHERE state IN ('queued', 'running')").fetchone()
                ended = conn.execute("SELECT count(*) FROM turns").fetchone()[0]
            finally:
                conn.close()
            live = int(_status(gw.url)["sessions"]["live_sessions"])
            if open_turns[0] == 0 and ended >= n and live == 0:
                break
            time.sleep(0.5)
        after = settled_rss_kib(gw.pid)
    finally:
        gw.stop()
    return float(before), float(after), live


def run(quick: bool = False) -> list[Row]:
    """Measure every memory row; the floor process is the same deps imported, serving, with nothing else."""
    n_conn = 100 if quick else 1000
    n_hib = 500 if quick else 10_000
    per = 1000.0 / n_conn
    floor = floor_server()
    try:
        httpx.get(floor.url + "/health", timeout=30)
        floor_idle = settled_rss_kib(floor.pid)
        ws_floor = floor.url.replace("http://", "ws://") + "/"
        floor_conn = _connections_rss(floor.pid, ws_floor, n_conn, lambda url, i: _FloorClient(url)) * per
    finally:
        floor.stop()
    with tempfile.TemporaryDirectory(prefix="gw-bench-mem-") as d:
        gw = zipapp_gateway(Path(d))
        try:
            gw_idle = _idle_kib(gw.url, gw.pid)
            ws_url = gw.url.replace("http://", "ws://") + "/ws"
            gw_conn = _connections_rss(gw.pid, ws_url, n_conn, lambda url, i: connect(url, TOKEN, chat_id=i + 1)) * per
        finally:
            gw.stop()
        # Every start after the first finds its migrations applied, so it never loads sqlite-utils: the idle
        # figure of a gateway that has been restarted (a reboot, an upgrade without a new migration).
        gw = zipapp_gateway(Path(d))
        try:
            restarted_idle = _idle_kib(gw.url, gw.pid)
        finally:
            gw.stop()
    with tempfile.TemporaryDirectory(prefix="gw-bench-hib-") as d:
        hib_before, hib_after, live = _hibernated(Path(d), n_hib)
    hib_growth = (hib_after - hib_before) * 10_000 / n_hib
    idle_mib, floor_mib = gw_idle / MIB, floor_idle / MIB
    conn_kb = gw_conn / 1000  # KiB per connection
    scale = f" ({n_conn} measured, scaled)" if n_conn != 1000 else ""
    return [
        row(
            "idle RSS",
            round(idle_mib, 1),
            "MiB",
            floor=round(floor_mib, 1),
            floor_name="all deps imported, bare hypercorn-trio serving",
            target="≤ 45 MiB",
            met=idle_mib <= 45,
            note="first start: runs the migrations",
        ),
        row(
            "restarted gateway idle RSS (no migration pending)",
            round(restarted_idle / MIB, 1),
            "MiB",
            floor=round(floor_mib, 1),
            floor_name="all deps imported, bare hypercorn-trio serving",
            target="≤ 45 MiB",
            met=restarted_idle / MIB <= 45,
        ),
        row(
            "RSS per 1000 idle /ws connections with their sessions" + scale,
            round(gw_conn / MIB, 1),
            "MiB",
            floor=round(floor_conn / MIB, 1),
            floor_name="bare hypercorn-trio + NaCl holding the same sockets",
            target="≤ 30 KB per connection",
            met=conn_kb * 1.024 <= 30,
            note=f"{conn_kb * 1.024:.1f} KB per connection",
        ),
        row(
            "RSS growth per 10k hibernated sessions" + (f" ({n_hib} measured, scaled)" if n_hib != 10_000 else ""),
            round(hib_growth / MIB, 1),
            "MiB",
            floor=round(hib_before / MIB, 1),
            floor_name="the same gateway idle before",
            ratio=hib_after / hib_before,
            target="live sessions 0; < 45 MiB (10k live actors)",
            met=live == 0 and hib_growth / MIB < 45,
            note=f"each ran one turn, then hibernated; live sessions after: {live}",
        ),
    ]


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(r)
