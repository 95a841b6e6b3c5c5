"""One body limit per request, configurable, said one way: a REST JSON body, a connector's ingress and an upload all
meet the limit of their path (`server.max_body_bytes`, or the upload's own) with the same 413 and message."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import trio

from tests.conftest import make_config, start_gateway
from tests.gateway.connectors.helpers import admin, put
from tests.gateway.rest import admin_client, error_of

SHARED = "shared-token-for-tests-123456"
BATCH = "/v1/connectors/external/ext/events/batch"


def batch_of(size: int) -> bytes:
    """A protocol 2 batch of one event whose JSON is exactly `size` bytes."""
    head = b'{"protocol_version": 2, "events": [{"event_id": "e", "thread": {"path": ["r"]}, "content": "'
    tail = b'"}]}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


async def chunks(data: bytes, size: int = 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_every_request_meets_one_limit_said_one_way(nursery: trio.Nursery, tmp_path: Path) -> None:
    limit = 64 * 1024
    config, paths = make_config(
        tmp_path,
        server={"max_body_bytes": limit},
        limits={"max_upload_bytes": 4 * limit, "enabled": False},
        files={"max_upload_bytes": 2 * limit},
    )
    gw = await start_gateway(nursery, config, paths)
    with trio.fail_after(60):
        async with admin(gw) as c:
            assert (await put(c, "external", "ext", {"shared_token": {"value": SHARED}})).status_code == 201
        async with admin_client(gw) as rest:
            json_body = {"message": "x" * limit}
            over_json = await rest.post("/api/agent", json=json_body)
            streamed = await rest.post(
                "/api/agent",
                content=chunks(b'{"message": "' + b"x" * limit + b'"}'),
                headers={"content-type": "application/json"},
            )
            upload = await rest.post("/api/files", files={"file": ("a.bin", b"x" * (5 * limit))})
            workspace_upload = await rest.post("/upload", files={"file": ("a.bin", b"x" * (3 * limit))})
        ext_headers = {"Authorization": f"Bearer {SHARED}"}
        async with httpx.AsyncClient(base_url=gw.base_url, headers=ext_headers, timeout=30) as ext:
            # The connector's ingress has the same limit as any other body (it had its own, of 2 MiB + 64 KiB).
            under = await ext.post(BATCH, content=batch_of(limit), headers={"content-type": "application/json"})
            over = await ext.post(BATCH, content=batch_of(limit + 1), headers={"content-type": "application/json"})
    assert under.status_code == 200, under.text
    said = "the request body is larger than 65536 bytes; send less, or raise `server.max_body_bytes`"
    for r in (over_json, streamed, over):
        assert r.status_code == 413 and error_of(r) == {"code": "PAYLOAD_TOO_LARGE", "message": said}, r.text
    assert upload.status_code == 413 and error_of(upload)["message"] == (
        f"the upload is larger than {4 * limit} bytes; send less, or raise `limits.max_upload_bytes`"
    )
    assert workspace_upload.status_code == 413 and error_of(workspace_upload)["message"] == (
        f"the upload is larger than {2 * limit} bytes; send less, or raise `files.max_upload_bytes`"
    )
    # Refused before its body was read: the server closes that connection, and says so, so that no client sends
    # its next request down it (that failed as "server disconnected without sending a response" under load).
    for r in (over_json, streamed, upload, workspace_upload, over):
        assert r.headers.get("connection") == "close", (r.request.url, r.headers)
    assert "connection" not in under.headers  # a body read whole keeps its connection


async def test_a_larger_limit_lets_a_connector_take_larger_batches(nursery: trio.Nursery, tmp_path: Path) -> None:
    """The limit is configurable for every route: the external connector no longer stops at its own 2 MiB."""
    config, paths = make_config(tmp_path, server={"max_body_bytes": 3 * 1024 * 1024})
    gw = await start_gateway(nursery, config, paths)
    with trio.fail_after(60):
        async with admin(gw) as c:
            assert (await put(c, "external", "ext", {"shared_token": {"value": SHARED}})).status_code == 201
        async with httpx.AsyncClient(base_url=gw.base_url, headers={"Authorization": f"Bearer {SHARED}"}) as ext:
            body = batch_of(2 * 1024 * 1024 + 4096)
            r = await ext.post(BATCH, content=body, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 200 and r.json()["results"][0]["status"] == "accepted", r.text
