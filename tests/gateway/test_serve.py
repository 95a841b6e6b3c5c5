"""`gateway serve`: /health over a real socket, a clean shutdown in-process and as a real process."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio
import trio_websocket

from gateway import __version__
from storage import events as ev_db
from storage.events import EventRow
from tests.conftest import RunningGateway, make_config, start_gateway
from tests.gateway.harness import CLI_TIMEOUT


async def test_health_over_a_real_socket(gateway: RunningGateway) -> None:
    with trio.fail_after(5):
        async with httpx.AsyncClient(base_url=gateway.base_url) as client:
            r = await client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["version"] == __version__
    assert body["connections"] == 0
    assert body["uptime"] >= 0


async def test_errors_have_one_shape(gateway: RunningGateway) -> None:
    with trio.fail_after(5):
        async with httpx.AsyncClient(base_url=gateway.base_url) as client:
            missing = await client.get("/no/such/route")
            wrong_method = await client.post("/health")
    assert missing.status_code == 404
    assert missing.json() == {"error": {"code": "NOT_FOUND", "message": "Not Found"}}
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "METHOD_NOT_ALLOWED"


async def test_shutdown_is_clean_and_prompt(nursery: trio.Nursery, tmp_path: Path) -> None:
    config, paths = make_config(tmp_path)
    gw = await start_gateway(nursery, config, paths)
    async with httpx.AsyncClient(base_url=gw.base_url) as client:
        assert (await client.get("/health")).status_code == 200
    with trio.fail_after(5):
        await gw.stop()
    async with httpx.AsyncClient(base_url=gw.base_url) as client:
        try:
            await client.get("/health")
        except httpx.ConnectError:
            pass
        else:
            raise AssertionError("still answering after shutdown")


def _spawn(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "GATEWAY_SERVER_PORT": "0",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _read_until(proc: subprocess.Popen[str], pattern: str, lines: list[str]) -> re.Match[str]:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        m = re.search(pattern, line)
        if m:
            return m
    raise AssertionError("process ended before printing " + pattern + ":\n" + "".join(lines))


def test_serve_as_a_process_generates_a_token_and_stops_on_sigterm(tmp_path: Path) -> None:
    proc = _spawn(tmp_path, "serve")
    lines: list[str] = []
    try:
        token = _read_until(proc, r"token:\s+(\S+)\s+\(new", lines).group(1)
        port = int(_read_until(proc, r"listening on http://127\.0\.0\.1:(\d+)", lines).group(1))
        r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
        assert r.status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=CLI_TIMEOUT) == 0
    finally:
        proc.kill()
        proc.wait()
    token_file = tmp_path / "data" / "gateway" / "token"
    assert token_file.read_text().strip() == token
    assert len(token) >= 32
    assert token_file.stat().st_mode & 0o777 == 0o600
    log_text = (tmp_path / "data" / "gateway" / "logs" / "gateway.log").read_text()
    assert token not in log_text, "the token must never be logged"
    assert "gateway stopped" in log_text

    # The second start reuses the token and shows it shortened only.
    proc = _spawn(tmp_path, "serve")
    lines = []
    try:
        shown = _read_until(proc, r"token:\s+(\S+)\s+\(from", lines).group(1)
        _read_until(proc, r"listening on", lines)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=CLI_TIMEOUT) == 0
    finally:
        proc.kill()
        proc.wait()
    assert token not in "".join(lines)
    assert shown == f"{token[:4]}…{token[-4:]}"


def test_a_bad_config_exits_with_the_config_code(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[server]\nport = "eighty"\n')
    r = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(cfg)], capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 78
    assert "server.port" in r.stderr
    assert "Traceback" not in r.stderr


def _first_delta(gw: RunningGateway) -> trio.Event:
    """An event set when the gateway sequences its first `text_delta` (a turn is really in flight)."""
    seen = trio.Event()

    def listener(event: EventRow) -> None:
        if event.type == "text_delta":
            seen.set()

    gw.runtime.event_listeners.append(listener)
    return seen


async def _ask(gw: RunningGateway, words: int, out: dict[str, httpx.Response | Exception]) -> None:
    body = {"message": " ".join(f"w{i}" for i in range(words))}
    headers = {"Authorization": f"Bearer {gw.token}"}
    try:
        async with httpx.AsyncClient(base_url=gw.base_url, timeout=60) as client:
            out["response"] = await client.post("/api/agent", json=body, headers=headers)
    except httpx.HTTPError as exc:
        out["response"] = exc


async def test_shutdown_drains_a_request_in_flight(nursery: trio.Nursery, tmp_path: Path) -> None:
    # 20 words at 20 ms: the answer needs ~0.4 s, well inside the 5 s drain.
    config, paths = make_config(tmp_path, server={"graceful_timeout": 5.0}, providers={"echo": {"delay_ms": 20}})
    gw = await start_gateway(nursery, config, paths)
    out: dict[str, httpx.Response | Exception] = {}
    with trio.fail_after(20):
        seen = _first_delta(gw)
        async with trio.open_nursery() as inner:
            inner.start_soon(_ask, gw, 20, out)
            await seen.wait()
            gw.runtime.shutdown.set()  # what the first SIGINT/SIGTERM does
        await gw.stop()
    response = out["response"]
    assert isinstance(response, httpx.Response), f"the request in flight was cut off: {response!r}"
    assert response.status_code == 200
    assert response.json()["reply"] == " ".join(f"w{i}" for i in range(20))


async def test_shutdown_cancels_what_outlasts_the_drain(nursery: trio.Nursery, tmp_path: Path) -> None:
    # 2000 words at 50 ms would take 100 s; the drain allows 0.5 s, then the rest is cancelled.
    config, paths = make_config(tmp_path, server={"graceful_timeout": 0.5}, providers={"echo": {"delay_ms": 50}})
    gw = await start_gateway(nursery, config, paths)
    out: dict[str, httpx.Response | Exception] = {}
    with trio.fail_after(15):
        seen = _first_delta(gw)
        async with trio.open_nursery() as inner:
            inner.start_soon(_ask, gw, 2000, out)
            await seen.wait()
            await gw.stop()
    assert isinstance(out["response"], Exception), "the 100 s turn cannot have answered"
    # The turn cut off by the shutdown is not left `running`: its end was recorded on the way out.
    conn = sqlite3.connect(paths.db_file)
    try:
        (session_id, state), *others = conn.execute("SELECT session_id, state FROM turns").fetchall()
        events = ev_db.events_after(conn, session_id, 0)
    finally:
        conn.close()
    assert others == [] and state == "interrupted"
    # Every event sent before the stop was stored, and the stored stream ends the turn (a resuming client sees it).
    deltas = [e.seq for e in events if e.type == "text_delta"]
    assert deltas and deltas == list(range(deltas[0], deltas[0] + len(deltas)))
    assert events[-1].type == "turn_ended" and events[-1].data["state"] == "interrupted"
    assert events[-2].type == "error" and events[-2].data["code"] == "INTERRUPTED"  # what a v1 client sees


async def test_api_enabled_false_turns_off_the_e2e_api_only(nursery: trio.Nursery, tmp_path: Path) -> None:
    config, paths = make_config(tmp_path, api={"enabled": False})
    gw = await start_gateway(nursery, config, paths)
    headers = {"Authorization": f"Bearer {gw.token}"}
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=gw.base_url) as client:
            assert (await client.get("/health")).status_code == 200
            assert (await client.get("/files", params={"path": "/etc/hostname"}, headers=headers)).status_code == 404
            assert (await client.post("/upload", files={"file": ("a", b"x")}, headers=headers)).status_code == 404
            assert (await client.get("/api/sessions", headers=headers)).status_code == 200  # REST stays
        with pytest.raises(trio_websocket.HandshakeError):
            async with trio_websocket.open_websocket_url(gw.ws_url + "/ws"):
                pass
        await gw.stop()
