"""Who may point the gateway at a private address: the owner (gateway token, config file), never an admin account."""

from __future__ import annotations

from pathlib import Path

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.agent import live_config
from tests.conftest import make_config, start_gateway
from tests.fakes.openai_server import FakeOpenAI, Script
from tests.gateway.agenthelpers import of_type, sse_turn, use_fake_openai
from tests.gateway.connectors.helpers import fake_server
from tests.gateway.rest import admin_client, error_of, register


async def test_an_admin_account_cannot_point_the_gateway_at_private_addresses(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    fake = FakeOpenAI()
    base = await fake.start(nursery)
    cards: list[str] = []

    async def card(request: Request) -> Response:
        cards.append(request.url.path)
        return JSONResponse({"name": "local agent"})

    async with fake_server([Route("/.well-known/agent-card.json", card)]) as agent:
        config, paths = make_config(tmp_path)
        gw = await start_gateway(nursery, config, paths)
        with trio.fail_after(60):
            boss = await register(gw, "boss")  # the first account: super admin, but not the owner
            port = base.rsplit(":", 1)[1].split("/")[0]
            for url in (base, f"http://localhost:{port}/v1", "http://169.254.169.254/v1", "http://10.0.0.8:11434/v1"):
                r = await boss.client.post("/api/app-config/llm", json={"provider": "openai", "base_url": url})
                assert r.status_code == 403, r.text
                assert error_of(r)["code"] == "OUTBOUND_REFUSED" and "[outbound] allow" in error_of(r)["message"]
            mcp = {"mcpServers": {"lan": {"transport": "sse", "url": f"http://localhost:{port}/sse", "enabled": False}}}
            r = await boss.client.post("/api/app-config/mcp-servers", json=mcp)
            assert r.status_code == 403 and error_of(r)["code"] == "OUTBOUND_REFUSED", r.text
            r = await boss.client.post("/api/app-config/a2a-servers", json={"base_url": agent})
            assert r.status_code == 403 and error_of(r)["code"] == "OUTBOUND_REFUSED", r.text
            assert cards == [] and fake.requests == []

            async with admin_client(gw) as owner:
                # The owner may: the README's own example points the openai provider at a local Ollama this way.
                await use_fake_openai(owner, base)
                r = await owner.post("/api/app-config/a2a-servers", json={"base_url": agent})
                assert r.status_code == 200 and cards == ["/.well-known/agent-card.json"], r.text
                r = await owner.post("/api/app-config/mcp-servers", json=mcp)
                assert r.status_code == 200, r.text
            sid = (await boss.client.post("/api/sessions", json={})).json()["session_id"]
            fake.scripts.append(Script(texts=["hello"]))
            assert of_type(await sse_turn(boss.client, sid, "hi"), "result")[0]["text"] == "hello"
            # The admin account may change the model and send the owner's URL back unchanged (a form does), but
            # not move it to another private URL.
            r = await boss.client.post("/api/app-config/llm", json={"base_url": base, "model_name": "other"})
            assert r.status_code == 200, r.text
            fake.scripts.append(Script(texts=["still"]))
            assert of_type(await sse_turn(boss.client, sid, "hi"), "result")[0]["text"] == "still"
            r = await boss.client.post("/api/app-config/llm", json={"base_url": base + "/"})
            assert r.status_code == 403, r.text

            # The check at connect time holds whatever got stored (e.g. a URL an admin account stored before this
            # version): the turn fails with the policy's reason and the endpoint hears nothing.
            await live_config.update_llm(gw.runtime, {"base_url": base + "/"}, None, by_owner=False)
            asked = len(fake.requests)
            events = await sse_turn(boss.client, sid, "hi")
            assert "refused by the outbound policy" in str(of_type(events, "error")), str(events)[:3000]
            assert len(fake.requests) == asked
            await boss.client.aclose()
        await gw.stop()


async def test_the_owners_allow_list_opens_a_private_address_to_admin_accounts(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    fake = FakeOpenAI()
    base = await fake.start(nursery)
    config, paths = make_config(tmp_path, outbound={"allow": ["127.0.0.1"]})
    gw = await start_gateway(nursery, config, paths)
    with trio.fail_after(60):
        boss = await register(gw, "boss")
        await use_fake_openai(boss.client, base)
        sid = (await boss.client.post("/api/sessions", json={})).json()["session_id"]
        fake.scripts.append(Script(texts=["via the allow-list"]))
        assert of_type(await sse_turn(boss.client, sid, "hi"), "result")[0]["text"] == "via the allow-list"
        r = await boss.client.post("/api/app-config/llm", json={"base_url": "http://192.168.1.10:11434/v1"})
        assert r.status_code == 403, r.text  # only what the list names
        await boss.client.aclose()
    await gw.stop()
