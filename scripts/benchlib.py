"""What the benchmarks share: server subprocesses, the bare floor server, RSS readings and the row shape."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-admin-token-0123456789"
Row = dict[str, Any]

# The floor of "all deps imported and serving in one process": the third-party packages the gateway has loaded
# when it serves (listed by `gateway_imports()`), then a raw-ASGI hypercorn-trio app that answers `/health`
# and holds NaCl-keyed WebSockets open. Started as `python -c FLOOR_SERVER <port> <module> ...`.
FLOOR_SERVER = """
import importlib, sys
for name in sys.argv[2:]:
    importlib.import_module(name)
import msgspec, trio
from hypercorn.config import Config
from hypercorn.trio import serve
from nacl.public import Box, PrivateKey, PublicKey
import base64

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif m["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http":
        body = b'{"status":"ok"}'
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"15")]})
        await send({"type": "http.response.body", "body": body})
        return
    await receive()
    await send({"type": "websocket.accept"})
    hello = msgspec.json.decode((await receive())["text"])
    own = PrivateKey.generate()
    box = Box(own, PublicKey(base64.b64decode(hello["e2e_pk"])))
    await send({"type": "websocket.send", "text": msgspec.json.encode(
        {"type": "auth_ok", "e2e_pk": base64.b64encode(bytes(own.public_key)).decode()}).decode()})
    while (await receive())["type"] != "websocket.disconnect":
        pass

async def main():
    c = Config(); c.bind = ["127.0.0.1:" + sys.argv[1]]; c.accesslog = None
    async with trio.open_nursery() as n:
        binds = await n.start(serve, app, c)
        print("listening on " + binds[0], flush=True)

trio.run(main)
"""

_IMPORTS: list[str] = []
PYZ = ROOT / "dist" / "gateway.pyz"
SHIV_ROOT = Path(tempfile.gettempdir()) / "gw-bench-shiv"


def _sources_digest() -> str:
    digest = hashlib.sha256()
    build = [ROOT / "pyproject.toml", ROOT / "requirements" / "run.lock"]
    build += [ROOT / "scripts" / name for name in ("build-zipapp", "zipapp_main.py", "_venv.sh")]
    files = [*build, *(p for d in ("gateway", "actors", "storage") for p in (ROOT / d).rglob("*"))]
    for path in sorted(f for f in files if f.is_file() and "__pycache__" not in f.parts):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def ensure_zipapp() -> Path:
    """dist/gateway.pyz, built by scripts/build-zipapp unless it was built from exactly these sources."""
    stamp = PYZ.with_name(PYZ.name + ".sources")
    digest = _sources_digest()
    PYZ.parent.mkdir(parents=True, exist_ok=True)
    # Two callers may ask at once (the suite's workers run tests/scripts/test_bench.py and tests/test_zipapp.py):
    # build-zipapp writes one build folder and one output, so the second waits for the first and then finds the
    # stamp matching instead of building into the same folder beside it.
    with open(PYZ.with_name(PYZ.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not PYZ.exists() or not stamp.exists() or stamp.read_text() != digest:
            build = subprocess.run(
                [str(ROOT / "scripts" / "build-zipapp")], capture_output=True, text=True, timeout=900
            )
            if build.returncode != 0:
                raise RuntimeError(f"scripts/build-zipapp failed ({build.returncode}):\n{build.stderr[-4000:]}")
            stamp.write_text(digest)
    return PYZ


def zipapp_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "SHIV_ROOT": str(SHIV_ROOT), **extra}


def zipapp_site() -> Path:
    """The zipapp's extracted site-packages (extracting it once): the floor runs on exactly these packages."""
    pyz = ensure_zipapp()
    out = subprocess.run(
        [sys.executable, "-S", str(pyz), "-c", "import gateway, pathlib; print(pathlib.Path(gateway.__file__).parent)"],
        env=zipapp_env(SHIV_INTERPRETER="1"),
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip()).parent


def floor_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(zipapp_site())}


def gateway_imports() -> list[str]:
    """Top-level third-party packages a serving gateway has loaded (routes, runtime and CLI imported), as the
    zipapp runs it (no dev dependencies)."""
    if not _IMPORTS:
        probe = (
            "import sys\n"
            "import gateway.daemon.cli, gateway.runtime, gateway.http.asgi, gateway.ws.connection\n"
            "from gateway.http.asgi import all_routes\n"
            "all_routes()\n"
            "own = {'gateway', 'actors', 'storage'}\n"
            "names = {m.split('.')[0] for m in sys.modules}\n"
            "print(' '.join(sorted(n for n in names if n not in sys.stdlib_module_names and n not in own\n"
            "                      and not n.startswith('_')\n"
            "                      and getattr(sys.modules[n], '__file__', None))))\n"
        )
        out = subprocess.run(
            [sys.executable, "-S", "-c", probe], capture_output=True, text=True, env=floor_env(), check=True, cwd="/"
        )
        _IMPORTS.extend(out.stdout.split())
    return list(_IMPORTS)


def floor_argv(port: int = 0) -> list[str]:
    return [sys.executable, "-S", "-c", FLOOR_SERVER, str(port), *gateway_imports()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """A server subprocess whose output is drained by a thread once its port is known."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT
        )
        assert self.proc.stdout is not None
        lines = []
        for line in self.proc.stdout:
            lines.append(line)
            m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
            if m:
                self.url = m.group(1)
                break
        else:
            raise RuntimeError("server did not start:\n" + "".join(lines))
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def floor_server(port: int = 0) -> Server:
    return Server(floor_argv(port), floor_env())


def gateway_config(tmp: Path, extra: str = "", *, port: int = 0, tuned: bool = True) -> Path:
    """A config file for a benchmark gateway under `tmp` (token fixed, data in `tmp/data`).

    `tuned=False` is the default configuration a user starts with (only the address, token and data folder
    set); otherwise pings are off and the rate and socket caps are raised so that a benchmark's load is not
    refused.
    """
    config = tmp / "config.toml"
    server = f'[server]\nhost = "127.0.0.1"\nport = {port}\ntoken = "{TOKEN}"\n'
    storage = f'[storage]\ndata_dir = "{tmp / "data"}"\n'
    if tuned:
        server += "graceful_timeout = 1.0\n"
        storage += "[ws]\nping_interval = 0\nmessages_per_minute = 100000\n" + _ws_room()
    config.write_text(server + storage + extra)
    return config


def _ws_room() -> str:
    # The memory benchmark holds 1000 sockets: raise the gateway's open-socket cap where it has one.
    from gateway.config.file import WebSocketConfig

    return "max_connections = 2000\n" if "max_connections" in WebSocketConfig.__struct_fields__ else ""


def gateway_env(tmp: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "XDG_CONFIG_HOME": str(tmp), "GATEWAY_NO_RESPAWN": "1", **extra}


def gateway(tmp: Path, extra: str = "") -> Server:
    """`python -m gateway serve` (from the source tree) on a free port with the benchmark config."""
    config = gateway_config(tmp, extra)
    env = gateway_env(tmp, GATEWAY_SERVER_PORT="0")
    return Server([sys.executable, "-m", "gateway", "serve", "--config", str(config)], env)


def zipapp_argv(config: Path) -> list[str]:
    return [sys.executable, "-S", str(ensure_zipapp()), "serve", "--config", str(config)]


def zipapp_gateway(tmp: Path, extra: str = "", *, tuned: bool = True, snapshots: Path | None = None) -> Server:
    """The built zipapp serving on a free port: what a user deploys, without the dev dependencies.

    With `snapshots` (a folder), the same packages run under tracemalloc instead, and `snapshot()` asks the
    process for a tracemalloc snapshot (see TRACED_GATEWAY).
    """
    config = gateway_config(tmp, extra, tuned=tuned)
    env = gateway_env(tmp, GATEWAY_SERVER_PORT="0", SHIV_ROOT=str(SHIV_ROOT))
    if snapshots is None:
        return Server(zipapp_argv(config), env)
    snapshots.mkdir(parents=True, exist_ok=True)
    env |= {"PYTHONPATH": str(zipapp_site()), "BENCH_SNAPSHOTS": str(snapshots)}
    return Server([sys.executable, "-S", "-P", "-c", TRACED_GATEWAY, "serve", "--config", str(config)], env)


# The gateway's own CLI, able to run under tracemalloc: a thread answers each request file in $BENCH_SNAPSHOTS.
# `start.req` starts tracing ($BENCH_TRACEMALLOC_FRAMES frames, 12 by default, so that a growth is seen from its
# callers: trio's stacks are deep, and each frame kept slows every allocation; started once the gateway is up, as
# tracing its imports would make the start minutes long); `<name>.req` writes the snapshot `<name>.snap`. Each
# request is renamed `.done` when answered. The gateway's code is untouched; its trio loop keeps serving meanwhile.
TRACED_GATEWAY = """
import os, sys, threading, time, tracemalloc
from pathlib import Path
folder = Path(os.environ["BENCH_SNAPSHOTS"])

def answer():
    while True:
        for req in sorted(folder.glob("*.req")):
            if req.stem == "start":
                tracemalloc.start(int(os.environ.get("BENCH_TRACEMALLOC_FRAMES", "12")))
            else:
                tracemalloc.take_snapshot().dump(str(req.with_suffix(".snap")))
            req.rename(req.with_suffix(".done"))
        time.sleep(0.1)

threading.Thread(target=answer, daemon=True).start()
from gateway.daemon.cli import main
sys.exit(main(sys.argv[1:]))
"""


def snapshot(folder: Path, name: str, timeout: float = 300.0) -> Path:
    """Ask a gateway started with `zipapp_gateway(..., snapshots=folder)` for a snapshot (`start`: to start
    tracing); the snapshot's file once written."""
    (folder / f"{name}.req").touch()
    done = folder / f"{name}.done"
    deadline = time.monotonic() + timeout
    while not done.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no answer to the tracemalloc request {name} within {timeout} s")
        time.sleep(0.1)
    return folder / f"{name}.snap"


def top_growth(before: Path, after: Path, limit: int = 10, stacks: int = 3) -> list[str]:
    """What grew between two snapshots, as printable lines: the `limit` source lines whose live allocations grew
    most, then the `stacks` call stacks that grew most (innermost frame first), to see who allocated."""
    import tracemalloc

    ignore = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap*"),
    ]
    old = tracemalloc.Snapshot.load(str(before)).filter_traces(ignore)
    new = tracemalloc.Snapshot.load(str(after)).filter_traces(ignore)

    def size(stat: tracemalloc.StatisticDiff) -> str:
        return f"{stat.size_diff / 1024:+10.1f} KiB {stat.count_diff:+8d} blocks"

    lines = []
    for stat in new.compare_to(old, "lineno")[:limit]:
        frame = stat.traceback[0]
        lines.append(f"{size(stat)}  {_short(frame.filename)}:{frame.lineno}")
    grown = [s for s in new.compare_to(old, "traceback") if s.size_diff > 0][:stacks]
    for stat in grown:
        lines.append(f"{size(stat)}  allocated from:")
        lines += [f"{'':>32}{_short(f.filename)}:{f.lineno}" for f in reversed(stat.traceback)][:12]
    return lines


def _short(path: str) -> str:
    """A source path from its package folder on (the zipapp extracts under a long, per-build folder)."""
    for marker in ("site-packages/", f"python{sys.version_info[0]}.{sys.version_info[1]}/", str(ROOT) + "/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def rss_kib(pid: int) -> int:
    """The resident set of a process (VmRSS), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def settled_rss_kib(pid: int, *, seconds: float = 1.0) -> int:
    """RSS once the process is idle: the median of readings over `seconds` (a reading is a moment)."""
    samples = []
    deadline = time.monotonic() + seconds
    while True:
        samples.append(rss_kib(pid))
        if time.monotonic() > deadline:
            return int(statistics.median(samples))
        time.sleep(0.05)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def row(
    name: str,
    value: float,
    unit: str,
    *,
    floor: float | None = None,
    floor_name: str = "",
    ratio: float | None = None,
    target: str = "",
    met: bool | None = None,
    note: str = "",
) -> Row:
    """One line of the table. `ratio` defaults to value/floor; `met` is None where there is no target."""
    if ratio is None and floor:
        ratio = value / floor
    return {
        "name": name,
        "value": value,
        "unit": unit,
        "floor": floor,
        "floor_name": floor_name,
        "ratio": None if ratio is None else round(ratio, 3),
        "target": target,
        "met": met,
        "note": note,
    }
