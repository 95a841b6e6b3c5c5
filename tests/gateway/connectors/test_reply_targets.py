"""Reply targets over the API: an operator's PUT outlives later ingress events; handles must name real connectors."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from tests.conftest import make_config, start_gateway
from tests.gateway.connectors.helpers import admin, put
from tests.gateway.connectors.test_telegram import message


async def test_reply_targets_an_operator_put_outlive_later_ingress(nursery: trio.Nursery, tmp_path: Path) -> None:
    config, paths = make_config(tmp_path)
    gw = await start_gateway(nursery, config, paths)
    secret = {"X-Telegram-Bot-Api-Secret-Token": "webhook-secret-0001"}
    with trio.fail_after(40):
        async with admin(gw) as c, httpx.AsyncClient(base_url=gw.base_url, timeout=30) as t:
            hook = {"secret_token": {"value": "webhook-secret-0001"}, "ingress_mode": "webhook"}
            assert (await put(c, "telegram", "tg1", {**hook, "include_self_output": True})).status_code == 201
            r = await t.post("/v1/connectors/telegram/tg1", json=message(1, "hi", chat=555), headers=secret)
            sid = r.json()["session_id"]
            url = f"/v1/sessions/{sid}/reply-targets"
            own = [{"plugin": "telegram", "connector": "tg1", "address": {"chat_id": 555}}]
            assert (await c.get(url)).json()["reply_targets"] == own
            # By the session's key as well as by its id.
            by_key = await c.get("/v1/sessions/telegram:tg1:555/reply-targets")
            assert by_key.json() == {"session_id": sid, "reply_targets": own}
            # An operator sends this chat's replies elsewhere; the next event of the chat leaves that alone.
            chosen = [{"plugin": "telegram", "connector": "tg1", "address": {"chat_id": 999}}]
            assert (await c.put(url, json={"reply_targets": chosen})).json()["reply_targets"] == chosen
            await t.post("/v1/connectors/telegram/tg1", json=message(2, "again", chat=555), headers=secret)
            assert (await c.get(url)).json()["reply_targets"] == chosen
            # A handle naming a connector that does not exist is refused, naming it; nothing changes.
            ghost = [*chosen, {"plugin": "telegram", "connector": "ghost", "address": {"chat_id": 1}}]
            bad = await c.put(url, json={"reply_targets": ghost})
            assert bad.status_code == 422, bad.text
            assert bad.json()["error"]["details"][0]["loc"] == ["body", "reply_targets", 1, "connector"]
            slack = [{"plugin": "slack", "connector": "tg1", "address": {"channel": "C1"}}]
            assert (await c.put(url, json={"reply_targets": slack})).status_code == 422  # tg1 is no slack bot
            assert (await c.get(url)).json()["reply_targets"] == chosen
            # Released, the next event sets the chat's own target again.
            assert (await c.delete(url)).status_code == 204
            assert (await c.get(url)).json()["reply_targets"] == []
            await t.post("/v1/connectors/telegram/tg1", json=message(3, "third", chat=555), headers=secret)
            assert (await c.get(url)).json()["reply_targets"] == own
            assert (await c.delete("/v1/sessions/nope/reply-targets")).status_code == 404
    await gw.stop()
