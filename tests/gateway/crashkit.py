"""Gateway processes to SIGKILL: spawn `python -m gateway serve`, learn its port, drain its output, read its DB."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from tests.conftest import TOKEN


class Gateway:
    """One `python -m gateway serve` process; its output is drained so it can never block on a full pipe."""

    def __init__(self, process: trio.Process, port: int) -> None:
        self.process = process
        self.port = port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def _kill(process: trio.Process) -> None:
    if process.returncode is None:
        process.kill()
    with trio.CancelScope(shield=True):
        await process.wait()


async def spawn(config: Path, nursery: trio.Nursery, tmp_path: Path, *, output: bytearray | None = None) -> Gateway:
    """Start a gateway process on `config` and wait (30 s at most) until it listens; its stdout and stderr
    are appended to `output` when given (else dropped). The process lives no longer than `nursery`: a test that
    fails or times out (its nursery cancelled) has it killed, never left running."""
    env = {**os.environ, "GATEWAY_SERVER_PORT": "0", "GATEWAY_NO_RESPAWN": "1", "XDG_CONFIG_HOME": str(tmp_path)}
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        stream = process.stdout
        buf = b""
        with trio.fail_after(30):
            while True:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    raise AssertionError("gateway exited before listening:\n" + buf.decode(errors="replace"))
                buf += chunk
                m = re.search(rb"listening on http://127\.0\.0\.1:(\d+)", buf)
                if m:
                    break
    except BaseException:
        await _kill(process)
        raise

    if output is not None:
        output.extend(buf)

    async def drain() -> None:
        try:
            while chunk := await stream.receive_some(65536):
                if output is not None:
                    output.extend(chunk)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    async def reap() -> None:
        try:
            await process.wait()
        finally:
            await _kill(process)

    nursery.start_soon(drain)
    nursery.start_soon(reap)
    return Gateway(process, int(m.group(1)))


def config_file(tmp_path: Path, extra: str = "") -> Path:
    """Write `config.toml` for a gateway process: loopback on a free port, the test token, data under `tmp_path/data`,
    then the `extra` TOML; return its path."""
    config = tmp_path / "config.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = 0\ntoken = "{TOKEN}"\n[storage]\ndata_dir = "{tmp_path / "data"}"\n'
        + extra
    )
    return config


async def reap(gw: Gateway | None) -> None:
    """Kill `gw` if it still runs and wait for it (10 s at most): what a test's `finally` does with its process."""
    if gw is not None and gw.process.returncode is None:
        gw.process.kill()
        with trio.move_on_after(10):
            await gw.process.wait()


def ws_room(connections: int) -> str:
    """A `[ws]` line raising the open-socket cap to `connections` where this gateway has one (none: no line)."""
    from gateway.config.file import WebSocketConfig

    if "max_connections" in WebSocketConfig.__struct_fields__:
        return f"max_connections = {connections + 64}\n"
    return ""


def query(db_file: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read the gateway's database from a second connection (WAL: it sees what is committed)."""
    db = sqlite3.connect(db_file, timeout=10)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def integrity(db_file: Path) -> str:
    return str(query(db_file, "PRAGMA integrity_check")[0][0])
