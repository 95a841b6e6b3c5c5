"""External connector ingress: batch and single events, idempotency, rate limits, limits, dispatch to the agent."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import msgspec
import trio

from storage import ingress as ingress_db
from tests.conftest import RunningGateway, make_config, start_gateway
from tests.gateway.connectors.helpers import admin, put, wait_for

SHARED = "shared-token-for-tests-123456"


async def _gateway(nursery: trio.Nursery, tmp_path: Path, **extra: Any) -> RunningGateway:
    config, paths = make_config(tmp_path)
    gw = await start_gateway(nursery, config, paths)
    async with admin(gw) as c:
        r = await put(c, "external", "ext", {"shared_token": {"value": SHARED}, "platform": "demo", **extra})
        assert r.status_code == 201, r.text
    return gw


def client(gw: RunningGateway, token: str = SHARED) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=gw.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def ev(event_id: str, text: str = "hello", path: list[str] | None = None, **more: Any) -> dict[str, Any]:
    return {"event_id": event_id, "thread": {"path": path or ["room", "1"]}, "content": text, **more}


BATCH = "/v1/connectors/external/ext/events/batch"
SINGLE = "/v1/connectors/external/ext/events"


async def test_batch_is_ordered_not_atomic_and_idempotent(nursery: trio.Nursery, tmp_path: Path) -> None:
    gw = await _gateway(nursery, tmp_path)
    with trio.fail_after(30):
        async with client(gw) as c:
            events = [
                ev("a"),
                {"event_id": "bad", "thread": "not-an-object"},
                ev("b", path=["room", "2"]),
                ev("a"),  # a duplicate inside the same batch
                ev("b", text="changed"),  # same key, different payload
                {"event_id": "c"},  # no content, no session
                ev("d", routing_key="rk-1", path=[]),
            ]
            r = await c.post(BATCH, json={"protocol_version": 2, "events": events})
            assert r.status_code == 200, r.text
            res = r.json()["results"]
            assert [x["event_id"] for x in res] == ["a", "bad", "b", "a", "b", "c", "d"]
            assert [x["status"] for x in res] == [
                "accepted",
                "rejected",
                "accepted",
                "duplicate",
                "rejected",
                "rejected",
                "accepted",
            ]
            assert res[3]["session_id"] == res[0]["session_id"]
            assert res[2]["session_id"] != res[0]["session_id"]
            assert "different payload" in res[4]["reason"]
            # A replay of the whole batch answers duplicate with the original session ids.
            again = (await c.post(BATCH, json={"protocol_version": 2, "events": events})).json()["results"]
            assert again[0] == {"event_id": "a", "status": "duplicate", "session_id": res[0]["session_id"]}
            assert again[6]["status"] == "duplicate" and again[6]["session_id"] == res[6]["session_id"]
            # Protocol 1 is accepted (with its `text` spelling); an unknown version rejects every item.
            r1 = await c.post(
                BATCH, json={"protocol_version": 1, "events": [{"event_id": "p1", "text": "x", "routing_key": "k"}]}
            )
            assert r1.json()["results"][0]["status"] == "accepted"
            r9 = await c.post(BATCH, json={"protocol_version": 9, "events": [ev("z1"), ev("z2")]})
            assert r9.status_code == 200
            assert [x["status"] for x in r9.json()["results"]] == ["rejected", "rejected"]
            assert "protocol_version 9" in r9.json()["results"][0]["reason"]
            # Limits and malformed requests are clear 4xx answers.
            too_many = await c.post(BATCH, json={"events": [ev(f"m{i}") for i in range(65)]})
            assert too_many.status_code == 413 and too_many.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
            huge = await c.post(BATCH, json={"events": [ev("h", text="x" * (3 * 1024 * 1024))]})
            assert huge.status_code == 413
            # The limit is 2 MiB of body: just under it is taken, just over it is not.
            mib2 = 2 * 1024 * 1024
            just_under = await c.post(BATCH, json={"events": [ev("u", text="x" * (mib2 - 200))]})
            assert just_under.status_code == 200 and just_under.json()["results"][0]["status"] == "accepted"
            just_over = await c.post(BATCH, json={"events": [ev("o", text="x" * mib2)]})
            assert just_over.status_code == 413 and just_over.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
            assert (await c.post(BATCH, content=b"{not json")).status_code == 400
            assert (await c.post(BATCH, json={"events": "no"})).status_code == 422
        async with client(gw, token="wrong-token-000000000") as bad:
            r = await bad.post(BATCH, json={"events": [ev("x")]})
            assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHORIZED"
        async with httpx.AsyncClient(base_url=gw.base_url) as anon:
            assert (await anon.post(BATCH, json={"events": [ev("x")]})).status_code == 401
            assert (await anon.post("/v1/connectors/external/nope/events", json=ev("x"))).status_code == 404

    def count(conn: sqlite3.Connection) -> int:
        return ingress_db.count_events(conn, "external/ext")

    assert await gw.runtime.store.call(count) == 5
    await gw.stop()


async def test_single_events_and_the_agent_gets_them(nursery: trio.Nursery, tmp_path: Path) -> None:
    gw = await _gateway(nursery, tmp_path)
    with trio.fail_after(30):
        async with client(gw) as c:
            r = await c.post(SINGLE, json=ev("s1", text="ping"))
            assert r.status_code == 200 and r.json()["status"] == "accepted"
            sid = r.json()["session_id"]
            r = await c.post(SINGLE, json=ev("s1", text="ping"))
            assert r.json() == {"event_id": "s1", "status": "duplicate", "session_id": sid}
            r = await c.post(SINGLE, json=ev("s1", text="pong"))
            assert r.status_code == 409 and "different payload" in r.json()["error"]["message"]
            r = await c.post(SINGLE, json={"event_id": "s2", "content": "x"})
            assert r.status_code == 422 and "session" in r.json()["error"]["message"]
            r = await c.post(SINGLE, json={**ev("s3"), "protocol_version": 7})
            assert r.status_code == 422

        # The stored event reaches the agent after the commit: the echo provider answers it.
        def turns(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            return conn.execute("SELECT prompt, state FROM turns WHERE session_id = ?", (sid,)).fetchall()

        async def done() -> list[tuple[str, str]] | None:
            rows = await gw.runtime.store.call(turns)
            return rows if rows and rows[0][1] == "completed" else None

        assert (await wait_for(done))[0][0] == "ping"
    await gw.stop()


async def test_rate_limit_single_429_and_batch_items(nursery: trio.Nursery, tmp_path: Path) -> None:
    gw = await _gateway(nursery, tmp_path, ingress_events_per_second=2)
    with trio.fail_after(30):
        async with client(gw) as c:
            statuses = []
            for i in range(4):
                r = await c.post(SINGLE, json=ev(f"r{i}"))
                statuses.append(r.status_code)
                if r.status_code == 429:
                    assert int(r.headers["retry-after"]) >= 1
                    assert r.json()["error"]["code"] == "RATE_LIMITED"
            assert 429 in statuses and statuses[0] == 200
            r = await c.post(BATCH, json={"events": [ev(f"q{i}") for i in range(5)]})
            limited = [x for x in r.json()["results"] if x["status"] == "rate_limited"]
            assert limited and all(x["retry_after_ms"] > 0 for x in limited)
    await gw.stop()


async def test_concurrent_identical_requests_store_one_event(nursery: trio.Nursery, tmp_path: Path) -> None:
    gw = await _gateway(nursery, tmp_path)
    results: list[dict[str, Any]] = []
    with trio.fail_after(30):
        async with client(gw) as c:

            async def send() -> None:
                r = await c.post(SINGLE, json=ev("same", text="once"))
                assert r.status_code == 200, r.text
                results.append(r.json())

            async with trio.open_nursery() as n:
                for _ in range(20):
                    n.start_soon(send)
    assert sorted(x["status"] for x in results).count("accepted") == 1
    assert len({x["session_id"] for x in results}) == 1

    def count(conn: sqlite3.Connection) -> int:
        return ingress_db.count_events(conn, "external/ext")

    assert await gw.runtime.store.call(count) == 1
    await gw.stop()


async def test_the_same_event_spelled_otherwise_and_old_receipts_answer_duplicate(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """Events are fingerprinted from the bytes they came in; a re-sent event whose bytes differ (key order,
    spacing, unknown fields) is still `duplicate`, and so is one whose receipt holds the canonical fingerprint
    and payload every receipt had before (sorted-key encoding of the decoded event)."""
    from gateway.connectors.base import canonical, fingerprint
    from gateway.connectors.external import ExternalEvent

    def spelled(event_id: str, content: str = "hi", *, respelled: bool = False) -> bytes:
        if respelled:
            return (
                f'{{"metadata":{{"b":2,"a":1}},"content":"{content}","zz_unknown":true,'
                f'"thread":{{"path":["room","1"]}},"event_id":"{event_id}"}}'
            ).encode()
        return (
            f'{{"event_id": "{event_id}", "thread": {{"path": ["room", "1"]}}, "content": "{content}", '
            '"metadata": {"a": 1, "b": 2}}'
        ).encode()

    gw = await _gateway(nursery, tmp_path)
    # A receipt as the gateway wrote it before: fingerprint and payload of the canonical encoding.
    old = canonical(msgspec.json.decode(spelled("old"), type=ExternalEvent))
    spec = ingress_db.SessionSpec(candidates=(("external:ext", "path:room/1", ""),))
    item = ingress_db.IngressItem("old", fingerprint(old), "hi", old, spec)
    (stored,) = await gw.runtime.store.call(ingress_db.ingest, "external/ext", [item], now_ms=1)
    sid = stored.session_id
    assert stored.status == "accepted" and sid is not None
    headers = {"Content-Type": "application/json"}

    async def single(c: httpx.AsyncClient, body: bytes) -> dict[str, Any]:
        r = await c.post(SINGLE, content=body, headers=headers)
        assert r.status_code in (200, 409), r.text
        return dict(r.json())

    async def batch(c: httpx.AsyncClient, body: bytes) -> dict[str, Any]:
        r = await c.post(BATCH, content=b'{"events": [' + body + b"]}", headers=headers)
        assert r.status_code == 200, r.text
        return dict(r.json()["results"][0])

    with trio.fail_after(30):
        async with client(gw) as c:
            assert await single(c, spelled("s")) == {"event_id": "s", "status": "accepted", "session_id": sid}
            assert await batch(c, spelled("b")) == {"event_id": "b", "status": "accepted", "session_id": sid}
            for send in (single, batch):
                for event_id in ("s", "b", "old"):
                    for body in (spelled(event_id), spelled(event_id, respelled=True)):
                        res = await send(c, body)
                        assert res == {"event_id": event_id, "status": "duplicate", "session_id": sid}, body
                    res = await send(c, spelled(event_id, "changed"))
                    assert "different payload" in (res.get("reason") or res["error"]["message"]), res
    await gw.stop()


async def test_ingress_served_ahead_of_the_app_answers_as_the_app_does(nursery: trio.Nursery, tmp_path: Path) -> None:
    gw = await _gateway(nursery, tmp_path)

    async def streamed(data: bytes) -> Any:
        for i in range(0, len(data), 700):
            yield data[i : i + 700]

    with trio.fail_after(30):
        async with client(gw) as c:
            body = msgspec.json.encode({"protocol_version": 2, "events": [ev(f"s{i}") for i in range(20)]})
            r = await c.post(BATCH, content=streamed(body))  # chunked: no Content-Length
            assert r.status_code == 200, r.text
            assert [x["status"] for x in r.json()["results"]] == ["accepted"] * 20
            r = await c.post(BATCH, content=b"[" * 200)
            assert r.status_code == 400 and r.json()["error"]["code"] == "JSON_TOO_DEEP"
            r = await c.post(SINGLE, content=b"{nope")
            assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_REQUEST"
            r = await c.post("/v1/connectors/external/missing/events/batch", content=body)
            assert r.status_code == 404 and "missing" in r.json()["error"]["message"]
            r = await c.get(BATCH)  # not an ingress method: the app answers it
            assert r.status_code == 405
        async with client(gw, token="wrong-token-0123456789") as c:
            r = await c.post(SINGLE, json=ev("w"))
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            assert r.json()["error"]["code"] == "UNAUTHORIZED"
        over = b'{"events": ["' + b"x" * gw.runtime.config.server.max_body_bytes + b'"]}'
        async with client(gw) as c:
            r = await c.post(BATCH, content=over)
            assert r.status_code == 413 and r.headers["connection"] == "close"
            assert "server.max_body_bytes" in r.json()["error"]["message"]
