"""Parked sessions (idle, no actor, a /ws client still listening) in `GET /api/status` and `gateway status`."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import trio

from gateway.daemon import control
from gateway.daemon.lock import acquire
from gateway.daemon.term import Term
from tests.conftest import make_config, start_gateway
from tests.gateway.wshelpers import client, deltas
from tests.gateway.wshelpers import until as until_frame


async def _sessions_until(http: httpx.AsyncClient, want: dict[str, int]) -> dict[str, Any]:
    """Poll /api/status until its `sessions` service reports `want`; its details then."""
    while True:
        r = await http.get("/api/status")
        assert r.status_code == 200, r.text
        details: dict[str, Any] = next(s for s in r.json()["services"] if s["service"] == "sessions")["details"]
        if {k: details[k] for k in want} == want:
            return details
        await trio.sleep(0.15)  # polled over HTTP, under the API's rate limit (600 a minute)


async def test_status_reports_a_parked_session(nursery: trio.Nursery, tmp_path: Path) -> None:
    # The default configuration: a session a client listens to parks a quarter of a second after its turn (the
    # bound below fails with the 10 s it used to wait, during which every such session stayed live).
    config, paths = make_config(tmp_path)
    gw = await start_gateway(nursery, config, paths)
    headers = {"Authorization": f"Bearer {gw.token}"}
    async with httpx.AsyncClient(base_url=gw.base_url, headers=headers) as http:
        with trio.fail_after(30):
            async with client(gw, chat_id=7) as c:
                await c.send_message("hello")
                assert deltas(await until_frame(c, "result")) == "hello"
                with trio.fail_after(5):
                    details = await _sessions_until(http, {"live_sessions": 0, "parked_sessions": 1})
                # The fields that were there before parked sessions are kept.
                assert {"live_sessions", "started", "retired", "crashed"} <= details.keys()
                assert details["started"] >= 1
                body = (await http.get("/api/status")).json()
                assert body["sessions"] == 1  # stored sessions, as before
                # `gateway status` shows them beside the live ones (this process plays the daemon's part in the lock).
                lock = acquire(paths)
                lock.update(url=gw.base_url, port=int(gw.base_url.rsplit(":", 1)[1]))
                try:
                    data = await trio.to_thread.run_sync(control.collect_status, config, paths)
                finally:
                    lock.release()
                out = io.StringIO()
                control.print_status(data, Term(out))
                assert "    in memory:" in out.getvalue()
                line = out.getvalue().split("    in memory:", 1)[1].splitlines()[0]
                assert line.strip() == "0 live, 1 parked, 0 hibernated", line
                # A new message wakes it; idle again, it parks again.
                await c.send_message("again")
                assert deltas(await until_frame(c, "result")) == "again"
                with trio.fail_after(5):
                    await _sessions_until(http, {"live_sessions": 0, "parked_sessions": 1})
            # The client left: nothing listens, so the parked session is forgotten (hibernated, stored).
            await _sessions_until(http, {"live_sessions": 0, "parked_sessions": 0})
            await gw.stop()
