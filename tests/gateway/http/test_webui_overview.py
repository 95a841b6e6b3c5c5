"""The overview screen in a real Chromium against a real gateway: health, connectors and their state, the sessions
with a turn under way, the latest errors; an account sees its own part and is asked for nothing it may not read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
from playwright.sync_api import Page

from tests.conftest import TOKEN, make_config, start_gateway
from tests.gateway.browser import in_browser, login_with_account, login_with_token, require_chromium
from tests.gateway.http.test_webui import WORDS, captured_logs
from tests.gateway.rest import admin_client, register


async def test_the_overview_shows_health_connectors_live_sessions_and_recent_errors(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    require_chromium()
    gw = await start_gateway(nursery, *make_config(tmp_path, providers={"echo": {"delay_ms": 40.0}}))
    async with admin_client(gw) as client:
        r = await client.put("/v1/runtime/connectors/http/intake", json={"allow_unauthenticated_ingress": True})
        assert r.status_code == 201, r.text
    seen: dict[str, Any] = {}

    with captured_logs("gateway.overview-probe") as log:
        log.error("overview-probe: the disk is on fire")

        def scenario(page: Page) -> None:
            login_with_token(page, TOKEN)
            page.fill("#composer-input", WORDS)  # 200 words, 40 ms each: still running while we look
            page.press("#composer-input", "Enter")
            page.wait_for_selector(".msg.assistant.streaming")
            page.click("#nav a[data-route=overview]")
            page.wait_for_selector("#ov-connectors .ov-connector[data-connector='http/intake']")
            page.wait_for_selector("#ov-sessions .ov-live")
            page.wait_for_selector("#ov-errors .log")
            seen["health"] = page.inner_text("#ov-health")
            seen["connector"] = page.inner_text("#ov-connectors")
            seen["live"] = page.inner_text("#ov-sessions")
            seen["errors"] = page.inner_text("#ov-errors")
            page.click("#ov-sessions .ov-live a")  # a live session opens in the chat
            page.wait_for_selector(".msg.user")
            seen["hash"] = page.evaluate("location.hash")

        with trio.fail_after(60):
            console = await in_browser(gw.base_url, scenario)
    assert console.errors == []
    assert "gateway" in seen["health"] and "ok" in seen["health"] and "storage" in seen["health"]
    assert "{" not in seen["health"], "a service's details are summed up, not dumped as JSON"
    assert "http/intake" in seen["connector"] and "running" in seen["connector"]
    assert "1 with a turn under way" in seen["live"] and "running" in seen["live"]
    assert "overview-probe: the disk is on fire" in seen["errors"] and "ERROR" in seen["errors"].upper()
    assert seen["hash"].startswith("#/chat/")
    await gw.stop()


async def test_an_account_sees_health_and_its_sessions_and_asks_for_nothing_else(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    require_chromium()
    gw = await start_gateway(nursery, *make_config(tmp_path))
    await register(gw, "root")
    await register(gw, "erin", "erins long password")
    seen: dict[str, Any] = {}

    def scenario(page: Page) -> None:
        login_with_account(page, "erin", "erins long password")
        page.click("#nav a[data-route=overview]")
        page.wait_for_selector(".overview[data-drawn]")
        seen["health"] = page.inner_text("#ov-health")
        seen["connectors"] = page.inner_text("#ov-connectors")
        seen["errors"] = page.inner_text("#ov-errors")
        seen["live"] = page.inner_text("#ov-sessions")
        page.click("#nav a[data-route=users]")
        seen["users"] = page.inner_text("#view .notice")

    with trio.fail_after(60):
        console = await in_browser(gw.base_url, scenario)
    assert console.errors == []  # no /api/status, /api/logs or /api/admin/* asked: each would answer 403
    assert "gateway" in seen["health"] and "ok" in seen["health"] and "storage" not in seen["health"]
    assert "needs the gateway token or an admin account" in seen["connectors"]
    assert "needs the gateway token or an admin account" in seen["errors"]
    assert "0 with a turn under way" in seen["live"]
    assert "needs the gateway token or an admin account" in seen["users"]
    await gw.stop()
