"""MCP and A2A servers over a real gateway: validation, a real stdio MCP server's tool in a turn, user preferences."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.conftest import RunningGateway
from tests.fakes.http_server import serve_app
from tests.fakes.openai_server import FakeOpenAI, Script
from tests.gateway.agenthelpers import of_type, sse_turn, use_fake_openai
from tests.gateway.rest import admin_client, error_of, register

SERVER = str(Path(__file__).resolve().parents[2] / "fakes" / "mcp_calc_server.py")
ENV_CANARY = "env-canary-51c0ffee"
HEADER_CANARY = "hdr-canary-9d8e7f"


def calc_config(**over: Any) -> dict[str, Any]:
    cfg = {"transport": "stdio", "command": sys.executable, "args": [SERVER], "description": "adds numbers",
           "env": {"CALC_SECRET": ENV_CANARY}}  # fmt: skip
    cfg.update(over)
    return {"mcpServers": {"calc": cfg}}


async def wait_listing(admin: httpx.AsyncClient, name: str, state: str) -> dict[str, Any]:
    """Poll the listing (bounded by the caller's fail_after) until server `name` is in `state`."""
    while True:
        r = await admin.get("/api/app-config/mcp-servers")
        assert r.status_code == 200
        for item in r.json()["mcp_servers"]:
            if item["server_name"] == name and item["state"] == state:
                found: dict[str, Any] = item
                return found
        await trio.sleep(0.05)


async def test_mcp_server_validation_and_auth(gateway: RunningGateway) -> None:
    with trio.fail_after(30):
        async with admin_client(gateway) as admin, httpx.AsyncClient(base_url=gateway.base_url) as anon:
            cases = [
                ({"mcpServers": {"calc": {"transport": "stdio"}}}, ["body", "mcpServers", "calc", "command"]),
                ({"mcpServers": {"s": {"transport": "sse"}}}, ["body", "mcpServers", "s", "url"]),
                ({"mcpServers": {"h": {"transport": "streamable_http", "command": "x"}}},
                 ["body", "mcpServers", "h", "url"]),
                ({"mcpServers": {"u": {"transport": "sse", "url": "file:///etc/passwd"}}},
                 ["body", "mcpServers", "u", "url"]),
                ({"mcpServers": {"t": {"transport": "carrier-pigeon", "command": "x"}}},
                 ["body", "mcpServers", "t", "transport"]),
                ({"mcpServers": {"../etc": {"transport": "stdio", "command": "x"}}}, ["body", "mcpServers", "(key)"]),
                ({"mcpServers": {}}, ["body", "mcpServers"]),
            ]  # fmt: skip
            for body, loc in cases:
                r = await admin.post("/api/app-config/mcp-servers", json=body)
                assert r.status_code == 422, (body, r.text)
                assert error_of(r)["details"][0]["loc"] == loc, r.text
            assert (await admin.get("/api/app-config/mcp-servers")).json() == {"mcp_servers": []}
            assert (await anon.get("/api/app-config/mcp-servers")).status_code == 401
            await register(gateway, "first")
            plain = await register(gateway, "second")
            assert (await plain.client.get("/api/app-config/mcp-servers")).status_code == 200
            for path, body in [
                ("/api/app-config/mcp-servers", calc_config()),
                ("/api/app-config/mcp-servers/calc/delete", None),
                ("/api/app-config/mcp-servers/calc/enabled", {"enabled": False}),
            ]:
                r = await plain.client.post(path, json=body)
                assert r.status_code == 403 and error_of(r)["code"] == "FORBIDDEN", path
            for path, body in [
                ("/api/app-config/mcp-servers/nope/delete", None),
                ("/api/app-config/mcp-servers/nope/enabled", {"enabled": True}),
            ]:
                r = await admin.post(path, json=body)
                assert r.status_code == 404 and error_of(r)["code"] == "MCP_SERVER_NOT_FOUND"
            r = await admin.post("/api/app-config/mcp-servers/nope/enabled", json={"enabled": "yes"})
            assert r.status_code == 422 and error_of(r)["details"][0]["loc"] == ["body", "enabled"]
            await plain.client.aclose()


async def test_a_registered_mcp_tool_is_called_in_a_turn_unless_the_user_switched_it_off(
    gateway: RunningGateway, nursery: trio.Nursery
) -> None:
    fake = FakeOpenAI()
    base = await fake.start(nursery)
    seen: list[str] = []
    with trio.fail_after(90):
        async with admin_client(gateway) as admin:
            await use_fake_openai(admin, base)
            headers = {"Authorization": HEADER_CANARY}
            body = calc_config()
            body["mcpServers"]["remote"] = {"transport": "sse", "url": "http://127.0.0.1:9/sse", "headers": headers}
            r = await admin.post("/api/app-config/mcp-servers", json=body)
            assert r.status_code == 200 and r.json() == {"status": "ok"}
            item = await wait_listing(admin, "calc", "connected")
            assert sorted(item["tools"]) == ["add", "crash", "echo"]
            assert item["enabled"] is True and item["transport"] == "stdio" and item["description"] == "adds numbers"
            listing = (await admin.get("/api/app-config/mcp-servers")).text
            seen.append(listing)
            assert "env" not in json.loads(listing)["mcp_servers"][0] and "headers" not in listing

            # The model asks for calc__add; the tool's answer goes back to it; the call shows as tool_activity.
            admin_owner = await register(gateway, "admin")  # first user: super admin
            user = await register(gateway, "erin")
            sid = (await user.client.post("/api/sessions", json={})).json()["session_id"]
            fake.scripts.extend([Script(tool_calls=[("call_1", "calc__add", ['{"a": 20,', ' "b": 22}'])]),
                                 Script(texts=["It is ", "42."])])  # fmt: skip
            events = await sse_turn(user.client, sid, "what is 20 + 22?")
            seen.append(str(events))
            assert [d["data"] for d in of_type(events, "tool_activity")] == ["calc__add"]
            assert of_type(events, "result")[0]["text"] == "It is 42."
            offered = {t["function"]["name"] for t in fake.requests[-2]["tools"]}
            assert {"calc__add", "calc__echo"} <= offered
            assert fake.requests[-1]["messages"][-1] == {"role": "tool", "tool_call_id": "call_1", "content": "42"}

            # erin switches calc off for herself: her next turn is offered no calc tool, others still are.
            r = await user.client.post("/api/user/tools/mcp/calc/enabled", json={"enabled": False})
            assert r.status_code == 200
            prefs = (await user.client.get("/api/user/tools/mcp")).json()["tools"]
            assert {"tool_id": "calc", "tool_name": "calc", "description": "adds numbers", "enabled_global": True,
                    "enabled_user": False} in prefs  # fmt: skip
            fake.scripts.append(Script(texts=["no tools"]))
            await sse_turn(user.client, sid, "again")
            assert not any(t["function"]["name"].startswith("calc__") for t in fake.requests[-1].get("tools", []))
            other = (await admin_owner.client.post("/api/sessions", json={})).json()["session_id"]
            fake.scripts.append(Script(texts=["tools"]))
            await sse_turn(admin_owner.client, other, "and you?")
            assert "calc__add" in {t["function"]["name"] for t in fake.requests[-1]["tools"]}
            assert (await admin_owner.client.get("/api/user/tools/mcp")).json()["tools"][0]["enabled_user"] is True
            r = await user.client.post("/api/user/tools/mcp/nope/enabled", json={"enabled": False})
            assert r.status_code == 404 and error_of(r)["code"] == "MCP_SERVER_NOT_FOUND"

            # The tool's environment reached the server (its answer says so) but is never shown.
            fake.scripts.extend([Script(tool_calls=[("c2", "calc__echo", ['{"text": "x"}'])]), Script(texts=["ok"])])
            events = await sse_turn(admin_owner.client, other, "echo")
            assert fake.requests[-1]["messages"][-1]["content"] == "echo: x (secret env set)"
            seen.append(str(events))

            # Switched off globally: disconnected, no tools listed; a turn is offered none.
            r = await admin.post("/api/app-config/mcp-servers/calc/enabled", json={"enabled": False})
            assert r.status_code == 200
            item = await wait_listing(admin, "calc", "disabled")
            assert item["tools"] == [] and item["enabled"] is False
            assert gateway.runtime.mcp is not None and "calc" not in gateway.runtime.mcp.servers
            # Updating without env keeps the stored env; enabling reconnects.
            r = await admin.post("/api/app-config/mcp-servers", json={"mcpServers": {"calc": {
                "transport": "stdio", "command": sys.executable, "args": [SERVER]}}})  # fmt: skip
            assert r.status_code == 200
            await wait_listing(admin, "calc", "connected")
            fake.scripts.extend([Script(tool_calls=[("c3", "calc__echo", ['{"text": "y"}'])]), Script(texts=["ok"])])
            await sse_turn(admin_owner.client, other, "echo again")
            assert fake.requests[-1]["messages"][-1]["content"] == "echo: y (secret env set)"

            # Delete: gone from the listing and from every user's preferences.
            assert (await admin.post("/api/app-config/mcp-servers/calc/delete")).status_code == 200
            assert (await admin.post("/api/app-config/mcp-servers/calc/delete")).status_code == 404
            names = [i["server_name"] for i in (await admin.get("/api/app-config/mcp-servers")).json()["mcp_servers"]]
            assert names == ["remote"]
            assert [t["tool_id"] for t in (await user.client.get("/api/user/tools/mcp")).json()["tools"]] == ["remote"]
            seen.append((await admin.get("/api/status")).text)
            seen.append((await admin.get("/api/app-config/mcp-servers")).text)
            await user.client.aclose()
            await admin_owner.client.aclose()
    assert all(ENV_CANARY not in s and HEADER_CANARY not in s for s in seen)


async def test_agent_limits_bound_the_tool_loop(gateway: RunningGateway, nursery: trio.Nursery) -> None:
    fake = FakeOpenAI()
    base = await fake.start(nursery)
    with trio.fail_after(60):
        async with admin_client(gateway) as admin:
            await use_fake_openai(admin, base)
            assert (await admin.post("/api/app-config/mcp-servers", json=calc_config())).status_code == 200
            await wait_listing(admin, "calc", "connected")
            assert (await admin.post("/api/app-config/agent", json={"max_iterations": 1})).status_code == 200
            user = await register(gateway, "max")
            sid = (await user.client.post("/api/sessions", json={})).json()["session_id"]
            fake.scripts.extend([Script(tool_calls=[(f"c{i}", "calc__add", ['{"a": 1, "b": 1}'])]) for i in range(3)])
            events = await sse_turn(user.client, sid, "loop forever")
            assert [d["data"] for d in of_type(events, "tool_activity")] == ["calc__add"]
            assert "max_iterations" in of_type(events, "system_status")[-1]["data"]
            assert len(fake.requests) == 1
            await user.client.aclose()


def card_app(card: dict[str, Any], path: str = "/.well-known/agent-card.json") -> Starlette:
    async def handler(request: Request) -> Response:
        return JSONResponse(card)

    return Starlette(routes=[Route(path, handler)])


async def test_a2a_servers_register_list_enable_delete_and_preferences(
    gateway: RunningGateway, nursery: trio.Nursery
) -> None:
    card = {"name": "Helper", "description": "does things", "defaultInputModes": ["text"],
            "defaultOutputModes": ["text", "image"], "capabilities": {"streaming": True}}  # fmt: skip
    base = await serve_app(nursery, card_app(card))
    legacy = await serve_app(nursery, card_app({"name": "Old"}, "/.well-known/agent.json"))
    empty = await serve_app(nursery, Starlette())
    with trio.fail_after(30):
        async with admin_client(gateway) as admin:
            r = await admin.post("/api/app-config/a2a-servers", json={"base_url": base + "/"})
            assert r.status_code == 200, r.text
            item = r.json()
            assert item["name"] == "Helper" and item["input_modes"] == ["text"] and item["streaming"] is True
            assert item["output_modes"] == ["text", "image"] and item["push_notifications"] is False
            assert item["enabled"] is True and item["base_url"] == base
            # Registering again refreshes the same entry.
            again = (await admin.post("/api/app-config/a2a-servers", json={"base_url": base})).json()
            assert again["id"] == item["id"]
            old = (await admin.post("/api/app-config/a2a-servers", json={"base_url": legacy})).json()
            assert old["name"] == "Old"
            listed = (await admin.get("/api/app-config/a2a-servers")).json()["a2a_servers"]
            assert [s["name"] for s in listed] == ["Helper", "Old"]

            r = await admin.post("/api/app-config/a2a-servers", json={"base_url": empty})
            assert r.status_code == 422 and error_of(r)["code"] == "A2A_CARD_INVALID"
            r = await admin.post("/api/app-config/a2a-servers", json={"base_url": "ftp://x"})
            assert r.status_code == 422 and error_of(r)["details"][0]["loc"] == ["body", "base_url"]
            r = await admin.post("/api/app-config/a2a-servers", json={"base_url": "http://127.0.0.1:9"})
            assert r.status_code == 422 and "cannot reach" in error_of(r)["message"]

            assert (await admin.post(f"/api/app-config/a2a-servers/{item['id']}/enabled",
                                     json={"enabled": False})).status_code == 200  # fmt: skip
            listed = (await admin.get("/api/app-config/a2a-servers")).json()["a2a_servers"]
            assert {s["name"]: s["enabled"] for s in listed} == {"Helper": False, "Old": True}

            await register(gateway, "root")
            user = await register(gateway, "ada")
            r = await user.client.post("/api/app-config/a2a-servers", json={"base_url": base})
            assert r.status_code == 403
            assert (await user.client.post(f"/api/user/tools/a2a/{old['id']}/enabled",
                                           json={"enabled": False})).status_code == 200  # fmt: skip
            tools = {t["tool_name"]: t for t in (await user.client.get("/api/user/tools/a2a")).json()["tools"]}
            assert tools["Old"]["enabled_user"] is False and tools["Old"]["enabled_global"] is True
            assert tools["Helper"]["enabled_user"] is True and tools["Helper"]["enabled_global"] is False
            r = await user.client.post("/api/user/tools/a2a/nope/enabled", json={"enabled": True})
            assert r.status_code == 404 and error_of(r)["code"] == "A2A_SERVER_NOT_FOUND"

            assert (await admin.post(f"/api/app-config/a2a-servers/{old['id']}/delete")).status_code == 200
            r = await admin.post(f"/api/app-config/a2a-servers/{old['id']}/delete")
            assert r.status_code == 404 and error_of(r)["code"] == "A2A_SERVER_NOT_FOUND"
            assert [t["tool_name"] for t in (await user.client.get("/api/user/tools/a2a")).json()["tools"]] == [
                "Helper"
            ]
            await user.client.aclose()
