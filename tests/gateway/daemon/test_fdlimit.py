"""The open-files limit of a real gateway process started under a low RLIMIT_NOFILE: raised, or the cap fitted."""

from __future__ import annotations

import logging
import re
import resource
import subprocess
import sys
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import msgspec
import pytest
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from gateway.daemon.fdlimit import RESERVED, AcceptErrorDamper
from gateway.ws.client import connect
from tests.gateway.harness import Site


def _limit(soft: int, hard: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return apply


def _serve(site: Site, soft: int, hard: int) -> tuple[subprocess.Popen[bytes], str]:
    with (site.root / "serve.out").open("ab") as out:
        proc = subprocess.Popen(site.argv("serve"), env=site.env, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=_limit(soft, hard))  # fmt: skip
    site._procs.append(proc)
    url = site.wait_serving().url
    assert url is not None
    return proc, url


def _open_files(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-files line in /proc/PID/limits")


def test_a_low_soft_limit_is_raised_to_what_the_connections_need(tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 512 + RESERVED  # ws.max_connections' default
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"this machine's hard limit ({hard}) is below {wanted}")
    site = Site(tmp_path)
    try:
        proc, _ = _serve(site, 64, hard)
        soft_now, hard_now = _open_files(proc.pid)
        assert soft_now >= wanted and hard_now == hard
        assert "open-files limit" not in site.output()
    finally:
        site.cleanup()


async def _fill(url: str, token: str, cap: int) -> str:
    """Open `cap` authenticated sockets, then one more; while they are open /health must answer. Return the code
    the extra socket was refused with."""
    ws_url = url.replace("http://", "ws://") + "/ws"
    with trio.fail_after(90):
        return await _fill_within(ws_url, url, token, cap)


async def _fill_within(ws_url: str, url: str, token: str, cap: int) -> str:
    async with AsyncExitStack() as stack:
        for _ in range(cap):
            await stack.enter_async_context(connect(ws_url, token))
        # The next is refused at once, before its auth frame: read what it is told.
        async with open_websocket_url(ws_url) as extra:
            refused = msgspec.json.decode(await extra.get_message())
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            assert (await http.get("/health")).json()["connections"] == cap
            status = await http.get("/api/status", headers={"Authorization": f"Bearer {token}"})
            assert status.status_code == 200
            # A burst of refused sockets on top may still run out of descriptors for a moment: the gateway
            # recovers, and the log says so once instead of a traceback ten times a second.
            async with trio.open_nursery() as nursery:
                for _ in range(2 * cap):
                    nursery.start_soon(_knock, ws_url)
            assert (await http.get("/health")).json()["connections"] == cap
    return str(refused["code"])


async def _knock(ws_url: str) -> None:
    try:
        async with open_websocket_url(ws_url) as ws:
            await ws.get_message()
    except (OSError, ConnectionClosed, HandshakeError):
        pass  # refused one way or another: all this burst is for is to use descriptors


def test_a_hard_limit_too_low_lowers_the_cap_with_one_warning(tmp_path: Path) -> None:
    site = Site(tmp_path)
    try:
        _serve(site, 100, 100)
        lines = [line for line in site.output().splitlines() if "open-files limit" in line]
        assert len(lines) == 1, site.output()
        found = re.search(r"lowered it to (\d+)", lines[0])
        assert found is not None and "LimitNOFILE" in lines[0]
        cap = int(found.group(1))
        assert 1 <= cap < 100
        token = site.paths.token_file.read_text().strip()
        url = site.lock().url  # type: ignore[union-attr]
        code = trio.run(lambda: _fill(str(url), token, cap))
        assert code == "TOO_MANY_CONNECTIONS"
        log = site.output()
        assert log.count("accept returned") <= 2 and "Traceback" not in log, log
    finally:
        site.cleanup()


def test_the_accept_error_damper_lets_one_line_through_a_minute() -> None:
    now = [0.0]
    damper = AcceptErrorDamper(every=60, clock=lambda: now[0])

    def record() -> logging.LogRecord:
        try:
            raise OSError(24, "Too many open files")
        except OSError:
            return logging.LogRecord("trio.serve_listeners", logging.ERROR, "x", 1, "accept returned %s", ("EMFILE",),
                                     sys.exc_info())  # fmt: skip

    passed = []
    for _ in range(600):  # a minute of trio's retries, ten a second
        r = record()
        if damper.filter(r):
            passed.append(r)
        now[0] += 0.1
    now[0] = 60.0
    r = record()
    assert damper.filter(r)
    assert len(passed) == 1 and passed[0].exc_info is None
    assert r.getMessage() == "accept returned EMFILE (599 more since the last report; see `ulimit -n`)"
