"""The streaming peer: the gateway against ductor 0.20.1's ApiServer, same client and workload, rounds interleaved."""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import TOKEN, Row, Server, free_port, pct, row, zipapp_gateway

from gateway.ws.client import connect

HERE = Path(__file__).resolve().parent
WORDS = 3000
TEXT = " ".join(f"w{i % 1000}" for i in range(WORDS))  # 3000 pieces for both servers' word splitting


def ductor(tmp: Path) -> Server:
    """ductor's ApiServer with an echo handler (scripts/peer_ductor.py), in its own process like the gateway."""
    return Server([sys.executable, str(HERE / "peer_ductor.py"), str(free_port()), TOKEN, str(tmp / "logs")])


async def turn(url: str, chat_id: int) -> tuple[float, float, int]:
    """(seconds to the first text_delta, seconds to the result, text_delta frames) of one turn on a new v1
    connection of its own. A server may send several words in one frame (the text must be the same)."""
    async with connect(url, TOKEN, chat_id=chat_id) as client:
        t0 = time.perf_counter()
        await client.send_message(TEXT)
        first = 0.0
        deltas: list[str] = []
        while (frame := await client.receive())["type"] != "result":
            if frame["type"] == "text_delta":
                if not deltas:
                    first = time.perf_counter() - t0
                deltas.append(frame["data"])
            elif frame["type"] == "error":
                raise RuntimeError(f"{url} answered {frame}")
        total = time.perf_counter() - t0
    if "".join(deltas) != TEXT or frame.get("text") != TEXT:
        raise RuntimeError(f"{url}: {len(deltas)} deltas of {len(''.join(deltas))} chars, result {frame}"[:300])
    return first, total, len(deltas)


async def _rounds(urls: dict[str, str], rounds: int, per_round: int) -> dict[str, list[tuple[float, float, int]]]:
    chat = iter(range(1, 1_000_000))
    for url in urls.values():  # warm-up, not counted: the first turn of a process loads and caches what it needs
        await turn(url, next(chat))
    out: dict[str, list[tuple[float, float, int]]] = {name: [] for name in urls}
    names = list(urls)
    for r in range(rounds):
        # Interleaved, the order swapped every round, so that load from other processes hits both alike.
        for name in names if r % 2 == 0 else names[::-1]:
            for _ in range(per_round):
                out[name].append(await turn(urls[name], next(chat)))
    return out


def run(quick: bool = False) -> list[Row]:
    """Both servers started once; `rounds` rounds of `per_round` turns each, one new connection and chat per turn."""
    rounds, per_round = (2, 1) if quick else (10, 4)
    with tempfile.TemporaryDirectory(prefix="gw-bench-peer-") as d:
        tmp = Path(d)
        (tmp / "gw").mkdir()
        # The gateway as a user has it: the built zipapp, default configuration, every event persisted.
        gw = zipapp_gateway(tmp / "gw", tuned=False)
        try:
            peer = ductor(tmp)
            try:
                ws = {"gateway": gw.url, "ductor": peer.url}
                times = trio.run(
                    _rounds, {k: v.replace("http://", "ws://") + "/ws" for k, v in ws.items()}, rounds, per_round
                )
            finally:
                peer.stop()
        finally:
            gw.stop()
    ms = 1000.0
    gw_first, gw_total = ([t[i] * ms for t in times["gateway"]] for i in (0, 1))
    peer_first, peer_total = ([t[i] * ms for t in times["ductor"]] for i in (0, 1))
    n = len(gw_total)
    frames = "/".join(str(round(statistics.median(t[2] for t in times[k]))) for k in ("gateway", "ductor"))
    note = f"{n} turns each, {rounds} interleaved rounds; one connection and session per turn; frames {frames}"
    gw_reply, peer_reply = statistics.median(gw_total), statistics.median(peer_total)
    speed = peer_reply / gw_reply
    rows: list[Row] = [
        row(
            "peer: 3000-word reply, gateway vs ductor 0.20.1 ApiServer",
            round(gw_reply, 1),
            "ms",
            floor=round(peer_reply, 1),
            floor_name="ductor's ApiServer, echo handler",
            ratio=speed,
            target="≥ 1.0 x ductor's speed",
            met=speed >= 1.0,
            note=f"ratio = gateway speed / ductor's; p99 {pct(gw_total, 0.99):.0f} vs {pct(peer_total, 0.99):.0f} ms; "
            + note,
        )
    ]
    for q in (0.5, 0.99):
        value, floor = pct(gw_first, q), pct(peer_first, q)
        rows.append(
            row(
                f"peer: first text_delta p{int(q * 100)}, gateway vs ductor",
                round(value, 2),
                "ms",
                floor=round(floor, 2),
                floor_name="ductor's ApiServer, echo handler",
                target="≤ ductor + 1 ms" if q == 0.5 else "context",
                met=value <= floor + 1 if q == 0.5 else None,
                note=note,
            )
        )
    return rows


def main() -> int:
    for r in run(quick="--quick" in sys.argv):
        print(f"{r['name']}: {r['value']} {r['unit']} / ductor {r['floor']} = {r['ratio']} ({r['target']}) {r['note']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
