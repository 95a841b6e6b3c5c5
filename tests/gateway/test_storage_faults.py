"""A full disk under a running gateway (SQLite's own `max_page_count`): 503, nothing unstored acknowledged, recovery."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import trio

from gateway.ws.client import connect
from tests.conftest import make_config, start_gateway
from tests.gateway.connectors.helpers import admin, put, wait_for

SHARED = "faults-shared-token-0123456789"
BATCH = "/v1/connectors/external/ext/events/batch"
SINGLE = "/v1/connectors/external/ext/events"


def _limit_pages(conn: sqlite3.Connection, pages: int | None) -> int:
    """Cap the database at its current size (the disk is "full"), or lift the cap."""
    n = pages or int(conn.execute("PRAGMA page_count").fetchone()[0])
    conn.execute(f"PRAGMA max_page_count = {n}")
    return n


def _batch(start: int, n: int = 40) -> dict[str, Any]:
    events = [
        {"event_id": f"e{i}", "thread": {"path": ["full", str(i % 3)]}, "content": f"event {i} " + "x" * 300}
        for i in range(start, start + n)
    ]
    return {"protocol_version": 2, "events": events}


def _stored(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("SELECT event_key FROM ingress_events WHERE connector = 'external/ext'")]
    finally:
        conn.close()


async def _storage_status(c: httpx.AsyncClient) -> tuple[int, str]:
    r = await c.get("/api/status")
    body = r.json()
    services = body["services"] if r.status_code == 200 else body["error"]["details"]["services"]
    storage = next(s for s in services if s["service"] == "storage")
    return r.status_code, str(storage["status"])


async def test_a_full_disk_is_503_acknowledges_nothing_unstored_and_recovers(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    # The cap is SQLite's own, not the disk's: a probe would find the disk writable and reopen (lifting the cap).
    config, paths = make_config(tmp_path, storage={"probe_interval": 3600})
    gw = await start_gateway(nursery, config, paths)
    store = gw.runtime.store
    acked: list[str] = []
    with trio.fail_after(60):
        async with (
            admin(gw) as a,
            httpx.AsyncClient(base_url=gw.base_url, headers={"Authorization": f"Bearer {SHARED}"}, timeout=30) as c,
        ):
            r = await put(a, "external", "ext", {"shared_token": {"value": SHARED}})
            assert r.status_code == 201, r.text
            assert await _storage_status(a) == (200, "ok")
            await store.call(_limit_pages, None)
            refused_at = None
            for b in range(0, 200 * 40, 40):
                r = await c.post(BATCH, json=_batch(b))
                if r.status_code == 503:
                    refused_at = b
                    break
                assert r.status_code == 200, r.text
                acked += [x["event_id"] for x in r.json()["results"] if x["status"] == "accepted"]
            assert refused_at is not None, "the capped database never filled up"
            err = r.json()["error"]
            assert err["code"] in ("SERVICE_UNAVAILABLE", "STORAGE_UNAVAILABLE") and "retry" in err["message"], err
            # A single event is refused the same way, and status says why.
            r = await c.post(
                SINGLE, json={"event_id": "single", "thread": {"path": ["full", "s"]}, "content": "x" * 3000}
            )
            assert r.status_code == 503, r.text
            assert await _storage_status(a) == (503, "error")
            # Other writes: a REST route is 503 when its rows need new pages (a small row may still fit in a page's
            # free space, and is then really stored), never a 500.
            r = await a.post("/api/sessions", json={"title": "x" * 200})
            if r.status_code == 503:
                assert r.json()["error"]["code"] == "STORAGE_UNAVAILABLE" and r.headers["retry-after"], r.text
            else:
                assert r.status_code == 201, r.text
                assert (await a.get(f"/api/sessions/{r.json()['key']}")).status_code == 200
            # A /ws message gets an error frame at once (or, if its turn fit, the turn starts): no hang, no 500.
            async with connect(gw.ws_url + "/ws", gw.token, chat_id=99) as ws:
                await ws.send_message("hello " * 2000)
                with trio.fail_after(10):
                    frame = await ws.receive()
                assert frame["type"] in ("error", "text_delta", "system_status"), frame
            stored = _stored(paths.db_file)
            assert not {f"e{i}" for i in range(refused_at, refused_at + 40)} & set(stored)
            assert "single" not in stored
            # Space returns: the refused batch is accepted now (it was never stored, so it is no duplicate).
            await store.call(_limit_pages, 1 << 30)
            r = await c.post(BATCH, json=_batch(refused_at))
            assert r.status_code == 200, r.text
            assert {x["status"] for x in r.json()["results"]} == {"accepted"}
            acked += [x["event_id"] for x in r.json()["results"]]
            assert await _storage_status(a) == (200, "ok")

            # The rest of the gateway recovers too: every stored event reaches the agent and every turn ends.
            async def settled() -> bool:
                conn = sqlite3.connect(paths.db_file)
                try:
                    cursor = conn.execute("SELECT last_id FROM ingress_cursor").fetchone()
                    top = conn.execute("SELECT max(id) FROM ingress_events").fetchone()[0]
                    busy = conn.execute("SELECT count(*) FROM turns WHERE state IN ('queued', 'running')").fetchone()
                finally:
                    conn.close()
                return bool(cursor) and cursor[0] == top and busy[0] == 0

            await wait_for(settled, timeout=30, interval=0.1)
    stored = _stored(paths.db_file)
    assert len(stored) == len(set(stored))
    assert set(acked) <= set(stored)
    conn = sqlite3.connect(paths.db_file)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
    with trio.fail_after(10):
        await gw.stop()
