"""MCP servers as tools: a real stdio server written with the SDK, the hub, the tool box and the tool loop."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

from actors.mcp import McpHub, McpToolBox, function_name
from actors.messages import SessionKey
from actors.providers.base import TextDelta, ToolActivity, TurnRequest
from actors.providers.openai import OpenAIProvider, OpenAISettings
from actors.supervisor import Restart, RestartPolicy
from storage.mcp import McpServerRow
from tests.fakes.openai_server import FakeOpenAI, Script

SERVER = str(Path(__file__).resolve().parents[1] / "fakes" / "mcp_calc_server.py")


def calc(name: str = "calc", *, enabled: bool = True) -> McpServerRow:
    return McpServerRow(
        name=name,
        transport="stdio",
        enabled=enabled,
        command=sys.executable,
        args=[SERVER],
        env={"CALC_SECRET": "s3cret-canary"},
    )


async def test_hub_lists_and_calls_tools_of_a_stdio_server(nursery: trio.Nursery) -> None:
    hub: McpHub = await nursery.start(McpHub().run)
    hub.apply([calc()])
    with trio.fail_after(30):
        await hub.wait_state("calc", "connected")
        assert {t.name for t in hub.tools()} == {"add", "echo", "crash"}
        box = McpToolBox(hub)
        names = {s["function"]["name"] for s in box.specs()}
        assert names == {"calc__add", "calc__echo", "calc__crash"}
        assert await box.call("calc__add", {"a": 2, "b": 40}) == "42"
        assert await box.call("calc__echo", {"text": "hi"}) == "echo: hi (secret env set)"
        with pytest.raises(LookupError):
            await box.call("calc__nope", {})


async def test_a_crashed_server_is_restarted(nursery: trio.Nursery) -> None:
    hub: McpHub = await nursery.start(McpHub(policy=RestartPolicy(Restart.PERMANENT, 5, 60, backoff=0.05)).run)
    hub.apply([calc()])
    with trio.fail_after(60):
        await hub.wait_state("calc", "connected")
        with pytest.raises(Exception):  # noqa: B017 - the SDK's error type for a dead peer varies
            await hub.call("calc", "crash", {})
        await hub.wait_state("calc", "connected")
        assert await hub.call("calc", "add", {"a": 1, "b": 1}) == "2"
        assert hub.status()["calc"]["restarts"] >= 1


async def test_disabling_a_server_stops_it_and_a_bad_command_reports_an_error(nursery: trio.Nursery) -> None:
    hub: McpHub = await nursery.start(McpHub(policy=RestartPolicy(Restart.PERMANENT, 1, 60, backoff=0.05)).run)
    bad = McpServerRow(name="bad", transport="stdio", enabled=True, command="/nonexistent/mcp-server")
    hub.apply([calc(), bad])
    with trio.fail_after(30):
        await hub.wait_state("calc", "connected")
        await hub.wait_state("bad", "failed")
        assert hub.servers["bad"].last_error is not None
        hub.apply([calc(enabled=False)])
        assert "calc" not in hub.servers
        assert hub.tools() == []


async def test_the_openai_tool_loop_calls_a_real_mcp_tool(nursery: trio.Nursery) -> None:
    fake = FakeOpenAI()
    await fake.start(nursery)
    hub: McpHub = await nursery.start(McpHub().run)
    hub.apply([calc()])
    fake.scripts.extend(
        [Script(tool_calls=[("call_1", function_name("calc", "add"), ['{"a": 20, "b": 22}'])]), Script(texts=["42!"])]
    )
    provider = OpenAIProvider(OpenAISettings(base_url=fake.base_url, api_key="k"), tools=McpToolBox(hub))
    with trio.fail_after(30):
        await hub.wait_state("calc", "connected")
        req = TurnRequest(session_id="s", key=SessionKey("api", "1"), prompt="20+22?")
        events = [e async for e in provider.start_turn(req).events()]
    assert events == [ToolActivity("calc__add"), TextDelta("42!")]
    assert fake.requests[1]["messages"][-1] == {"role": "tool", "tool_call_id": "call_1", "content": "42"}
    assert {t["function"]["name"] for t in fake.requests[0]["tools"]} == {"calc__add", "calc__echo", "calc__crash"}


async def test_an_http_server_is_reached_only_where_the_outbound_policy_allows(nursery: trio.Nursery) -> None:
    from gateway.outbound import OutboundPolicy
    from tests.fakes.http_server import serve_app
    from tests.fakes.mcp_calc_server import app

    base = await serve_app(nursery, app.streamable_http_app())
    policy = RestartPolicy(Restart.PERMANENT, 1, 60, backoff=0.05)
    hub: McpHub = await nursery.start(McpHub(policy=policy, http_client=OutboundPolicy().client2).run)
    url = base.replace("127.0.0.1", "localhost") + "/mcp"
    hub.apply(
        [
            McpServerRow(name="admins", transport="streamable_http", enabled=True, url=url),
            McpServerRow(name="owners", transport="streamable_http", enabled=True, url=url, url_by_owner=True),
        ]
    )
    with trio.fail_after(30):
        await hub.wait_state("owners", "connected")
        assert await hub.call("owners", "add", {"a": 2, "b": 3}) == "5"
        st = await hub.wait_state("admins", "failed")
        assert st.last_error is not None and "refused by the outbound policy" in st.last_error
