"""Storage faults on a real ext4 file system (loop mount) under a real gateway process: frozen, read-only, full.

Each test waits on state (`/health`, stored rows), never on time. The gateway's storage timeout is 1 s here, so a
freeze outlives it (and every ask timeout) within a few seconds of the test.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from gateway.ws.client import HandshakeError, connect
from tests.conftest import TOKEN, until
from tests.gateway.crashkit import Gateway, spawn
from tests.gateway.loopfs import LoopFs, loop_ext4

SHARED = "disk-faults-shared-token-0123"
BATCH = "/v1/connectors/external/ext/events/batch"
pytestmark = pytest.mark.slow


def _config(tmp_path: Path, fs: LoopFs) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = 0\ntoken = "{TOKEN}"\ngraceful_timeout = 2\n'
        f'[storage]\ndata_dir = "{fs.mnt / "data"}"\ntimeout = 1.0\nprobe_interval = 0.2\n'
        "[ws]\nping_interval = 0\n"
        f'[connectors.external.ext]\nshared_token = {{ value = "{SHARED}" }}\n'
    )
    return config


def _batch(name: str, n: int = 20) -> dict[str, Any]:
    events = [
        {"event_id": f"{name}-{i}", "thread": {"path": ["disk", str(i % 3)]}, "content": f"{name} {i} " + "x" * 200}
        for i in range(n)
    ]
    return {"protocol_version": 2, "events": events}


def _stalled_for(health: dict[str, Any]) -> int:
    """How long /health says the current commit has been stuck ("... for 11 s ...")."""
    found = re.search(r"for (\d+) s", str(health.get("reason", "")))
    return int(found.group(1)) if found else 0


def _ids(batch: dict[str, Any]) -> set[str]:
    return {e["event_id"] for e in batch["events"]}


def _query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _stored(db: Path) -> list[str]:
    return [str(r[0]) for r in _query(db, "SELECT event_key FROM ingress_events WHERE connector = 'external/ext'")]


def _settled(db: Path) -> bool:
    """Every stored event fed to the agent and every turn ended."""
    cursor = _query(db, "SELECT last_id FROM ingress_cursor")
    top = _query(db, "SELECT max(id) FROM ingress_events")[0][0]
    busy = _query(db, "SELECT count(*) FROM turns WHERE state IN ('queued', 'running')")[0][0]
    return bool(cursor) and cursor[0][0] == top and busy == 0


class Clients:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.ingress = httpx.AsyncClient(base_url=gw.base_url, headers={"Authorization": f"Bearer {SHARED}"})
        self.admin = httpx.AsyncClient(base_url=gw.base_url, headers={"Authorization": f"Bearer {TOKEN}"})

    async def health(self) -> tuple[int, dict[str, Any]]:
        r = await self.admin.get("/health", timeout=5)
        body: dict[str, Any] = r.json()
        return r.status_code, body

    async def until_health(self, status: str, *, also: str = "") -> dict[str, Any]:
        """Poll /health until its status (and reason) says so."""
        while True:
            code, body = await self.health()
            if body["status"] == status and also in str(body.get("reason", "")):
                assert code == (200 if status == "ok" else 503), body
                return body
            await trio.sleep(0.05)

    async def until_settled(self, db: Path) -> None:
        await until(lambda: _settled(db), interval=0.05)

    async def settle_and_stop(self, db: Path) -> set[str]:
        """Every event fed and turn ended, each event stored once, a sound file, and SIGTERM exits 0."""
        await self.until_settled(db)
        rows = _stored(db)
        assert len(rows) == len(set(rows))
        assert _query(db, "PRAGMA integrity_check")[0][0] == "ok"
        self.gw.process.send_signal(signal.SIGTERM)
        with trio.fail_after(15):
            assert await self.gw.process.wait() == 0
        return set(rows)

    async def new_chat_is_refused_at_once(self, chat_id: int) -> str:
        """A new /ws chat needs a stored session row: refused with a clear reason, not after a 10 s ask timeout."""
        with trio.fail_after(5):
            with pytest.raises(HandshakeError) as refused:
                async with connect(f"ws://127.0.0.1:{self.gw.port}/ws", TOKEN, chat_id=chat_id):
                    pass
        assert "storage" in refused.value.message, refused.value
        return refused.value.message

    async def chat_turn(self, chat_id: int, text: str) -> str:
        async with connect(f"ws://127.0.0.1:{self.gw.port}/ws", TOKEN, chat_id=chat_id) as ws:
            await ws.send_message(text)
            async for frame in ws.frames():
                if frame["type"] == "result":
                    return str(frame["text"])
                assert frame["type"] != "error", frame
        raise AssertionError("the socket closed before the turn's result")


@asynccontextmanager
async def gateway_on(fs: LoopFs, tmp_path: Path, output: bytearray) -> AsyncIterator[Clients]:
    """A gateway process with its data folder on `fs`; killed at the end, after the disk is thawed (a process
    blocked on a frozen disk cannot die)."""
    config = _config(tmp_path, fs)
    async with trio.open_nursery() as nursery:
        gw = await spawn(config, nursery, tmp_path, output=output)
        clients = Clients(gw)
        try:
            yield clients
        finally:
            fs.thaw()
            with trio.CancelScope(shield=True):
                if gw.process.returncode is None:
                    gw.process.kill()
                await gw.process.wait()
                await clients.ingress.aclose()
                await clients.admin.aclose()
            nursery.cancel_scope.cancel()
            print(output.decode(errors="replace"))  # shown by pytest when the test fails


async def test_a_freeze_longer_than_every_timeout_refuses_writes_truthfully_and_the_gateway_recovers(
    tmp_path: Path,
) -> None:
    output = bytearray()
    with loop_ext4(tmp_path) as fs:
        db = fs.mnt / "data" / "gateway.db"
        async with gateway_on(fs, tmp_path, output) as c:
            with trio.fail_after(40):
                r = await c.ingress.post(BATCH, json=_batch("before"))
                assert r.status_code == 200, r.text
                await c.until_settled(db)
                assert await c.chat_turn(5, "hello before") == "hello before"

                fs.freeze()
                # A batch sent as the disk freezes: its commit is begun and stuck in the kernel, so its sender waits
                # for the real outcome (the bug: answered 503 after 30 s, yet stored: its re-post said duplicate).
                in_flight: dict[str, httpx.Response] = {}

                async def post(name: str) -> None:
                    in_flight[name] = await c.ingress.post(BATCH, json=_batch(name), timeout=60)

                async with trio.open_nursery() as senders:
                    senders.start_soon(post, "stuck")
                    body = await c.until_health("degraded", also="frozen")
                    # Refused at once while the commit is stuck: 503 means not stored.
                    r = await c.ingress.post(BATCH, json=_batch("refused"))
                    assert r.status_code == 503, r.text
                    assert r.json()["error"]["code"] == "STORAGE_UNAVAILABLE" and r.headers["retry-after"]
                    # A read answers at once or within the storage timeout: SQLite must write its shared-memory
                    # index to read, which a frozen disk may block too; never a hang. Status says why.
                    with trio.fail_after(5):
                        r = await c.admin.get("/api/sessions")
                    assert r.status_code == 200 or r.json()["error"]["code"] == "STORAGE_UNAVAILABLE", r.text
                    r = await c.admin.get("/api/status")
                    assert r.status_code == 503 and "frozen" in r.text, r.text
                    await c.new_chat_is_refused_at_once(77)
                    # Outlast every internal timeout: the 1 s storage timeout, the 2 s backlog poll, the 5 s
                    # bound on recording a turn's end and the 10 s ask timeouts, as the gateway itself reports.
                    while _stalled_for(body) <= 10:
                        code, body = await c.health()
                        assert code == 503 and body["status"] == "degraded", body
                        await trio.sleep(0.1)
                    assert c.gw.process.returncode is None
                    fs.thaw()
                    await c.until_health("ok")
                stuck = in_flight["stuck"]
                stored = set(_stored(db))
                if stuck.status_code == 200:
                    assert {x["status"] for x in stuck.json()["results"]} == {"accepted"}, stuck.text
                    assert _ids(_batch("stuck")) <= stored
                else:
                    assert stuck.status_code == 503 and not _ids(_batch("stuck")) & stored, stuck.text
                assert not _ids(_batch("refused")) & stored
                r = await c.ingress.post(BATCH, json=_batch("refused"))
                assert r.status_code == 200 and {x["status"] for x in r.json()["results"]} == {"accepted"}, r.text
                assert await c.chat_turn(78, "hello after") == "hello after"
                await c.settle_and_stop(db)
    text = output.decode(errors="replace")
    assert "Traceback" not in text, text


async def test_a_disk_gone_read_only_refuses_writes_keeps_reading_and_recovers_when_writable_again(
    tmp_path: Path,
) -> None:
    output = bytearray()
    with loop_ext4(tmp_path) as fs:
        async with gateway_on(fs, tmp_path, output) as c:
            with trio.fail_after(40):
                db = fs.mnt / "data" / "gateway.db"
                r = await c.ingress.post(BATCH, json=_batch("before"))
                assert r.status_code == 200, r.text
                await c.until_settled(db)
                assert await c.chat_turn(5, "hello before") == "hello before"

                fs.fail()  # ext4 reports an error and remounts itself read-only, as an SD card does
                assert fs.read_only()
                r = await c.ingress.post(BATCH, json=_batch("refused"))
                assert r.status_code == 503 and r.json()["error"]["code"] == "STORAGE_UNAVAILABLE", r.text
                await c.until_health("degraded", also="cannot write")
                r = await c.admin.get("/api/sessions")
                assert r.status_code == 200 and r.json()["sessions"], r.text
                reason = await c.new_chat_is_refused_at_once(77)
                assert "I/O" in reason or "read-only" in reason.lower(), reason
                r = await c.admin.post("/api/sessions", json={"title": "x"})
                assert r.status_code == 503 and r.json()["error"]["code"] == "STORAGE_UNAVAILABLE", r.text
                assert c.gw.process.returncode is None

                fs.bring_back()  # checked and mounted writable again under the same path: no restart
                db = fs.mnt / "data" / "gateway.db"
                await c.until_health("ok")
                assert not _ids(_batch("refused")) & set(_stored(db))
                r = await c.ingress.post(BATCH, json=_batch("refused"))
                assert r.status_code == 200 and {x["status"] for x in r.json()["results"]} == {"accepted"}, r.text
                assert await c.chat_turn(78, "hello again") == "hello again"
                await c.settle_and_stop(db)


async def test_a_full_disk_refuses_writes_and_uploads_leaving_nothing_and_recovers_when_space_returns(
    tmp_path: Path,
) -> None:
    output = bytearray()
    acked: set[str] = set()
    with loop_ext4(tmp_path, size_mb=24) as fs:
        async with gateway_on(fs, tmp_path, output) as c:
            with trio.fail_after(40):
                db = fs.mnt / "data" / "gateway.db"
                files = fs.mnt / "data" / "files"
                filler = fs.fill()
                refused = None
                for n in range(200):
                    r = await c.ingress.post(BATCH, json=_batch(f"b{n}"))
                    if r.status_code == 503:
                        refused = f"b{n}"
                        break
                    assert r.status_code == 200, r.text
                    acked |= _ids(_batch(f"b{n}"))
                assert refused is not None, "the full disk never refused a batch"
                assert r.json()["error"]["code"] == "STORAGE_UNAVAILABLE", r.text
                await c.until_health("degraded", also="full")
                r = await c.admin.get("/api/sessions")
                assert r.status_code == 200, r.text
                # An upload on the full disk: 503, and no partial file left behind.
                upload = {"file": ("big.bin", b"\x01" * (256 * 1024), "application/octet-stream")}
                r = await c.admin.post("/api/files", files=upload)
                assert r.status_code == 503 and r.json()["error"]["code"] == "STORAGE_UNAVAILABLE", r.text
                r = await c.admin.post("/upload", files=upload)  # into the workspace
                assert r.status_code == 503 and r.json()["error"]["code"] == "STORAGE_UNAVAILABLE", r.text
                left = [p for d in (files, fs.mnt / "data" / "workspace") for p in d.rglob("*") if p.is_file()]
                assert left == [], left
                assert not _ids(_batch(refused)) & set(_stored(db))

                filler.unlink()  # space returns
                await c.until_health("ok")
                r = await c.ingress.post(BATCH, json=_batch(refused))
                assert r.status_code == 200 and {x["status"] for x in r.json()["results"]} == {"accepted"}, r.text
                acked |= _ids(_batch(refused))
                r = await c.admin.post("/api/files", files=upload)
                assert r.status_code == 201, r.text
                assert acked <= await c.settle_and_stop(db)


async def test_sigterm_on_a_read_only_disk_exits_cleanly_and_a_start_there_exits_78_in_one_line(
    tmp_path: Path,
) -> None:
    output = bytearray()
    with loop_ext4(tmp_path) as fs:
        async with gateway_on(fs, tmp_path, output) as c:
            with trio.fail_after(30):
                fs.fail()
                r = await c.ingress.post(BATCH, json=_batch("refused"))
                assert r.status_code == 503, r.text
                await c.until_health("degraded")
                c.gw.process.send_signal(signal.SIGTERM)
                assert await c.gw.process.wait() == 0
        text = output.decode(errors="replace")
        assert "Traceback" not in text and "unexpected error" not in text, text
        # Starting on the read-only data folder: one clear line, exit 78 (a service manager must not loop on it).
        env = {**os.environ, "GATEWAY_NO_RESPAWN": "1", "XDG_CONFIG_HOME": str(tmp_path)}
        with trio.fail_after(30):
            done = await trio.run_process(
                [sys.executable, "-m", "gateway", "serve", "--config", str(_config(tmp_path, fs))],
                env=env,
                capture_stdout=True,
                stderr=subprocess.STDOUT,
                check=False,
            )
        lines = done.stdout.decode(errors="replace").strip().splitlines()
        assert done.returncode == 78, lines
        assert len(lines) == 1 and "Read-only file system" in lines[0] and "data_dir" in lines[0], lines
