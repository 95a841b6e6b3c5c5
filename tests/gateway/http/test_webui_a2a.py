"""The web UI in Chromium: an admin registers an A2A agent (a fake on loopback), sees its card, switches it off for
their own chats and disables it for everyone; the gateway's API agrees."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
from playwright.sync_api import Page

from tests.conftest import TOKEN, make_config, start_gateway
from tests.fakes.a2a_server import FakeA2AAgent
from tests.gateway.browser import failed_loads, in_browser, login_with_token, require_chromium
from tests.gateway.rest import admin_client


async def test_register_an_agent_and_switch_it_off_for_myself(nursery: trio.Nursery, tmp_path: Path) -> None:
    require_chromium()
    gw = await start_gateway(nursery, *make_config(tmp_path))
    agent = FakeA2AAgent(streaming=True)
    await agent.start(nursery)
    seen: dict[str, Any] = {}

    def scenario(page: Page) -> None:
        login_with_token(page, TOKEN)
        page.click("#nav a[data-route=mcp]")
        page.fill("#a2a-url", "not a url")
        page.click("#a2a-form button[type=submit]")
        seen["error"] = page.locator("#a2a-error").inner_text()
        page.fill("#a2a-url", agent.base_url)
        page.click("#a2a-form button[type=submit]")
        card = page.locator(".a2a-agent")
        card.wait_for()
        seen["card"] = card.inner_text()
        mine = page.locator(".my-agent")
        mine.wait_for()
        mine.locator("input.switch").click()
        page.wait_for_function(
            "() => document.querySelector('.my-agent label.check')?.textContent.trim() === 'off in my chats'"
        )
        card.locator("input.switch").click()
        page.wait_for_selector(".my-agent .tag")
        seen["mine"] = page.locator(".my-agent").inner_text()

    with trio.fail_after(90):
        console = await in_browser(gw.base_url, scenario)
        async with admin_client(gw) as admin:
            agents = (await admin.get("/api/app-config/a2a-servers")).json()["a2a_servers"]
            prefs = (await admin.get("/api/user/tools/a2a")).json()["tools"]
    # The one failed load is the refused base URL, shown in the form.
    assert failed_loads(console.errors, gw.base_url) == [(422, "/api/app-config/a2a-servers")]
    assert "base_url" in seen["error"]
    assert "Travel Planner" in seen["card"] and "Plans trips by train." in seen["card"] and "streams" in seen["card"]
    assert "Disabled for everyone" in seen["mine"]
    assert [(a["name"], a["enabled"], a["streaming"]) for a in agents] == [("Travel Planner", False, True)]
    assert [(p["tool_name"], p["enabled_user"]) for p in prefs] == [("Travel Planner", False)]
    await gw.stop()
