"""Connector chats (telegram, external) follow the gateway default, even one changed later, unless pinned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio

from tests.conftest import make_config, start_gateway
from tests.fakes.openai_server import FakeOpenAI, Script
from tests.gateway.agenthelpers import use_fake_openai
from tests.gateway.connectors.helpers import admin, fake_server, put, wait_for
from tests.gateway.connectors.test_telegram import BOT, FakeBotApi, message

SHARED = "shared-token-for-default-tests-12"


async def test_telegram_and_external_chats_follow_the_default_chosen_over_the_api(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    fake = FakeOpenAI()
    fake_base = await fake.start(nursery)
    api = FakeBotApi()
    api.fail_next = 0
    async with fake_server(api.routes()) as bot_base:
        # The config file says echo; the API will say openai (the README's way to use a real model).
        config, paths = make_config(tmp_path, agent={"provider": "echo"})
        gw = await start_gateway(nursery, config, paths)
        with trio.fail_after(60):
            async with admin(gw) as c:
                body = {
                    "bot_token": {"value": BOT},
                    "ingress_mode": "polling",
                    "polling_timeout_seconds": 1,
                    "api_base_url": bot_base,
                    "include_self_output": True,
                }
                assert (await put(c, "telegram", "tg1", body)).status_code == 201

                async def replied(text: str) -> list[dict[str, Any]]:
                    return [m for m in api.sent if m["text"] == text]

                api.push(message(1, "echoed words", chat=555))
                await wait_for(lambda: replied("echoed words"))
                view = (await c.get("/api/sessions/telegram:tg1:555")).json()
                assert (view["provider"], view["effective_provider"]) == (None, "echo"), view

                # The default changes after the chat exists: its next turn goes to the model.
                await use_fake_openai(c, fake_base)
                fake.scripts.append(Script(texts=["from ", "the model"]))
                api.push(message(2, "second", chat=555))
                await wait_for(lambda: replied("from the model"))
                assert fake.requests[-1]["model"] == "fake-gpt"
                assert fake.requests[-1]["messages"][-1] == {"role": "user", "content": "second"}
                view = (await c.get("/api/sessions/telegram:tg1:555")).json()
                assert (view["provider"], view["effective_provider"], view["effective_model"]) == (
                    None,
                    "openai",
                    "fake-gpt",
                )

                # An external connector's chat, created after the change, follows it as well.
                r = await put(c, "external", "ext1", {"shared_token": {"value": SHARED}, "platform": "demo"})
                assert r.status_code == 201, r.text
                async with httpx.AsyncClient(
                    base_url=gw.base_url, headers={"Authorization": f"Bearer {SHARED}"}, timeout=30
                ) as ext:
                    fake.scripts.append(Script(texts=["external answer"]))
                    event = {"event_id": "e1", "routing_key": "team:a", "content": "from outside"}
                    r = await ext.post("/v1/connectors/external/ext1/events", json=event)
                    assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
                key = "external:ext1:rk:team:a"

                async def answered() -> list[dict[str, Any]]:
                    got = await c.get(f"/api/sessions/{key}/events")
                    return [e for e in got.json()["events"] if e["type"] == "result"] if got.is_success else []

                assert (await wait_for(answered))[0]["text"] == "external answer"
                assert fake.requests[-1]["messages"][-1] == {"role": "user", "content": "from outside"}

                # Pinning a connector chat (by its key) wins over the default; the other keeps following it.
                r = await c.put("/api/chat/sessions/telegram:tg1:555", json={"provider": "echo"})
                assert r.status_code == 200 and r.json()["effective_provider"] == "echo", r.text
                asked = len(fake.requests)
                api.push(message(3, "pinned to echo", chat=555))
                await wait_for(lambda: replied("pinned to echo"))
                assert len(fake.requests) == asked
                ext_view = (await c.get(f"/api/sessions/{key}")).json()
                assert (ext_view["provider"], ext_view["effective_provider"]) == (None, "openai")
        await gw.stop()
