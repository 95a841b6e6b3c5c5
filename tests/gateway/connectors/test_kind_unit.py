"""A connector kind is one unit: a kind defined here, registered with one line, works end to end.

The `loopback` kind below is everything a kind is (settings and their rules, ingress, reply addressing, delivery)
and the test registers it in `registry.KINDS` and nowhere else: creating it over REST, its ingress route, a reply
addressed by `/api/message`, the outbox's delivery to its (fake) platform and the reply-target checks all follow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from actors.connector import Answer, DeliveryRequest, DeliveryResult, Inbound
from gateway.connectors.base import AdapterBase, ConnectorKind, canonical, check_bearer, fingerprint, store_items
from gateway.connectors.model import CommonSettings, SecretMeta, check_url
from gateway.connectors.registry import KINDS
from gateway.errors import InvalidRequestError, ValidationFailedError
from storage.ingress import IngressItem
from tests.conftest import make_config, start_gateway
from tests.gateway.connectors.helpers import admin, fake_server, put, wait_for

TOKEN = "loopback-secret-0001"


# ---- the kind: one module's worth ----


class LoopbackSettings(CommonSettings, forbid_unknown_fields=True, kw_only=True):
    platform_url: str
    token: SecretMeta | None = None

    def owner_urls(self) -> list[str]:
        return [self.platform_url]  # the fake platform listens on loopback: the owner may name a private address

    def check(self, what: str) -> None:
        super().check(what)
        check_url(self.platform_url, f"{what}: platform_url")
        if self.token is None and not self.allow_unauthenticated_ingress:
            raise ValidationFailedError(f"{what}: no token is configured")


def check_address(address: str | dict[str, Any], what: str) -> None:
    if not isinstance(address, dict) or not isinstance(address.get("room"), str):
        raise ValidationFailedError(f'{what}: a loopback address is {{"room": ...}}')


def chat_address(chat_id: str, topic_id: str) -> dict[str, Any]:
    return {"room": chat_id}


class Post(msgspec.Struct):
    id: str
    room: str
    text: str


class LoopbackConnector(AdapterBase):
    async def handle(self, msg: Inbound) -> Answer:
        check_bearer(msg.headers, self.ctx.secrets.get("token"), allow_unauthenticated=False, what="loopback")
        try:
            post = msgspec.json.decode(msg.body, type=Post)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise InvalidRequestError("send {id, room, text}") from None
        payload = canonical(post)
        target = {"plugin": "loopback", "connector": self.name, "address": chat_address(post.room, "")}
        spec = self.session_spec([(post.room, "")])
        (o,) = await store_items(
            self.ctx, [IngressItem(post.id, fingerprint(payload), post.text, payload, spec, [target])]
        )
        return Answer(200, {"status": o.status, "session_id": o.session_id})

    async def deliver(self, request: DeliveryRequest) -> DeliveryResult:
        s = self.ctx.config.settings
        assert isinstance(s, LoopbackSettings)
        body = {"room": request.target["address"]["room"], "text": request.text}
        r = await self.http.post(s.platform_url + "/send", json=body)
        return DeliveryResult("delivered") if r.status_code == 200 else DeliveryResult("retryable", str(r.status_code))


LOOPBACK = ConnectorKind(
    name="loopback",
    settings=LoopbackSettings,
    adapter=LoopbackConnector,
    check_address=check_address,
    chat_address=chat_address,
)


# ---- the fake platform and the test ----


class Platform:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, request: Request) -> Response:
        self.sent.append(await request.json())
        return JSONResponse({"ok": True})


async def test_a_kind_registered_with_one_line_is_created_takes_events_is_addressed_and_delivers(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert LOOPBACK.secret_fields == ("token",)  # read from the settings Struct: SecretMeta fields
    monkeypatch.setitem(KINDS, "loopback", LOOPBACK)  # the one registry line
    platform = Platform()
    async with fake_server([Route("/send", platform.send, methods=["POST"])]) as base:
        gw = await start_gateway(nursery, *make_config(tmp_path))
        try:
            with trio.fail_after(40):
                async with admin(gw) as c, httpx.AsyncClient(base_url=gw.base_url, timeout=30) as anon:
                    # The kinds the API (and the web UI's editor) offers now include it, its secret field named.
                    kinds = {k["kind"]: k for k in (await c.get("/v1/runtime/connector-kinds")).json()["kinds"]}
                    assert list(kinds) == ["telegram", "slack", "http", "external", "loopback"]
                    assert kinds["loopback"] == {
                        "kind": "loopback",
                        "fields": [*CommonSettings.__struct_fields__, "platform_url", "token"],
                        "secret_fields": ["token"],
                        "root_ingress": True,
                        "chat_addresses": True,
                    }
                    assert kinds["external"]["root_ingress"] is False and kinds["http"]["chat_addresses"] is False
                    # Create over REST: the kind's settings model validates; its secret field is write-only.
                    bad = await put(c, "loopback", "nope", {"platform_url": base})
                    assert bad.status_code == 422 and "no token is configured" in bad.text, bad.text
                    bad = await put(c, "loopback", "nope", {"platform_url": "ftp://x", "token": {"value": TOKEN}})
                    assert bad.status_code == 422 and "platform_url" in bad.text, bad.text
                    r = await put(c, "loopback", "lb", {"platform_url": base, "token": {"value": TOKEN}})
                    assert r.status_code == 201, r.text
                    view = r.json()
                    assert view["kind"] == "loopback" and view["token"]["configured"] is True
                    assert TOKEN not in r.text
                    assert (await c.get("/v1/runtime/connectors/loopback/lb")).json() == view

                    # Ingress through the generic route, the kind's own authentication first.
                    post = {"id": "m1", "room": "r1", "text": "hello loopback"}
                    denied = await anon.post("/v1/connectors/loopback/lb", json=post)
                    assert denied.status_code == 401, denied.text
                    auth = {"Authorization": f"Bearer {TOKEN}"}
                    r = await anon.post("/v1/connectors/loopback/lb", json=post, headers=auth)
                    assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
                    sid = r.json()["session_id"]
                    again = await anon.post("/v1/connectors/loopback/lb", json=post, headers=auth)
                    assert again.json() == {"status": "duplicate", "session_id": sid}

                    async def sent(text: str) -> list[dict[str, Any]]:
                        return [m for m in platform.sent if m["text"] == text]

                    # The turn's reply goes out through the outbox to the kind's delivery.
                    assert await wait_for(lambda: sent("hello loopback")) == [{"room": "r1", "text": "hello loopback"}]

                    # /api/message to a room never heard from: the kind's chat address makes the reply target.
                    r = await c.post(
                        "/api/message", json={"channel": "loopback:lb", "chat_id": "r2", "content": "ping"}
                    )
                    assert r.status_code == 202, r.text
                    sid2 = r.json()["session_id"]
                    assert await wait_for(lambda: sent("ping")) == [{"room": "r2", "text": "ping"}]
                    targets = (await c.get(f"/v1/sessions/{sid2}/reply-targets")).json()["reply_targets"]
                    assert targets == [{"plugin": "loopback", "connector": "lb", "address": {"room": "r2"}}]

                    async def delivered() -> list[dict[str, Any]]:
                        r = await c.get("/v1/runtime/outbox", params={"state": "delivered"})
                        return [d for d in r.json()["deliveries"] if d["plugin"] == "loopback"]

                    rows = await wait_for(delivered)
                    assert {d["session_id"] for d in rows} == {sid, sid2} and len(rows) == 2

                    # Reply targets naming the kind are checked by its address rule.
                    url = f"/v1/sessions/{sid}/reply-targets"
                    wrong = [{"plugin": "loopback", "connector": "lb", "address": {"channel": "C1"}}]
                    r = await c.put(url, json={"reply_targets": wrong})
                    assert r.status_code == 422 and "a loopback address" in r.text, r.text
                    right = [{"plugin": "loopback", "connector": "lb", "address": {"room": "r9"}}]
                    assert (await c.put(url, json={"reply_targets": right})).status_code == 200

                    # Deleting it stops it: its ingress route then has no such connector.
                    assert (await c.put(url, json={"reply_targets": []})).status_code == 200
                    assert (await c.delete(f"/v1/sessions/{sid2}/reply-targets")).status_code == 204
                    assert (await c.delete("/v1/runtime/connectors/loopback/lb")).status_code == 204
                    gone = await anon.post("/v1/connectors/loopback/lb", json=post, headers=auth)
                    assert gone.status_code == 404, gone.text
        finally:
            await gw.stop()


async def test_an_unregistered_kind_is_unknown(nursery: trio.Nursery, tmp_path: Path) -> None:
    gw = await start_gateway(nursery, *make_config(tmp_path))
    try:
        with trio.fail_after(20):
            async with admin(gw) as c, httpx.AsyncClient(base_url=gw.base_url, timeout=30) as anon:
                r = await put(c, "loopback", "lb", {"platform_url": "http://127.0.0.1:9"})
                assert r.status_code == 404 and "telegram, slack, http, external" in r.text, r.text
                assert (await anon.post("/v1/connectors/loopback/lb", json={})).status_code == 404
                r = await c.post("/api/message", json={"channel": "loopback:lb", "chat_id": "r2", "content": "x"})
                assert r.status_code == 404 and r.json()["error"]["code"] == "CHANNEL_NOT_FOUND"
    finally:
        await gw.stop()


async def test_a_stored_connector_of_a_kind_no_longer_registered_is_skipped_at_start(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    config, paths = make_config(tmp_path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(KINDS, "loopback", LOOPBACK)
        gw = await start_gateway(nursery, config, paths)
        try:
            with trio.fail_after(20):
                async with admin(gw) as c:
                    body = {"platform_url": "http://127.0.0.1:9", "allow_unauthenticated_ingress": True}
                    assert (await put(c, "loopback", "old", body)).status_code == 201
        finally:
            await gw.stop()
    # The kind's module is gone: the gateway still starts, and the stored row is left alone (logged), not served.
    gw = await start_gateway(nursery, config, paths)
    try:
        with trio.fail_after(20):
            async with admin(gw) as c:
                assert (await c.get("/v1/runtime/connectors")).json() == {"connectors": []}
                assert (await c.get("/api/status")).status_code == 200
    finally:
        await gw.stop()
