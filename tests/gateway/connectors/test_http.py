"""HTTP connector ingress: Bearer auth, the session resolution order, idempotency keys and reply-target defaults."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from tests.conftest import make_config, start_gateway
from tests.gateway.connectors.helpers import admin, put

BEARER = "http-connector-bearer-0042"
URL = "/v1/connectors/http/app"


async def test_http_ingress_auth_resolution_and_idempotency(nursery: trio.Nursery, tmp_path: Path) -> None:
    config, paths = make_config(tmp_path)
    gw = await start_gateway(nursery, config, paths)
    with trio.fail_after(30):
        async with admin(gw) as c:
            r = await put(c, "http", "app", {"bearer_token": {"value": BEARER}, "default_binding_keys": ["default"]})
            assert r.status_code == 201, r.text
            assert r.json()["bearer_token"]["configured"] is True
        auth = {"Authorization": f"Bearer {BEARER}"}
        async with httpx.AsyncClient(base_url=gw.base_url, timeout=30) as h:
            assert (await h.post(URL, json={"content": "x"})).status_code == 401
            assert (
                await h.post(URL, json={"content": "x"}, headers={"Authorization": "Bearer nope"})
            ).status_code == 401
            # The connector's default binding key chooses the session when the request names none.
            r = await h.post(URL, json={"content": "one", "idempotency_key": "k1"}, headers=auth)
            assert r.status_code == 202 and r.json()["status"] == "accepted", r.text
            default_sid = r.json()["session_id"]
            # The same key again is a duplicate; a different payload under it is a conflict.
            r = await h.post(URL, json={"content": "one", "idempotency_key": "k1"}, headers=auth)
            assert r.json() == {"status": "duplicate", "session_id": default_sid, "idempotency_key": "k1"}
            r = await h.post(URL, json={"content": "two", "idempotency_key": "k1"}, headers=auth)
            assert r.status_code == 409 and r.json()["error"]["code"] == "CONFLICT"
            # The Idempotency-Key header works too.
            r = await h.post(URL, json={"content": "h"}, headers={**auth, "Idempotency-Key": "hdr-1"})
            r2 = await h.post(URL, json={"content": "h"}, headers={**auth, "Idempotency-Key": "hdr-1"})
            assert r.json()["status"] == "accepted" and r2.json()["status"] == "duplicate"
            # A session already bound to one of the keys wins over a new one from the first key.
            r = await h.post(URL, json={"content": "b", "binding_keys": ["fresh", "default"]}, headers=auth)
            assert r.json()["session_id"] == default_sid
            r = await h.post(URL, json={"content": "c", "binding_keys": ["fresh"]}, headers=auth)
            fresh_sid = r.json()["session_id"]
            assert fresh_sid != default_sid
            # An explicit session id is used as given; an unknown one is refused with a reason.
            r = await h.post(URL, json={"content": "d", "session_id": fresh_sid}, headers=auth)
            assert r.json()["session_id"] == fresh_sid
            r = await h.post(URL, json={"content": "e", "session_id": "missing"}, headers=auth)
            assert r.status_code == 422 and "does not exist" in r.json()["error"]["message"]
            # Client mistakes are 4xx with the error shape.
            assert (await h.post(URL, content=b"{", headers=auth)).status_code == 400
            assert (await h.post(URL, json={"content": "x", "nope": 1}, headers=auth)).status_code == 422
            assert (await h.post(URL, json={}, headers=auth)).status_code == 422
            bad_target = {"content": "x", "reply_plugin": "http", "reply_address": "not a url"}
            assert (await h.post(URL, json=bad_target, headers=auth)).status_code == 422
        async with admin(gw) as c:
            # fixed_session_id overrides everything, creating the session on first use.
            r = await put(c, "http", "app", {"fixed_session_id": "fixed-session-1"})
            assert r.status_code == 200 and r.json()["bearer_token"]["configured"] is True
        async with httpx.AsyncClient(base_url=gw.base_url, timeout=30) as h:
            r = await h.post(URL, json={"content": "f", "binding_keys": ["fresh"]}, headers=auth)
            assert r.status_code == 202, r.text
            assert r.json()["session_id"] == "fixed-session-1"
        async with admin(gw) as c:
            r = await put(c, "http", "app", {"fixed_session_id": "fixed-session-2", "default_binding_keys": []})
            assert r.status_code == 200
        async with httpx.AsyncClient(base_url=gw.base_url, timeout=30) as h:
            r = await h.post(URL, json={"content": "no keys at all"}, headers=auth)
            assert r.status_code == 202 and r.json()["session_id"] == "fixed-session-2", r.text
        async with admin(gw) as c:
            r = await put(
                c, "http", "app", {"fixed_session_id": "other", "session_policy": {"create_if_missing": False}}
            )
            assert r.status_code == 200
        async with httpx.AsyncClient(base_url=gw.base_url, timeout=30) as h:
            r = await h.post(URL, json={"content": "g"}, headers=auth)
            assert r.status_code == 422 and "create_if_missing" in r.json()["error"]["message"]
    await gw.stop()
