"""The Usage screen in a real Chromium against a real gateway: tokens per day and per model with totals (estimated
counts marked), an account seeing only its own; an admin setting a daily cap on the Users screen, which the
account then sees reached."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import trio
from playwright.sync_api import Page

from tests.conftest import TOKEN, make_config, start_gateway
from tests.fakes.openai_server import FakeOpenAI, Script
from tests.gateway.browser import (
    failed_loads,
    in_browser,
    login_with_account,
    login_with_token,
    require_chromium,
    sign_out,
    texts,
)
from tests.gateway.rest import admin_client, register

ANN = "anns long password"


def _cells(page: Page, table: str) -> list[list[str]]:
    rows = page.locator(f"{table} tr")
    return [[c.strip() for c in rows.nth(i).locator("th, td").all_inner_texts()] for i in range(rows.count())]


async def test_the_usage_screen_and_a_cap_set_on_the_users_screen(nursery: trio.Nursery, tmp_path: Path) -> None:
    require_chromium()
    fake = FakeOpenAI()
    base = await fake.start(nursery)
    gw = await start_gateway(
        nursery, *make_config(tmp_path, providers={"openai": {"base_url": base, "model": "fake-gpt"}})
    )
    seen: dict[str, Any] = {}
    try:
        with trio.fail_after(60):
            await register(gw, "root")
            ann = await register(gw, "ann", ANN)
            async with ann.client, admin_client(gw) as owner:
                r = await ann.client.post("/api/agent", json={"message": "count me in please", "timeout": 30})
                assert r.status_code == 200 and r.json()["usage"]["total_tokens"] == 14, r.text
                ann_sid = r.json()["session_id"]
                listed = (await ann.client.get("/api/sessions")).json()["sessions"]
                ann_key = next(x["key"] for x in listed if x["session_id"] == ann_sid)
                made = await owner.post(
                    "/api/sessions", json={"channel": "api", "chat_id": "9", "provider": "openai", "title": "Big one"}
                )
                assert made.status_code == 201, made.text
                fake.scripts.append(Script(texts=["1,000 ", "tokens"], usage=(1200, 34)))
                async with owner.stream(
                    "POST", f"/api/sessions/{made.json()['session_id']}/chat", json={"message": "big"}
                ) as s:
                    assert s.status_code == 200
                    await s.aread()

        def scenario(page: Page) -> None:
            login_with_token(page, TOKEN)
            page.click("#nav a[data-route=usage]")
            page.wait_for_selector("#usage-days-box[data-drawn='1'] #usage-days")
            seen["days"] = _cells(page, "#usage-days")
            seen["models"] = _cells(page, "#usage-models")
            seen["sessions"] = _cells(page, "#usage-sessions")
            seen["session_link"] = page.get_attribute("#usage-sessions tbody tr:first-child a", "href")
            seen["today_owner"] = page.locator("#usage-today-line").count()
            page.fill("#usage-user", "none")  # the gateway token's own turns only
            page.click("#usage-range button[type=submit]")
            page.wait_for_selector("#usage-models tbody tr[data-key='echo']", state="detached")
            seen["none_models"] = _cells(page, "#usage-models")
            # Each reply in the chat says what it cost.
            page.click("#nav a[data-route=chat]")
            page.fill("#composer-input", "hello usage")
            page.press("#composer-input", "Enter")
            page.wait_for_selector(".msg.assistant.done .usage-line")
            seen["reply_usage"] = page.inner_text(".msg.assistant.done .usage-line")
            page.click("#nav a[data-route=users]")
            row = page.locator("article.user[data-user=ann]")
            row.locator("input.user-cap").fill("14")
            row.locator("button:has-text('Set cap')").click()
            page.wait_for_selector(".toast:has-text('daily cap 14')")
            seen["placeholder"] = page.get_attribute("article.user[data-user=root] input.user-cap", "placeholder")
            sign_out(page)
            login_with_account(page, "ann", ANN)
            page.click("#nav a[data-route=usage]")
            page.wait_for_selector("#usage-days-box[data-drawn='1'] #usage-days")
            seen["ann_models"] = texts(page, "#usage-models tbody th")
            seen["ann_today"] = page.inner_text("#usage-today-line")
            seen["ann_user_field"] = page.locator("#usage-user").count()
            page.fill("#usage-from", "2099-01-01")
            page.fill("#usage-to", "2099-01-31")
            page.click("#usage-range button[type=submit]")
            page.wait_for_selector("#usage-days-box p#usage-days")
            seen["empty"] = page.inner_text("#usage-days-box")
            # Over the cap, the chat says why at once (no retry of a 429 that only midnight ends).
            page.click("#nav a[data-route=chat]")
            page.fill("#composer-input", "over the cap")
            page.press("#composer-input", "Enter")
            page.wait_for_selector(".toast:has-text('daily token cap is reached')")

        with trio.fail_after(90):
            console = await in_browser(gw.base_url, scenario)
            async with admin_client(gw) as owner:
                caps = (await owner.get("/api/admin/usage-caps")).json()
    finally:
        await gw.stop()
    failed = failed_loads(console.errors, gw.base_url)
    assert len(failed) == 1 and failed[0][0] == 429 and failed[0][1].endswith("/chat"), console.errors
    today = dt.datetime.now(dt.UTC).date().isoformat()
    head, *body, total = seen["days"]
    assert head == ["day (UTC)", "in", "out", "total", "turns", "estimated"]
    assert body == [[today, "1,209", "39", "1,248", "2", "1 estimated"]]
    assert total == ["total", "1,209", "39", "1,248", "2", "1 estimated"]
    models = {row[0]: row for row in seen["models"][1:-1]}
    assert models["fake-gpt"] == ["fake-gpt", "1,200", "34", "1,234", "1", "—"]
    assert models["echo"] == ["echo", "9", "5", "14", "1", "1 estimated"]
    assert list(models) == ["fake-gpt", "echo"], "the largest first"
    head, *sessions, total = seen["sessions"]
    assert head[0] == "session" and total == ["total", "1,209", "39", "1,248", "2", "1 estimated"]
    assert [row[0] for row in sessions] == ["Big one", ann_key], "by title (else key), the largest first"
    assert sessions[0][1:] == ["1,200", "34", "1,234", "1", "—"]
    assert seen["session_link"] == f"#/chat/{made.json()['session_id']}"
    assert seen["today_owner"] == 0, "everyone's view has no single cap to show"
    assert [row[0] for row in seen["none_models"][1:-1]] == ["fake-gpt"]
    assert seen["reply_usage"] == "10 tokens: 7 in, 3 out (estimated)"
    assert seen["placeholder"] == "no cap"
    assert caps["caps"] == {ann.id: 14}
    assert seen["ann_models"] == ["echo"], "an account sees its own turns only"
    assert "14 tokens of a daily cap of 14" in seen["ann_today"] and "refused until midnight UTC" in seen["ann_today"]
    assert seen["ann_user_field"] == 0
    assert "No turns in this range" in seen["empty"]
