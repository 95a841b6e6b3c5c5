"""Memory: idle RSS, RSS per idle /ws connection with its session, memory that comes back, hibernated sessions."""

from __future__ import annotations

import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import msgspec
import trio
from nacl.public import PrivateKey
from trio_websocket import open_websocket_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import (
    TOKEN,
    Row,
    Server,
    floor_server,
    row,
    settled_rss_kib,
    snapshot,
    top_growth,
    zipapp_gateway,
)

from gateway.ws import crypto
from gateway.ws.client import HandshakeError, connect

SHARED = "bench-memory-shared-token-0123"
MIB = 1024.0


async def _hold(url: str, n: int, opener: Any, ready: trio.Event, release: trio.Event) -> None:
    """Open `n` authenticated connections (25 handshakes at a time), set `ready`, hold them until `release`."""
    # More at once only queues them at the router: on a loaded machine a new session's first store calls then
    # outlast the handshake's 10 s answer ("reconnect later").
    limiter = trio.CapacityLimiter(25)
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


def _connections_rss(
    pid: int, url: str, n: int, opener: Any, settle: float, idle: Callable[[], bool] | None = None
) -> float:
    """KiB the process at `pid` grows by while `n` authenticated connections are open and idle (`idle`: once it
    says so, polled for at most a minute)."""
    before = settled_rss_kib(pid, seconds=settle)

    async def main() -> int:
        ready, release = trio.Event(), trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_hold, url, n, opener, ready, release)
            with trio.fail_after(600):
                await ready.wait()
            await trio.sleep(settle)  # let the server finish each connection's setup before reading
            if idle is not None:
                with trio.move_on_after(60):
                    # Another process's state, read over HTTP: polled.
                    while not await trio.to_thread.run_sync(idle):  # noqa: ASYNC110
                        await trio.sleep(0.5)
            during = await trio.to_thread.run_sync(partial(settled_rss_kib, pid, seconds=settle))
            release.set()
        return during

    during = trio.run(main)
    return float(during - before)


# Turns the gateway refused as overloaded ("reconnect later") and the benchmark tried again, as a client would.
RETRIED: list[str] = []


@asynccontextmanager
async def _chat_with_turn(url: str, chat_id: int, attempts: int = 6) -> AsyncIterator[None]:
    """A v1 connection on its own chat (so its own session) that has completed one turn, then stays idle."""
    for attempt in range(1, attempts + 1):
        async with AsyncExitStack() as stack:
            try:
                client = await stack.enter_async_context(connect(url, TOKEN, chat_id=chat_id, timeout=120))
            except HandshakeError as exc:
                if attempt == attempts or exc.code != "internal_error":
                    raise
                refused = exc.message
            else:
                refused = await _one_turn(client, chat_id, last=attempt == attempts)
                if not refused:
                    yield
                    return
        RETRIED.append(refused)
        await trio.sleep(2.0**attempt)  # 2, 4, ... 32 s: an overloaded gateway needs the room


async def _one_turn(client: Any, chat_id: int, *, last: bool) -> str:
    """Run one turn; "" when done, else the gateway's refusal (raised on the `last` attempt)."""
    await client.send_message(f"hello {chat_id}")
    while (frame := await client.receive())["type"] != "result":
        if frame["type"] == "error":
            if last or frame.get("code") != "internal_error":
                raise RuntimeError(f"turn refused: {frame}")
            return str(frame.get("message"))
    return ""


def _open_use_close(url: str, n: int, first_chat: int) -> None:
    """`n` connections opened together, one turn each, then all closed."""

    async def main() -> None:
        ready, release = trio.Event(), trio.Event()
        async with trio.open_nursery() as nursery:
            opener = lambda u, i: _chat_with_turn(u, first_chat + i)  # noqa: E731
            nursery.start_soon(_hold, url, n, opener, ready, release)
            with trio.fail_after(600):
                await ready.wait()
            release.set()

    trio.run(main)


def _status(url: str) -> dict[str, Any]:
    r = httpx.get(url + "/api/status", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    body = r.json()
    services = body.get("services") or body["error"]["details"]["services"]
    return {s["service"]: s["details"] for s in services}


def _idle_kib(url: str, pid: int, settle: float = 1.0) -> int:
    """RSS of the gateway at `pid` once idle after three `/health` and one `/api/status` request."""
    for _ in range(3):
        httpx.get(url + "/health", timeout=30)
    _status(url)
    return settled_rss_kib(pid, seconds=settle)


def _hibernated(tmp: Path, n: int, settle: float) -> tuple[float, float, int]:
    """(idle KiB before, KiB after `n` sessions each ran one turn and hibernated, live sessions left)."""
    extra = (
        "[sessions]\nidle_timeout = 1.0\n"
        f'[connectors.external.mem]\nshared_token = {{ value = "{SHARED}" }}\nmax_batch_events = 100\n'
    )
    gw = zipapp_gateway(tmp, extra)
    try:
        httpx.get(gw.url + "/health", timeout=30)
        before = settled_rss_kib(gw.pid, seconds=settle)
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
            time.sleep(0.2)
        after = settled_rss_kib(gw.pid, seconds=settle)
    finally:
        gw.stop()
    return float(before), float(after), live


def _live(url: str) -> tuple[int, int]:
    """(live session actors, live connection actors) as `/api/status` reports them."""
    status = _status(url)
    kinds = (status.get("actors") or {}).get("live") or {}
    return int(status["sessions"]["live_sessions"]), int(kinds.get("connection", 0))


def _wait_retired(url: str, timeout: float = 60.0) -> tuple[int, int]:
    """Wait until no session and no connection actor is live (the sessions' idle timeout retired them), at most
    `timeout` seconds; return what is still live (sessions, connections)."""
    deadline = time.monotonic() + timeout
    while (live := _live(url)) != (0, 0) and time.monotonic() < deadline:
        time.sleep(0.2)
    return live


def _per_connection(n: int, first_chat: int, gw: Server, settle: float) -> float:
    """KiB per connection a gateway grows by while `n` connections, each on its own chat with one completed turn,
    are open and idle."""
    ws_url = gw.url.replace("http://", "ws://") + "/ws"
    opener = lambda url, i: _chat_with_turn(url, first_chat + i)  # noqa: E731
    # Idle: every session parked (`sessions.subscribed_idle_timeout` after its turn), as they stay.
    return _connections_rss(gw.pid, ws_url, n, opener, settle, idle=lambda: _live(gw.url)[0] == 0) / n


def _floor_per_connection(n: int, settle: float) -> tuple[float, float]:
    """(idle KiB, KiB per connection) of a new floor process holding `n` NaCl-keyed WebSockets."""
    floor = floor_server()
    try:
        httpx.get(floor.url + "/health", timeout=30)
        idle = settled_rss_kib(floor.pid, seconds=settle)
        ws_floor = floor.url.replace("http://", "ws://") + "/"
        return idle, _connections_rss(floor.pid, ws_floor, n, lambda url, i: _FloorClient(url), settle) / n
    finally:
        floor.stop()


def _comes_back(tmp: Path, rounds: int, n: int, traced: bool, settle: float) -> tuple[list[float], list[str]]:
    """RSS (KiB) after each round of `n` connections opened on new chats, used for one turn each and closed, once
    every session has retired, and the rounds after which some did not. `traced`: under tracemalloc, printing the
    top growth between rounds."""
    snaps = tmp / "snapshots" if traced else None
    gw = zipapp_gateway(tmp, "[sessions]\nidle_timeout = 1.0\n", snapshots=snaps)
    series: list[float] = []
    stuck: list[str] = []  # rounds after which some actor outlived its idle timeout by a minute
    taken: list[Path] = []
    try:
        _idle_kib(gw.url, gw.pid, settle)
        if snaps is not None:
            snapshot(snaps, "start")
        ws_url = gw.url.replace("http://", "ws://") + "/ws"
        for r in range(rounds):
            _open_use_close(ws_url, n, first_chat=1 + r * n)
            sessions, connections = _wait_retired(gw.url)
            if sessions or connections:
                stuck.append(f"round {r + 1}: {sessions} sessions and {connections} connections still live")
            series.append(float(settled_rss_kib(gw.pid, seconds=settle)))
            print(f"memory comes back: round {r + 1}: {series[-1] / MIB:.1f} MiB", file=sys.stderr, flush=True)
            if snaps is not None:
                taken.append(snapshot(snaps, f"round{r + 1}"))
                if len(taken) > 1:
                    _print_growth(f"round {r} -> round {r + 1}", taken[-2], taken[-1])
        if len(taken) > 2:
            _print_growth(f"round 1 -> round {rounds}", taken[0], taken[-1])
    finally:
        gw.stop()
    return series, stuck


def _refused(n: int) -> str:
    return f"; {n} turns refused as overloaded, tried again" if n else ""


def _print_growth(title: str, before: Path, after: Path) -> None:
    print(f"tracemalloc, top growth {title}:", file=sys.stderr)
    for line in top_growth(before, after):
        print("  " + line, file=sys.stderr, flush=True)


def _connection_rows(
    counts: tuple[int, int], values: tuple[float, float], floors: tuple[float, float], retried: list[int]
) -> list[Row]:
    kb = 1.024  # KiB -> KB: the target is in KB (1000 bytes)
    return [
        row(
            f"RSS per idle /ws connection with its session, {n} open",
            round(value * kb, 1),
            "KB",
            floor=round(floor * kb, 1),
            floor_name="bare hypercorn-trio + NaCl holding the same sockets",
            target="≤ 30 KB",
            met=value * kb <= 30,
            note="each on its own chat, one turn done, then idle (sessions parked); RSS growth / connections"
            + _refused(again),
        )
        for n, value, floor, again in zip(counts, values, floors, retried[:2], strict=True)
    ] + [
        row(
            f"RSS per idle /ws connection added from {counts[0]} to {counts[1]} open (context)",
            round(_added(counts, values) * kb, 1),
            "KB",
            floor=round(_added(counts, floors) * kb, 1),
            floor_name="the floor's rows, the same way",
            target="context: without the one-time cost",
            note=f"(RSS growth at {counts[1]} - at {counts[0]}) / {counts[1] - counts[0]}, from the two rows above; "
            "what a connection costs once the first ones have paid what is loaded and cached on first use",
        )
    ]


def _added(counts: tuple[int, int], per: tuple[float, float]) -> float:
    """KiB per connection between the two counts, from the per-connection figures measured at each."""
    (small, big), (at_small, at_big) = counts, per
    return (at_big * big - at_small * small) / (big - small)


def run(quick: bool = False, tracemalloc: bool = False, connections_only: bool = False) -> list[Row]:
    """Measure every memory row; each floor is a process with the same deps imported, serving nothing else.

    `tracemalloc`: run the "memory comes back" gateway under tracemalloc and print what grew between rounds.
    `connections_only`: only the two per-connection rows (and their floors).
    """
    counts = (30, 100) if quick else (300, 1000)
    rounds, n_round = (2, 50) if quick else (10, 1000)
    n_hib = 100 if quick else 10_000
    settle = 0.3 if quick else 1.0  # seconds of RSS readings (and of rest before reading) per figure
    floor_idle, floor_per = _floor_per_connection(counts[0], settle)
    floor_per_big = _floor_per_connection(counts[1], settle)[1]
    if connections_only:
        per: list[float] = []
        with tempfile.TemporaryDirectory(prefix="gw-bench-mem-") as d:
            for n, first_chat in zip(counts, (1, 1_000_000), strict=True):
                gw = zipapp_gateway(Path(d))  # one gateway each, as below
                try:
                    per.append(_per_connection(n, first_chat, gw, settle))
                finally:
                    gw.stop()
        per_small, per_big = per
        retried = [len(RETRIED), 0]
        return _connection_rows(counts, (per_small, per_big), (floor_per, floor_per_big), retried)
    with tempfile.TemporaryDirectory(prefix="gw-bench-mem-") as d:
        gw = zipapp_gateway(Path(d))
        try:
            gw_idle = _idle_kib(gw.url, gw.pid, settle)
            per_small = _per_connection(counts[0], 1, gw, settle)
            retried = [len(RETRIED)]
        finally:
            gw.stop()
        # Every start after the first finds its migrations applied, so it never loads sqlite-utils: the idle
        # figure of a gateway that has been restarted (a reboot, an upgrade without a new migration).
        gw = zipapp_gateway(Path(d))
        try:
            restarted_idle = _idle_kib(gw.url, gw.pid, settle)
            per_big = _per_connection(counts[1], 1_000_000, gw, settle)
            retried.append(len(RETRIED) - retried[0])
        finally:
            gw.stop()
    with tempfile.TemporaryDirectory(prefix="gw-bench-back-") as d:
        # Under tracemalloc the gateway runs some 20 times slower (each allocation records its call stack): a fifth
        # of the connections per round still shows what grows, in a quarter of an hour.
        n_round = max(n_round // 5, 20) if tracemalloc else n_round
        series, stuck = _comes_back(Path(d), rounds, n_round, tracemalloc, settle)
    retried.append(len(RETRIED) - sum(retried))
    with tempfile.TemporaryDirectory(prefix="gw-bench-hib-") as d:
        hib_before, hib_after, live = _hibernated(Path(d), n_hib, settle)
    hib_growth = (hib_after - hib_before) * 10_000 / n_hib
    idle_mib, floor_mib = gw_idle / MIB, floor_idle / MIB
    rows = [
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
    ]
    rows += _connection_rows(counts, (per_small, per_big), (floor_per, floor_per_big), retried)
    first, last = series[0], series[-1]
    rows += [
        row(
            f"memory comes back: RSS after round {rounds} of {n_round} connections vs after round 1",
            round(last / MIB, 1),
            "MiB",
            floor=round(first / MIB, 1),
            floor_name="the same gateway after round 1",
            target="≤ 1.1 x round 1",
            met=last <= 1.1 * first and not stuck,
            note="each round: new chats, one turn each, closed, sessions retired (idle_timeout 1 s); MiB per round: "
            + ", ".join(f"{x / MIB:.0f}" for x in series)
            + (" (under tracemalloc)" if tracemalloc else "")
            + "".join(f"; {s}" for s in stuck)
            + _refused(retried[2]),
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
    return rows


if __name__ == "__main__":
    # --connections: only the per-connection rows (a minute or two), e.g. to take the median of three runs.
    # --back: only "memory comes back" (its 10 rounds, a few minutes), printing the ratio.
    args = sys.argv[1:]
    if "--back" in args:
        quick = "--quick" in args
        traced = "--tracemalloc" in args
        n_back = 50 if quick else 1000
        n_back = max(n_back // 5, 20) if traced else n_back
        with tempfile.TemporaryDirectory(prefix="gw-bench-back-") as d:
            back, stuck = _comes_back(Path(d), 2 if quick else 10, n_back, traced, 0.3 if quick else 1.0)
        print(
            f"memory comes back: {back[-1] / back[0]:.3f} x round 1; MiB per round: "
            + ", ".join(f"{x / MIB:.1f}" for x in back)
            + "".join(f"; {s}" for s in stuck)
            + _refused(len(RETRIED))
        )
        sys.exit(0)
    for r in run(
        quick="--quick" in args, tracemalloc="--tracemalloc" in args, connections_only="--connections" in args
    ):
        print(r)
