"""Per-connector ingress rate limits for http, slack and telegram: 429 + Retry-After, defaults, validation."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.conftest import make_config, start_gateway
from tests.gateway.connectors.helpers import admin, connector_status, put, wait_for
from tests.gateway.connectors.test_slack import SIGNING, event_body, signed

BEARER = "http-rate-bearer-000111"
TG_SECRET = "tg-rate-secret_0011"

Send = Callable[[httpx.AsyncClient, str, bool], Awaitable[httpx.Response]]


async def send_http(h: httpx.AsyncClient, key: str, good: bool) -> httpx.Response:
    auth = {"Authorization": f"Bearer {BEARER if good else 'wrong'}"}
    return await h.post("/v1/connectors/http/app", json={"content": key, "idempotency_key": key}, headers=auth)


async def send_slack(h: httpx.AsyncClient, key: str, good: bool) -> httpx.Response:
    body = event_body(key, f"text of {key}")
    headers = signed(body, secret=SIGNING if good else "not-the-signing-secret")
    return await h.post("/v1/connectors/slack/team", content=body, headers=headers)


async def send_telegram(h: httpx.AsyncClient, key: str, good: bool) -> httpx.Response:
    update = {"update_id": 1000 + int(key[-1]), "message": {"chat": {"id": 5}, "from": {"id": 9}, "text": key}}
    headers = {"X-Telegram-Bot-Api-Secret-Token": TG_SECRET if good else "wrong", "Content-Type": "application/json"}
    return await h.post("/v1/connectors/telegram/bot", content=json.dumps(update), headers=headers)


KINDS: list[tuple[str, str, dict[str, Any], Send]] = [
    ("http", "app", {"bearer_token": {"value": BEARER}, "default_binding_keys": ["k"]}, send_http),
    ("slack", "team", {"signing_secret": {"value": SIGNING}}, send_slack),
    ("telegram", "bot", {"secret_token": {"value": TG_SECRET}}, send_telegram),
]


async def test_ingress_over_the_rate_is_429_with_retry_after_and_retries_later(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    gw = await start_gateway(nursery, *make_config(tmp_path))
    with trio.fail_after(60):
        async with admin(gw) as c:
            for kind, name, body, _ in KINDS:
                r = await put(c, kind, name, {**body, "ingress_events_per_second": 1})
                assert r.status_code == 201, r.text
                assert r.json()["ingress_events_per_second"] == 1
            async with httpx.AsyncClient(base_url=gw.base_url, timeout=30) as h:
                for kind, name, _, send in KINDS:
                    # Unauthenticated requests are refused without using up the allowance (one event a second).
                    assert (await send(h, f"{kind}-0", False)).status_code == 401
                    first = await send(h, f"{kind}-1", True)
                    assert first.status_code in (200, 202), first.text
                    assert first.json()["status"] == "accepted"
                    over = await send(h, f"{kind}-2", True)
                    assert over.status_code == 429, over.text
                    assert over.json()["error"]["code"] == "RATE_LIMITED"
                    assert int(over.headers["retry-after"]) >= 1
                    # Slack must retry this delivery later, so it is not told to stop retrying.
                    assert "x-slack-no-retry" not in over.headers
                    st = await connector_status(c, f"{kind}/{name}")
                    assert st["ingress_rate_limited"] >= 1 and st["state"] == "running"

                    # The platform's retry, once the bucket has refilled, is stored: nothing was lost.
                    async def retried(send: Send = send, kind: str = kind) -> httpx.Response | None:
                        r = await send(h, f"{kind}-2", True)
                        return r if r.status_code != 429 else None

                    again = await wait_for(retried, timeout=10, interval=0.25)
                    assert again.status_code in (200, 202) and again.json()["status"] == "accepted", again.text
    await gw.stop()


async def test_default_rate_views_and_validation(nursery: trio.Nursery, tmp_path: Path) -> None:
    gw = await start_gateway(nursery, *make_config(tmp_path))
    with trio.fail_after(30):
        async with admin(gw) as c:
            for kind, name, body, _ in KINDS:
                r = await put(c, kind, name, body)
                assert r.status_code == 201, r.text
                # A default that real Slack/Telegram traffic never reaches, shown in the view.
                assert r.json()["ingress_events_per_second"] == 50.0
                view = (await c.get(f"/v1/runtime/connectors/{kind}/{name}")).json()
                assert view["ingress_events_per_second"] == 50.0
                for bad in (0, -1, 1e9, "fast"):
                    r = await put(c, kind, name, {"ingress_events_per_second": bad})
                    assert r.status_code == 422, (kind, bad, r.text)
                    assert "ingress_events_per_second" in r.json()["error"]["message"]
                r = await put(c, kind, name, {"ingress_events_per_second": None})
                assert r.status_code == 200 and r.json()["ingress_events_per_second"] is None, r.text
            # External connectors keep the reference's default: no limit unless set.
            r = await put(c, "external", "ext", {"allow_unauthenticated_ingress": True})
            assert r.status_code == 201 and r.json()["ingress_events_per_second"] is None
    await gw.stop()
