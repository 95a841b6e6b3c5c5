"""`gateway stop`, `restart` and token changes against real gateway processes: the drain is waited for, a restart
keeps the environment, a new token is applied live."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.daemon.lock import lock_path
from tests.gateway.harness import CLI_TIMEOUT, Site, free_port, wait_for


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    yield s
    s.cleanup()


def _running_turns(site: Site) -> int | None:
    try:
        with sqlite3.connect(f"{site.paths.db_file.as_uri()}?mode=ro", uri=True, timeout=1) as conn:
            (count,) = conn.execute("SELECT count(*) FROM turns WHERE state = 'running'").fetchone()
    except sqlite3.Error:
        return None
    return int(count) or None


def test_stop_waits_for_the_drain_it_asked_for(site: Site) -> None:
    # A 7 s drain (longer than the 5 s the old `stop` waited) and a turn of 2000 words at 50 ms that outlasts it:
    # the gateway cannot exit before its drain ends, and then exits by itself, cleanly.
    config = site.config_file.read_text().replace("graceful_timeout = 2.0", "graceful_timeout = 7.0")
    site.config_file.write_text(config + "\n[providers.echo]\ndelay_ms = 50\n")
    proc = site.spawn("serve")
    info = site.wait_serving()
    assert info.graceful_timeout == 7.0, "the lock tells `stop` how long the gateway drains"
    token = site.paths.token_file.read_text().strip()
    outcome: dict[str, object] = {}

    def ask() -> None:
        try:
            outcome["response"] = httpx.post(
                f"{info.url}/api/agent",
                json={"message": " ".join(["word"] * 2000)},
                headers={"Authorization": f"Bearer {token}"},
                timeout=CLI_TIMEOUT,
            )
        except httpx.HTTPError as exc:
            outcome["response"] = exc

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    try:
        wait_for(lambda: _running_turns(site), timeout=CLI_TIMEOUT, what="the turn to run")
        stop = site.cli("stop")
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert "SIGKILL" not in stop.stdout, stop.stdout
        assert f"gateway stopped (pid {info.pid})" in stop.stdout
        assert "up to 12 s" in stop.stdout, "graceful_timeout + 5 s"
        assert proc.wait(timeout=CLI_TIMEOUT) == 0, "it ended its drain itself: not killed"
    finally:
        asker.join(timeout=CLI_TIMEOUT)
    assert not lock_path(site.paths).exists(), "a gateway that stops by itself releases its lock"
    assert "gateway stopped" in site.paths.log_file.read_text()


def test_restart_keeps_the_environment_the_gateway_was_started_with(tmp_path: Path) -> None:
    port = free_port()
    key = "sk-from-the-environment-0123456789"
    # The config file says port 0 (any); the gateway was started with its port and an API key in the environment,
    # as docs/config.md suggests for the key. `restart` runs from a shell that has neither.
    site = Site(tmp_path, GATEWAY_SERVER_PORT=str(port), GATEWAY_PROVIDERS_OPENAI_API_KEY=key)
    try:
        proc = site.spawn("serve")
        before = site.wait_serving()
        assert before.port == port
        shell = {
            k: v for k, v in site.env.items() if k not in ("GATEWAY_SERVER_PORT", "GATEWAY_PROVIDERS_OPENAI_API_KEY")
        }
        restart = subprocess.run(
            site.argv("restart"), env=shell, capture_output=True, text=True, timeout=CLI_TIMEOUT * 2
        )
        assert restart.returncode == 0, restart.stdout + restart.stderr
        assert proc.wait(timeout=CLI_TIMEOUT) == 0
        after = site.wait_serving(not_pid=before.pid)
        assert after.port == port, "GATEWAY_SERVER_PORT was kept"
        token = site.paths.token_file.read_text().strip()
        llm = httpx.get(f"{after.url}/api/app-config/llm", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert llm.status_code == 200 and llm.json()["api_key_configured"] is True, "the key was kept"
        # Nothing on disk holds the key: the environment was read from the running process, not stored.
        for path in site.paths.data_dir.rglob("*"):
            if path.is_file() and path.suffix != ".db":
                assert key.encode() not in path.read_bytes(), path
        assert key not in restart.stdout + restart.stderr
        assert site.cli("stop").returncode == 0
    finally:
        site.cleanup()


def test_restart_with_nothing_running_says_so_unless_asked_to_start(site: Site) -> None:
    r = site.cli("restart")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "gateway is not running: nothing to restart" in r.stdout and "--start-if-stopped" in r.stdout
    assert site.lock() is None, "nothing was started"

    started = site.cli("restart", "--start-if-stopped")
    assert started.returncode == 0, started.stdout + started.stderr
    info = site.wait_serving()
    assert f"gateway running again (pid {info.pid})" in started.stdout
    assert site.cli("stop").returncode == 0


def _status_code(url: str, token: str) -> int:
    return httpx.get(f"{url}/api/status", headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code


@pytest.mark.parametrize("how", ["rotate", "install"])
def test_a_new_token_is_applied_to_the_running_gateway(site: Site, how: str) -> None:
    proc = site.spawn("serve")
    info = site.wait_serving()
    assert info.url is not None and info.reload_token
    old = site.paths.token_file.read_text().strip()
    assert _status_code(info.url, old) == 200
    if how == "rotate":
        r = site.cli("token", "--rotate")
        new = r.stdout.strip()
    else:
        new = "a-new-token-given-to-install-0123"
        # No systemctl on PATH: the service part fails (and touches no real service), but the token is saved and
        # applied first.
        empty = site.root / "no-bin"
        empty.mkdir()
        env = {**site.env, "PATH": str(empty)}
        r = subprocess.run(site.argv("install", "--token", new), env=env, capture_output=True, text=True, timeout=60)
    assert f"the running gateway (pid {info.pid}) uses the new token now" in r.stderr, r.stderr
    assert site.paths.token_file.read_text().strip() == new
    assert _status_code(info.url, new) == 200
    assert _status_code(info.url, old) == 401, "the old token no longer works"
    status = site.cli("status")
    assert status.returncode == 0 and "refuses" not in status.stdout
    assert f"{new[:4]}…{new[-4:]}" in status.stdout
    assert proc.poll() is None, "applied live: the same process"
    assert new not in site.paths.log_file.read_text()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=CLI_TIMEOUT) == 0


def test_a_gateway_that_cannot_reload_is_reported_not_silently_left(site: Site) -> None:
    proc = site.spawn("serve")
    info = site.wait_serving()
    # A gateway of an older version: its lock does not claim SIGUSR2 (which would kill it).
    raw = lock_path(site.paths).read_text().replace('"reloadToken":true', '"reloadToken":false')
    lock_path(site.paths).write_text(raw)
    r = site.cli("token", "--rotate")
    assert r.returncode == 1
    assert f"the running gateway (pid {info.pid}) still uses the old token: `gateway restart` applies it" in r.stderr
    assert proc.poll() is None
    os.kill(info.pid, signal.SIGTERM)
    assert proc.wait(timeout=CLI_TIMEOUT) == 0


def test_a_gateway_whose_token_comes_from_its_environment_is_not_told_to_reload(tmp_path: Path) -> None:
    env_token = "a-token-from-the-environment-0123"
    site = Site(tmp_path, GATEWAY_SERVER_TOKEN=env_token)
    try:
        proc = site.spawn("serve")
        info = site.wait_serving()
        assert info.url is not None
        shell = {k: v for k, v in site.env.items() if k != "GATEWAY_SERVER_TOKEN"}
        r = subprocess.run(site.argv("token", "--rotate"), env=shell, capture_output=True, text=True, timeout=60)
        assert r.returncode == 1, r.stderr
        assert "takes its token from GATEWAY_SERVER_TOKEN in its environment" in r.stderr
        assert _status_code(info.url, env_token) == 200, "its token is unchanged"
        assert env_token not in r.stdout + r.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=CLI_TIMEOUT) == 0
    finally:
        site.cleanup()
