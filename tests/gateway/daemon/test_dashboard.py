"""`gateway dashboard` against a real gateway process: the link opens the web UI in Chromium signed in as the
owner, once; a used or expired link is refused; only the code's hash is stored."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page

from storage.clock import now_ms
from tests.gateway.browser import DESKTOP, Console, chromium, require_chromium
from tests.gateway.harness import Site


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    yield s
    s.cleanup()


def _open(url: str, scenario: Callable[[Page], None]) -> Console:
    """A fresh browser context (no cookies, no storage: a profile that never saw the gateway) opening `url` itself,
    as a click on the printed link does; in the test process's shared Chromium, as the other web UI tests do."""

    def job(browser: Browser) -> Console:
        console = Console()
        context = browser.new_context(viewport=DESKTOP)  # type: ignore[arg-type]
        try:
            page = context.new_page()
            page.set_default_timeout(15_000)
            page.on("console", console.on_message)
            page.on("pageerror", console.on_page_error)
            page.goto(url)
            scenario(page)
        finally:
            context.close()
        return console

    return chromium.run(job)


def _links(site: Site) -> dict[str, int]:
    with sqlite3.connect(site.paths.db_file) as conn:
        rows = conn.execute("SELECT key, value FROM settings WHERE key GLOB 'login_link:*'").fetchall()
    return {k: int(v) for k, v in rows}


def _dashboard(site: Site) -> tuple[str, int]:
    before = now_ms()
    r = site.cli("dashboard")
    assert r.returncode == 0, r.stderr
    link = r.stdout.strip()
    key = "login_link:" + hashlib.sha256(link.rsplit("/", 1)[1].encode()).hexdigest()
    expires_at = _links(site)[key]
    # Five minutes from when the command ran (bounded by the clock read around it, not by how long it took).
    assert before + 300_000 <= expires_at <= now_ms() + 300_000
    return link, expires_at


def _refused(page: Page, seen: dict[str, Any]) -> None:
    page.wait_for_selector("#login-error:not(:empty)")
    seen["error"] = page.inner_text("#login-error")
    seen["hash"] = page.evaluate("location.hash")
    seen["auth"] = page.evaluate("localStorage.getItem('gateway.auth')")


def test_the_link_signs_the_owner_in_once_and_expires(site: Site) -> None:
    require_chromium()
    offline = site.cli("dashboard")
    assert offline.returncode == 0 and "not running" in offline.stderr
    assert offline.stdout.startswith("http://127.0.0.1:0/#/signin/")  # the config's address (port 0: unknown)
    site.spawn("serve")
    info = site.wait_serving()
    assert info.url is not None
    token = site.paths.token_file.read_text().strip()

    link, _ = _dashboard(site)
    assert link.startswith(f"{info.url.rstrip('/')}/#/signin/"), link
    code = link.rsplit("/", 1)[1]
    stored = _links(site)
    assert all(code not in k and code not in str(v) for k, v in stored.items()), "only the code's hash is kept"

    seen: dict[str, Any] = {}

    def signed_in(page: Page) -> None:
        page.wait_for_selector(".overview[data-drawn]")
        seen["who"] = page.inner_text("#nav .who")
        seen["hash"] = page.evaluate("location.hash")
        seen["auth"] = page.evaluate("JSON.parse(localStorage.getItem('gateway.auth'))")
        page.wait_for_selector("#ov-health .ok, #ov-health :text('storage')")
        seen["health"] = page.inner_text("#ov-health")

    console = _open(link, signed_in)
    assert console.errors == []
    assert seen["who"] == "gateway token (admin)"  # the owner's view
    assert seen["hash"] == "#/overview", "the code left the address bar and the history"
    assert seen["auth"] == {"kind": "token", "token": token}
    assert "storage" in seen["health"]  # the owner's overview (an account would not see the services)

    # The same link a second time, in another browser: refused, nobody signed in.
    again: dict[str, Any] = {}
    console = _open(link, lambda page: _refused(page, again))
    assert "used already or has expired" in again["error"] and "gateway dashboard" in again["error"]
    assert again["auth"] is None and again["hash"] == "#/overview"
    assert [line for line in console.errors if "401" not in line] == []

    # An expired link: the clock is moved past its expiry in the stored row (no waiting five minutes).
    expired = _dashboard(site)[0]
    key = "login_link:" + hashlib.sha256(expired.rsplit("/", 1)[1].encode()).hexdigest()
    with sqlite3.connect(site.paths.db_file) as conn:
        conn.execute("UPDATE settings SET value = ? WHERE key = ?", (str(now_ms() - 1), key))
    late: dict[str, Any] = {}
    _open(expired, lambda page: _refused(page, late))
    assert "used already or has expired" in late["error"] and late["auth"] is None
    assert key not in _links(site), "a refused code is gone too"

    with httpx.Client(base_url=info.url, timeout=30) as http:
        r = http.post("/api/auth/owner-link", json={"code": "not-a-code"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "INVALID_LINK"
        assert http.post("/api/auth/owner-link", json={"code": code}).status_code == 401
        assert http.post("/api/auth/owner-link", json={}).status_code == 422
        fresh = _dashboard(site)[0].rsplit("/", 1)[1]
        ok = http.post("/api/auth/owner-link", json={"code": fresh})
        assert ok.status_code == 200 and ok.json() == {"token": token}
        assert ok.headers["cache-control"] == "no-store"


def test_a_link_for_a_proxy_address(site: Site) -> None:
    r = site.cli("dashboard", "--url", "https://gw.example.org/")
    assert r.returncode == 0 and r.stdout.startswith("https://gw.example.org/#/signin/")
    bad = site.cli("dashboard", "--url", "gw.example.org")
    assert bad.returncode == 2 and "web UI's address" in bad.stderr


def test_dashboard_json(site: Site) -> None:
    r = site.cli("dashboard", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["running"] is False and data["url"].startswith("http://127.0.0.1:0/#/signin/")
    key = "login_link:" + hashlib.sha256(data["url"].rsplit("/", 1)[1].encode()).hexdigest()
    assert _links(site)[key] == data["expires_at"]
