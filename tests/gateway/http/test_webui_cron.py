"""The cron screen in a real Chromium against a real gateway: edit a job, give it a timezone, see a refused schedule
explained, and read the run history (an ok run and an error run, newest first)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import trio
from playwright.sync_api import Page

from tests.conftest import RunningGateway, make_config, start_gateway
from tests.gateway.browser import failed_loads, in_browser, login_with_account, require_chromium, texts
from tests.gateway.rest import register


async def _ended_runs(client: httpx.AsyncClient, job_id: str, count: int) -> list[dict[str, Any]]:
    """The job's runs once `count` are stored and none is still running (waits on the stored rows)."""
    while True:
        runs: list[dict[str, Any]] = (await client.get(f"/api/cron/{job_id}/runs")).json()["runs"]
        if len(runs) >= count and all(r["status"] != "running" for r in runs):
            return runs
        await trio.sleep(0.02)


async def test_edit_a_job_set_its_timezone_and_read_its_runs(nursery: trio.Nursery, tmp_path: Path) -> None:
    require_chromium()
    gw: RunningGateway = await start_gateway(nursery, *make_config(tmp_path))
    await register(gw, "root")
    bob = await register(gw, "bob", "bobs long password")
    seen: dict[str, Any] = {}
    with trio.fail_after(30):
        sid = (await bob.client.post("/api/sessions", json={"title": "digest"})).json()["session_id"]
        made = await bob.client.post(
            "/api/cron/create", json={"name": "digest", "cron": "0 9 * * *", "session_id": sid, "prompt": "summarise"}
        )
        job = made.json()
        # One run that ends ok, then one whose target session is gone (an error with its reason).
        assert (await bob.client.post("/api/cron/trigger", json={"job_id": job["id"]})).json()["status"] == "ok"
        await _ended_runs(bob.client, job["id"], 1)
        gone = (await bob.client.post("/api/sessions", json={})).json()["session_id"]
        other = (
            await bob.client.post(
                "/api/cron/create", json={"name": "orphan", "interval_seconds": 3600, "session_id": gone, "prompt": "x"}
            )
        ).json()
        assert (await bob.client.delete(f"/api/sessions/{gone}")).status_code == 200
        assert (await bob.client.post("/api/cron/trigger", json={"job_id": other["id"]})).json()["status"] == "failed"

    def card(page: Page, name: str) -> Any:
        return page.locator(".cron-job", has=page.locator("strong", has_text=name))

    def scenario(page: Page) -> None:
        login_with_account(page, "bob", "bobs long password")
        page.click("#nav a[data-route=cron]")
        digest = card(page, "digest")
        digest.wait_for()
        seen["before"] = digest.locator(".meta").inner_text()

        # Edit: an impossible date and an unknown zone are refused in the card, the job unchanged.
        digest.locator("button", has_text="Edit").click()
        form = digest.locator("form.cron-edit")
        form.locator(".cron-edit-when").fill("0 0 31 2 *")
        form.locator("button[type=submit]").click()
        seen["impossible"] = form.locator(".form-error").inner_text()
        seen["impossible_marked"] = form.locator(".cron-edit-when").get_attribute("aria-invalid")
        form.locator(".cron-edit-when").fill("30 7 * * 1-5")
        form.locator(".cron-edit-timezone").fill("Mars/Olympus_Mons")
        form.locator("button[type=submit]").click()
        form.locator(".form-error", has_text="IANA").wait_for()
        seen["unknown_zone"] = form.locator(".form-error").inner_text()
        seen["zone_marked"] = form.locator(".cron-edit-timezone").get_attribute("aria-invalid")

        # Then a good one: weekdays at 07:30 in Berlin, and a new name and prompt.
        form.locator(".cron-edit-timezone").fill("Europe/Berlin")
        form.locator(".cron-edit-name").fill("berlin digest")
        form.locator(".cron-edit-prompt").fill("summarise the night")
        form.locator("button[type=submit]").click()
        page.wait_for_selector(".toast:has-text('Job saved')")
        edited = card(page, "berlin digest")
        edited.wait_for()
        seen["after"] = edited.locator(".meta").inner_text()
        seen["prompt"] = edited.locator(".body").inner_text()

        # History, newest first: the manual run, ok.
        edited.locator("button", has_text="History").click()
        edited.locator(".cron-run").first.wait_for()
        seen["runs"] = texts(page, ".cron-job[data-job] .cron-run .pill")
        seen["run_text"] = edited.locator(".cron-run").first.inner_text()
        orphan = card(page, "orphan")
        orphan.locator("button", has_text="History").click()
        orphan.locator(".cron-run.run-error").wait_for()
        seen["error_run"] = orphan.locator(".cron-run").first.inner_text()

    with trio.fail_after(90):
        console = await in_browser(gw.base_url, scenario)
        jobs = {j["name"]: j for j in (await bob.client.get("/api/cron")).json()["jobs"]}
    # The two refused edits are the only failed requests (422s), and nothing else went wrong on the page.
    assert failed_loads(console.errors, gw.base_url) == [(422, f"/api/cron/{job['id']}")] * 2
    assert "cron 0 9 * * * (UTC)" in seen["before"]
    assert "never fires" in seen["impossible"] and seen["impossible_marked"] == "true"
    assert "not an IANA timezone" in seen["unknown_zone"] and seen["zone_marked"] == "true"
    assert "cron 30 7 * * 1-5 (Europe/Berlin)" in seen["after"] and "07:30 Europe/Berlin" in seen["after"]
    assert seen["prompt"] == "summarise the night"
    saved = jobs["berlin digest"]
    assert (saved["cron"], saved["timezone"], saved["prompt"]) == (
        "30 7 * * 1-5",
        "Europe/Berlin",
        "summarise the night",
    )
    local = datetime.fromisoformat(saved["next_fire_local"])
    assert (local.hour, local.minute) == (7, 30) and local.weekday() < 5
    assert seen["runs"] == ["ok"] and "manual" in seen["run_text"]
    assert "error" in seen["error_run"] and "no longer exists" in seen["error_run"]
    await gw.stop()
