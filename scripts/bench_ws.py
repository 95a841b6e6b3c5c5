"""Benchmarks of `/ws`: encrypted text_delta throughput, time to first delta and abort latency vs floors."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, cast

import msgspec
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from nacl.public import Box, PrivateKey, PublicKey
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from trio_websocket import open_websocket_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.config.file import parse_config, paths_for
from gateway.core import Runtime
from gateway.runtime import run as run_gateway
from gateway.ws import crypto
from gateway.ws.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import row

TOKEN = "bench-token-0123456789abcdef"
Row = dict[str, Any]

AGENT = """
import os, subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
print(os.getpid(), flush=True)
while True:
    print("tick", flush=True)
    time.sleep(0.005)
"""


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# ---- the floor: bare hypercorn-trio + NaCl, no gateway ----


async def _floor_app(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    hello = msgspec.json.decode((await receive())["text"])
    own = PrivateKey.generate()
    box = crypto.BoxChannel(own, crypto.b64decode(hello["pk"]))
    await send({"type": "websocket.send", "text": crypto.b64encode(bytes(own.public_key))})
    while True:
        msg = await receive()
        if msg["type"] != "websocket.receive":
            return
        req = msgspec.json.decode(box.open(msg["text"]))
        if req["type"] == "stream":
            for i in range(req["n"]):
                frame = {"type": "text_delta", "data": " word", "seq": i}
                await send({"type": "websocket.send", "text": box.seal(msgspec.json.encode(frame))})
        else:  # ping: one encrypted answer, the floor of a round trip
            await send({"type": "websocket.send", "text": box.seal(b'{"type":"text_delta","data":"x"}')})


async def _starlette_endpoint(ws: WebSocket) -> None:
    """The same floor through Starlette's WebSocket wrapper, to weigh raw ASGI against it."""
    await ws.accept()
    hello = msgspec.json.decode(await ws.receive_text())
    own = PrivateKey.generate()
    box = crypto.BoxChannel(own, crypto.b64decode(hello["pk"]))
    await ws.send_text(crypto.b64encode(bytes(own.public_key)))
    while True:
        try:
            req = msgspec.json.decode(box.open(await ws.receive_text()))
        except WebSocketDisconnect:
            return
        if req["type"] == "stream":
            for i in range(req["n"]):
                await ws.send_text(box.seal(msgspec.json.encode({"type": "text_delta", "data": " word", "seq": i})))
        else:
            await ws.send_text(box.seal(b'{"type":"text_delta","data":"x"}'))


_starlette_floor = Starlette(routes=[WebSocketRoute("/", _starlette_endpoint)])


async def _floor(n_frames: int, n_rtt: int, app: Any = _floor_app) -> tuple[float, list[float]]:
    hc = HypercornConfig()
    hc.bind = ["127.0.0.1:0"]
    hc.accesslog = None
    hc.errorlog = None  # no "Running on" line per floor run in the table's output
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve, cast(Any, app), hc, shutdown_trigger=shutdown.wait))
        url = binds[0].replace("http://", "ws://") + "/"
        async with open_websocket_url(url) as ws:
            own = PrivateKey.generate()
            await ws.send_message(msgspec.json.encode({"pk": crypto.b64encode(bytes(own.public_key))}).decode())
            box = Box(own, PublicKey(crypto.b64decode(str(await ws.get_message()))))

            async def ask(obj: dict[str, Any]) -> None:
                await ws.send_message(crypto.b64encode(bytes(box.encrypt(msgspec.json.encode(obj)))))

            rtts: list[float] = []
            for _ in range(n_rtt):
                t0 = time.perf_counter()
                await ask({"type": "ping"})
                msgspec.json.decode(box.decrypt(crypto.b64decode(str(await ws.get_message()))))
                rtts.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await ask({"type": "stream", "n": n_frames})
            for _ in range(n_frames):
                msgspec.json.decode(box.decrypt(crypto.b64decode(str(await ws.get_message()))))
            rate = n_frames / (time.perf_counter() - t0)
        shutdown.set()
    return rate, rtts


# ---- through the whole gateway ----


async def _with_gateway(tmp: Path, fn: Callable[[Runtime], Awaitable[Any]], **sections: dict[str, Any]) -> Any:
    data: dict[str, Any] = {
        "server": {"port": 0, "token": TOKEN, "graceful_timeout": 1.0},
        "storage": {"data_dir": str(tmp / "data")},
        "ws": {"ping_interval": 0, "messages_per_minute": 100_000},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    config = parse_config(data)
    paths = paths_for(config, tmp / "config.toml")
    async with trio.open_nursery() as nursery:
        runtime: Runtime = await nursery.start(partial(run_gateway, config, paths, token=TOKEN))
        try:
            return await fn(runtime)
        finally:
            runtime.shutdown.set()


def _url(rt: Runtime) -> str:
    return rt.binds[0].replace("http://", "ws://") + "/ws"


async def _gateway_stream(rt: Runtime, n_frames: int, n_rtt: int) -> tuple[float, list[float]]:
    firsts: list[float] = []
    async with connect(_url(rt), TOKEN) as c:
        for _ in range(n_rtt):
            t0 = time.perf_counter()
            await c.send_message("x")
            first = True
            while (frame := await c.receive())["type"] != "result":
                if first and frame["type"] == "text_delta":
                    firsts.append(time.perf_counter() - t0)
                    first = False
        text = " word" * n_frames
        t0 = time.perf_counter()
        await c.send_message(text)
        streamed: list[str] = []
        while (frame := await c.receive())["type"] != "result":
            if frame["type"] == "text_delta":
                streamed.append(frame["data"])
        # Deltas (words) per second: the gateway joins the deltas waiting for a connection into one frame.
        rate = n_frames / (time.perf_counter() - t0)
        if "".join(streamed) != text:
            raise RuntimeError(f"the streamed text differs from the reply ({len(streamed)} frames)")
    return rate, firsts


async def _gateway_abort(rt: Runtime, n: int) -> list[float]:
    from actors.providers.cli import group_members

    latencies: list[float] = []
    async with connect(_url(rt), TOKEN) as c:
        for _ in range(n):
            await c.send_message("go")
            while (first := await c.receive())["type"] != "text_delta":
                pass
            pgid = int(first["data"].split()[0])  # the agent prints its pid first; it leads its own group
            t0 = time.perf_counter()
            await c.abort()
            while (frame := await c.receive())["type"] != "abort_ok":
                pass
            latencies.append(time.perf_counter() - t0)
            assert frame["killed"] == 2 and not group_members(pgid), frame
    return latencies


async def _main(quick: bool) -> list[Row]:
    n_frames = 3000 if quick else 10_000
    n_rtt = 30 if quick else 100
    n_abort = 10 if quick else 40
    # Repetitions interleave floor and gateway so that load from other processes hits both alike; medians win.
    reps = 3 if quick else 5
    floor_rates, starlette_rates, gw_rates = [], [], []
    floor_rtt: list[float] = []
    firsts: list[float] = []
    for _ in range(reps):
        rate, rtts = await _floor(n_frames, n_rtt)
        floor_rates.append(rate)
        floor_rtt += rtts
        starlette_rates.append((await _floor(n_frames, 1, _starlette_floor))[0])
        with tempfile.TemporaryDirectory() as d:
            rate, ttfd = await _with_gateway(Path(d), lambda rt: _gateway_stream(rt, n_frames, n_rtt))
        gw_rates.append(rate)
        firsts += ttfd
    floor_rate = statistics.median(floor_rates)
    starlette_rate = statistics.median(starlette_rates)
    gw_rate = statistics.median(gw_rates)
    with tempfile.TemporaryDirectory() as d:
        script = Path(d) / "agent.py"
        script.write_text(AGENT)
        aborts = await _with_gateway(
            Path(d),
            lambda rt: _gateway_abort(rt, n_abort),
            agent={"provider": "cli"},
            providers={"cli": {"argv": [sys.executable, str(script)], "grace": 1.0}},
        )
    ms = 1000.0
    ratio = gw_rate / floor_rate
    rows: list[Row] = [
        row(
            "encrypted /ws text_deltas/s, one connection",
            round(gw_rate),
            "deltas/s",
            floor=round(floor_rate),
            floor_name="bare hypercorn-trio + NaCl, one frame per delta",
            target="≥ 0.8 x floor",
            met=ratio >= 0.8,
            note=f"{n_frames}-word turn, median of {reps}; the gateway joins a turn's deltas, one frame per ms at most",
        ),
        row(
            "bare Starlette WebSocket (context: why /ws is raw ASGI)",
            round(starlette_rate),
            "frames/s",
            floor=round(floor_rate),
            floor_name="bare raw-ASGI hypercorn-trio + NaCl",
            target="context",
        ),
    ]
    for q in (0.5, 0.99):
        value, floor = _pct(firsts, q) * ms, _pct(floor_rtt, q) * ms
        rows.append(
            row(
                f"time to first text_delta p{int(q * 100)}",
                round(value, 2),
                "ms",
                floor=round(floor, 2),
                floor_name="the floor's encrypted round trip",
                target="≤ floor + 2 ms" if q > 0.5 else "",
                met=value <= floor + 2 if q > 0.5 else None,
                note=f"{len(firsts)} turns",
            )
        )
    for q in (0.5, 0.99):
        value = _pct(aborts, q) * ms
        rows.append(
            row(
                f"abort → abort_ok with the process group gone, p{int(q * 100)}",
                round(value, 1),
                "ms",
                target="≤ 50 ms" if q > 0.5 else "",
                met=value <= 50 if q > 0.5 else None,
                note=f"{len(aborts)} aborts while streaming (cli provider, child + grandchild)",
            )
        )
    return rows


def run(quick: bool) -> list[Row]:
    """Run every `/ws` benchmark in this process (blocks; about 10 s quick) and return the rows."""
    result: list[Row] = trio.run(_main, quick)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer iterations (CI)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()
    rows = run(args.quick)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            floor = "" if r["floor"] is None else f"  floor {r['floor']}  ratio {r['ratio']}"
            print(f"{r['name']:<62} {r['value']:>10} {r['unit']:<9}{floor}  target {r['target']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
