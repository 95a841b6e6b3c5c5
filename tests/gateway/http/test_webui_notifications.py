"""The web UI in Chromium gets a new notification pushed over its SSE stream: shown without a reload or a poll."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import trio
from playwright.sync_api import Page, Request

from tests.conftest import make_config, start_gateway
from tests.gateway.browser import in_browser, login_with_account, require_chromium, to_trio
from tests.gateway.http.test_notifications_stream import cron_run
from tests.gateway.rest import register


async def test_an_account_sees_a_new_notification_pushed_without_polling(nursery: trio.Nursery, tmp_path: Path) -> None:
    require_chromium()
    gw = await start_gateway(nursery, *make_config(tmp_path))
    await register(gw, "root")
    erin = await register(gw, "erin", "erins long password")
    seen: dict[str, Any] = {}
    asked: list[str] = []  # every request for notifications the page made, by path

    def count(request: Request) -> None:
        path = urlparse(request.url).path
        if path.startswith("/api/notifications"):
            asked.append(path)

    def scenario(page: Page) -> None:
        page.on("request", count)
        login_with_account(page, "erin", "erins long password")
        page.wait_for_selector("#bell[data-push=live]")
        seen["before"] = list(asked)
        to_trio(cron_run, erin, "evening digest")
        seen["toast"] = page.locator(".toast.note").first.inner_text()
        page.wait_for_selector("#bell .badge:not([hidden])")
        seen["badge"] = page.inner_text("#bell .badge")
        # Two minutes of the page's timers: the old 15 s poll would have asked eight times by now.
        page.clock.run_for(120_000)
        seen["after"] = list(asked)
        page.click("#bell")
        page.wait_for_selector("#notifications .note.unread")
        seen["listed"] = page.locator("#notifications .note.unread strong").all_inner_texts()

    try:
        with trio.fail_after(90):
            console = await in_browser(gw.base_url, scenario, before_load=lambda page: page.clock.install())
    finally:
        await erin.client.aclose()
    assert console.errors == []
    assert "evening digest" in seen["toast"]
    assert seen["badge"] == "1"
    # Signing in reads the count once and opens the stream; then nothing asks for notifications until the screen does.
    assert sorted(seen["before"]) == ["/api/notifications/stream", "/api/notifications/unread-count"]
    assert seen["after"] == seen["before"]
    assert seen["listed"] == ["Cron evening digest: completed"]
    await gw.stop()
