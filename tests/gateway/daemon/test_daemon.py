"""The process commands against real gateway processes: serve, status, second start, stale lock, --force, stop,
SIGUSR1 restart and logs --follow."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.daemon.lock import lock_path, read_lock
from gateway.daemon.procs import is_alive, listening_pids
from gateway.ws.identity import identity_fingerprint
from storage.sessions import get_or_create_session
from tests.gateway.harness import CLI_TIMEOUT, LineReader, Site, end_process, free_port, wait_for


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    yield s
    s.cleanup()


def test_start_status_second_start_refused_stop(site: Site) -> None:
    proc = site.spawn("start")
    info = site.wait_serving()
    assert info.pid == proc.pid
    assert info.port is not None and info.url == f"http://127.0.0.1:{info.port}"

    status = site.cli("status")
    assert status.returncode == 0, status.stderr
    assert "gateway is running" in status.stdout
    assert f"pid:         {proc.pid}" in status.stdout
    assert f"port:        {info.port}" in status.stdout
    assert f"identity:    {identity_fingerprint(site.paths)}" in status.stdout
    assert "\x1b[" not in status.stdout, "no colours when stdout is not a terminal"
    token = site.paths.token_file.read_text().strip()
    assert token not in status.stdout and f"{token[:4]}…{token[-4:]}" in status.stdout

    data = json.loads(site.cli("status", "--json").stdout)
    assert data["running"] is True
    assert (data["pid"], data["port"], data["url"], data["healthy"]) == (proc.pid, info.port, info.url, True)
    assert data["connections"] == 0 and data["sessions"] == 0 and data["uptime"] >= 0
    assert data["identity"] == identity_fingerprint(site.paths)
    assert data["token"] == f"{token[:4]}…{token[-4:]}"

    second = site.cli("serve")
    assert second.returncode == 1
    assert f"already running with config {site.paths.config_file} (pid {proc.pid}" in second.stderr
    assert "Traceback" not in second.stderr
    assert site.lock() is not None and site.lock() == info, "the refused start must leave the lock alone"

    stop = site.cli("stop")
    assert stop.returncode == 0, stop.stderr
    assert f"gateway stopped (pid {proc.pid})" in stop.stdout
    assert proc.wait(timeout=CLI_TIMEOUT) == 0
    assert not lock_path(site.paths).exists(), "a clean exit releases the lock"
    after = site.cli("status")
    assert after.returncode == 3 and "gateway is not running" in after.stdout
    assert json.loads(site.cli("status", "--json").stdout)["running"] is False


def test_a_stale_lock_after_sigkill_does_not_block_the_next_start(site: Site) -> None:
    first = site.spawn("serve")
    site.wait_serving()
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=CLI_TIMEOUT)
    held = read_lock(lock_path(site.paths))
    assert held is not None and held.pid == first.pid, "SIGKILL leaves the lock file behind"

    status = site.cli("status")
    assert status.returncode == 3
    assert f"pid {first.pid} is gone" in status.stdout

    second = site.spawn("serve")
    info = site.wait_serving(not_pid=first.pid)
    assert info.pid == second.pid
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=CLI_TIMEOUT) == 0


_HOLDER = """
import signal, socket, sys
s = socket.socket()
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a stubborn holder: only SIGKILL frees the port
print("listening", flush=True)
sys.stdin.read()
"""


def test_force_frees_a_port_held_by_another_process(site: Site) -> None:
    port = free_port()
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"listening\n"
        assert listening_pids(port) == {holder.pid}

        busy = site.cli("serve", "--port", str(port))
        assert busy.returncode == 1
        assert f"cannot listen on 127.0.0.1:{port}" in busy.stderr and "--force" in busy.stderr
        assert "Traceback" not in busy.stderr
        assert site.lock() is None, "a failed start releases the lock"

        proc = site.spawn("serve", "--port", str(port), "--force")
        info = site.wait_serving()
        assert info.pid == proc.pid and info.port == port
        assert holder.wait(timeout=CLI_TIMEOUT) == -signal.SIGKILL
        assert f"--force: stopped pid {holder.pid} listening on port {port} (SIGKILL: {holder.pid})" in site.output()
        assert is_alive(os.getpid())
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_stop_with_a_timeout_escalates_to_sigkill(site: Site) -> None:
    proc = site.spawn("serve")
    info = site.wait_serving()
    # A frozen process cannot act on SIGTERM: the same as a gateway stuck in its shutdown.
    os.kill(info.pid, signal.SIGSTOP)
    stop = site.cli("stop", "--timeout", "300")  # what it did is in its answer and in the process's end, not a time
    assert stop.returncode == 0, stop.stderr
    assert f"pid {info.pid} did not stop within 300 ms: killed (SIGKILL)" in stop.stdout
    assert proc.wait(timeout=CLI_TIMEOUT) == -signal.SIGKILL
    assert not lock_path(site.paths).exists(), "stop removes the lock a killed gateway could not release"


def test_stop_force_kills_at_once_and_stop_when_stopped_is_fine(site: Site) -> None:
    proc = site.spawn("serve")
    site.wait_serving()
    stop = site.cli("stop", "--force")
    assert stop.returncode == 0 and "SIGKILL" in stop.stdout
    assert proc.wait(timeout=CLI_TIMEOUT) == -signal.SIGKILL
    again = site.cli("stop")
    assert again.returncode == 0 and "not running" in again.stdout


def _add_session(site: Site) -> None:
    with sqlite3.connect(site.paths.db_file, timeout=10, isolation_level=None) as conn:
        get_or_create_session(conn, "test", "42", "", now_ms=1)


@pytest.mark.parametrize("respawn", [True, False], ids=["respawn", "in-process"])
def test_sigusr1_restart_keeps_the_port_and_the_data(tmp_path: Path, respawn: bool) -> None:
    env = {"GATEWAY_ALLOW_SIGUSR1_RESTART": "1"}
    site = Site(tmp_path, port=free_port(), **env)
    if respawn:
        site.env.pop("GATEWAY_NO_RESPAWN")
    try:
        proc = site.spawn("serve")
        before = site.wait_serving()
        assert before.sigusr1
        _add_session(site)
        token = site.paths.token_file.read_text()

        restart = site.cli("restart")
        assert restart.returncode == 0, restart.stdout + restart.stderr
        assert f"sent SIGUSR1 to pid {before.pid}" in restart.stdout
        after = site.wait_serving()
        assert after.port == before.port and after.created_at != before.created_at
        if respawn:
            assert proc.wait(timeout=CLI_TIMEOUT) == 0, "the parent exits once its detached child is spawned"
            assert after.pid != before.pid
        else:
            assert after.pid == before.pid and proc.poll() is None
        assert site.paths.token_file.read_text() == token
        data = json.loads(site.cli("status", "--json").stdout)
        assert data["sessions"] == 1 and data["port"] == before.port
        assert httpx.get(f"{after.url}/health", timeout=5).status_code == 200

        assert site.cli("stop").returncode == 0
        wait_for(lambda: True if not is_alive(after.pid) else None, timeout=CLI_TIMEOUT, what="the gateway to exit")
    finally:
        site.cleanup()


@pytest.mark.parametrize(
    ("marker", "supervisor"),
    [({"GATEWAY_SERVICE_MARKER": "test"}, "test"), ({"INVOCATION_ID": "0f2b9c3e"}, "systemd")],
    ids=["marker", "systemd-invocation-id"],
)
def test_sigusr1_under_a_supervisor_exits_with_the_restart_code(
    tmp_path: Path, marker: dict[str, str], supervisor: str
) -> None:
    # Respawning is not disabled here: under a supervisor the gateway exits instead of respawning.
    site = Site(tmp_path, GATEWAY_ALLOW_SIGUSR1_RESTART="1")
    site.env.update(marker)
    site.env.pop("GATEWAY_NO_RESPAWN")
    try:
        proc = site.spawn("serve")
        info = site.wait_serving()
        assert info.supervisor == supervisor
        os.kill(info.pid, signal.SIGUSR1)
        assert proc.wait(timeout=CLI_TIMEOUT) == 75
        assert not lock_path(site.paths).exists()
    finally:
        site.cleanup()


def test_restart_without_sigusr1_stops_and_starts_in_the_background(site: Site) -> None:
    proc = site.spawn("serve")
    before = site.wait_serving()
    assert not before.sigusr1
    restart = site.cli("restart")
    assert restart.returncode == 0, restart.stdout + restart.stderr
    assert proc.wait(timeout=CLI_TIMEOUT) == 0
    after = site.wait_serving()
    assert after.pid != before.pid and "gateway running again" in restart.stdout
    assert site.cli("stop").returncode == 0


def test_logs_prints_the_tail_and_follow_shows_new_lines(site: Site) -> None:
    proc = site.spawn("serve")
    site.wait_serving()
    assert "listening on" in site.paths.log_file.read_text()

    def health_logged() -> str | None:
        # The last line: the request log's line for the /health that found it serving (written after the answer).
        lines = site.paths.log_file.read_text().splitlines()
        return lines[-1] if lines and "GET /health 200" in lines[-1] else None

    last = wait_for(health_logged, timeout=CLI_TIMEOUT, what="the request log line of /health")
    tail = site.cli("logs", "--lines", "1")
    assert tail.returncode == 0
    assert tail.stdout.splitlines() == [last]

    follower = subprocess.Popen(site.argv("logs", "--follow", "-n", "1"), env=site.env, stdout=subprocess.PIPE)
    code: int | None = None
    try:
        assert follower.stdout is not None
        reader = LineReader(follower.stdout)
        reader.wait_line(last, timeout=CLI_TIMEOUT)  # the tail is out: it follows from here
        # Lines written after that: one appended here, then the gateway's own shutdown lines.
        with site.paths.log_file.open("a") as fh:
            fh.write("a line appended by the test\n")
        reader.wait_line("a line appended by the test", timeout=CLI_TIMEOUT)
        proc.send_signal(signal.SIGTERM)
        reader.wait_line("gateway stopped", timeout=CLI_TIMEOUT)
        assert proc.wait(timeout=CLI_TIMEOUT) == 0
        # Rotation, as RotatingFileHandler does it: the file is renamed and a new one started.
        site.paths.log_file.rename(site.paths.log_file.with_suffix(".log.1"))
        site.paths.log_file.write_text("first line of the new file\n")
        reader.wait_line("first line of the new file", timeout=CLI_TIMEOUT)
    finally:
        # Ctrl-C, which it catches even when the suite runs with SIGINT ignored (a background job); one that does
        # not end within the bound is killed (None), never left running.
        code = end_process(follower, signal.SIGINT, timeout=15)
    assert code == 0, "Ctrl-C ends logs --follow cleanly"
    assert proc.wait(timeout=CLI_TIMEOUT) == 0
    token = site.paths.token_file.read_text().strip()
    assert token not in "".join(reader.seen)


def test_logs_without_a_log_file_says_so(site: Site) -> None:
    r = site.cli("logs")
    assert r.returncode == 1 and "no log file yet" in r.stdout


def test_force_replaces_the_gateway_holding_the_lock(site: Site) -> None:
    first = site.spawn("serve")
    before = site.wait_serving()
    second = site.spawn("serve", "--force")
    after = site.wait_serving(not_pid=before.pid)
    assert after.pid == second.pid
    assert first.wait(timeout=CLI_TIMEOUT) == 0, "SIGTERM first: the old gateway shuts down cleanly"
    assert f"--force: stopping the gateway holding the lock (pid {before.pid};" in site.output()
    assert site.cli("stop").returncode == 0
    assert second.wait(timeout=CLI_TIMEOUT) == 0


def test_restart_force_kills_and_starts_anew_even_when_sigusr1_is_allowed(tmp_path: Path) -> None:
    site = Site(tmp_path, GATEWAY_ALLOW_SIGUSR1_RESTART="1")
    try:
        proc = site.spawn("serve")
        before = site.wait_serving()
        assert before.sigusr1, "without --force this restart would be a SIGUSR1"
        restart = site.cli("restart", "--force")
        assert restart.returncode == 0, restart.stdout + restart.stderr
        assert "SIGUSR1" not in restart.stdout and "started pid" in restart.stdout
        assert proc.wait(timeout=CLI_TIMEOUT) == -signal.SIGKILL
        after = site.wait_serving(not_pid=before.pid)
        assert f"gateway running again (pid {after.pid})" in restart.stdout
        assert site.cli("stop").returncode == 0
    finally:
        site.cleanup()


def test_token_shows_one_token_and_rotate_replaces_it(tmp_path: Path) -> None:
    site = Site(tmp_path)
    first = site.cli("token")
    assert first.returncode == 0, first.stderr
    token = first.stdout.strip()
    assert len(token) >= 32 and site.paths.token_file.read_text().strip() == token
    assert site.cli("token").stdout.strip() == token, "showing the token never changes it"

    rotated = site.cli("token", "--rotate")
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.strip()
    assert len(new) >= 32 and new != token
    assert site.paths.token_file.read_text().strip() == new
    assert site.paths.token_file.stat().st_mode & 0o777 == 0o600
    assert "not running; it will use the new token when it starts" in rotated.stderr and new not in rotated.stderr
    assert site.cli("token").stdout.strip() == new

    # A token written in the config file is not the CLI's to rotate.
    site.config_file.write_text(
        site.config_file.read_text().replace("[server]\n", '[server]\ntoken = "a-strong-token-of-sufficient-length"\n')
    )
    refused = site.cli("token", "--rotate")
    assert refused.returncode == 78 and "server.token" in refused.stderr
    assert site.paths.token_file.read_text().strip() == new


def _run_on_a_terminal(argv: list[str], env: dict[str, str]) -> tuple[int, bytes]:
    """Run `argv` with its stdout on a pseudo-terminal; return its exit code and everything it wrote."""
    import pty
    import select

    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, env=env, stdout=slave, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + CLI_TIMEOUT
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        return proc.wait(timeout=CLI_TIMEOUT), out
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_colours_on_a_terminal_only(site: Site) -> None:
    env = {k: v for k, v in site.env.items() if k != "NO_COLOR"}
    env["TERM"] = "xterm-256color"
    piped = subprocess.run(site.argv("status"), env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT)
    assert piped.returncode == 3 and "error: gateway is not running" in piped.stdout
    assert "\x1b[" not in piped.stdout
    code, shown = _run_on_a_terminal(site.argv("status"), env)
    assert code == 3
    assert "\x1b[31;1m✘ gateway is not running\x1b[0m".encode() in shown
    code, plain = _run_on_a_terminal(site.argv("status"), {**env, "NO_COLOR": "1"})
    assert code == 3 and b"gateway is not running" in plain and b"\x1b[" not in plain


def test_secrets_rotate_key_and_a_missing_key_said_in_one_line(site: Site) -> None:
    from storage import secrets as secrets_db
    from storage.db import open_db

    canary = "sealed-CANARY-7c9e1a3b5d7f"
    conn = open_db(site.paths.db_file, key_file=site.paths.secrets_key_file)
    secrets_db.put_secret(conn, "connector/http/app/bearer_token", canary, now_ms=1)
    conn.close()
    old_key = site.paths.secrets_key_file.read_bytes()
    # Refused while a gateway runs on this config: it holds the old key in memory.
    proc = site.spawn("serve")
    site.wait_serving()
    busy = site.cli("secrets", "rotate-key")
    assert busy.returncode == 1 and "gateway stop" in busy.stderr, busy.stderr
    assert site.cli("stop").returncode == 0 and proc.wait(timeout=CLI_TIMEOUT) == 0
    rotated = site.cli("secrets", "rotate-key")
    assert rotated.returncode == 0 and "1 sealed value(s) re-sealed" in rotated.stderr, rotated.stderr
    assert site.paths.secrets_key_file.read_bytes() != old_key
    conn = open_db(site.paths.db_file, key_file=site.paths.secrets_key_file)
    assert secrets_db.get_secret(conn, "connector/http/app/bearer_token") == canary
    conn.close()
    # The database without its key (a copy, a lost file): the gateway says so in one line and exits 78.
    site.paths.secrets_key_file.unlink()
    refused = site.cli("serve")
    assert refused.returncode == 78, refused.stderr
    lines = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "secrets.key is missing" in lines[0] and "Traceback" not in refused.stderr, lines
