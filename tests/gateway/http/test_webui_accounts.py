"""Accounts in a real Chromium against a real gateway: changing one's own password, the Users screen of an admin
account (what only the owner may do shown disabled with the reason, never asked for), and the owner's own powers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio
from playwright.sync_api import Page

from tests.conftest import TOKEN, RunningGateway, make_config, start_gateway
from tests.gateway.browser import (
    failed_loads,
    in_browser,
    login_with_account,
    login_with_token,
    require_chromium,
    to_trio,
)
from tests.gateway.rest import admin_client, register

ERIN = "erins long password"
NEW = "a new and longer password"


async def _login_status(gw: RunningGateway, username: str, password: str) -> int:
    async with httpx.AsyncClient(base_url=gw.base_url) as anon:
        r = await anon.post("/api/auth/login", json={"username": username, "password": password})
    return r.status_code


async def _users(gw: RunningGateway) -> dict[str, dict[str, Any]]:
    async with admin_client(gw) as owner:
        listed = (await owner.get("/api/admin/users")).json()["users"]
    return {u["username"]: u for u in listed}


async def test_an_account_changes_its_own_password_and_stays_signed_in(nursery: trio.Nursery, tmp_path: Path) -> None:
    require_chromium()
    gw = await start_gateway(nursery, *make_config(tmp_path))
    await register(gw, "root")
    other_session = await register(gw, "erin", ERIN)  # erin signed in elsewhere too: that session ends
    seen: dict[str, Any] = {}

    def change(page: Page, current: str, new: str, again: str) -> None:
        page.fill("#pw-current", current)
        page.fill("#pw-new", new)
        page.fill("#pw-again", again)
        page.click("#password-form button[type=submit]")

    def scenario(page: Page) -> None:
        login_with_account(page, "erin", ERIN)
        page.click("#nav a[data-route=account]")
        seen["who"] = page.inner_text("#account-who")
        change(page, "not my password", NEW, NEW)
        page.wait_for_selector("#pw-refused")
        seen["wrong"] = page.inner_text("#pw-refused")
        seen["wrong_marked"] = page.get_attribute("#pw-current", "aria-invalid")
        change(page, ERIN, NEW, NEW + "!")
        seen["differ"] = page.inner_text("#pw-error")
        change(page, ERIN, NEW, NEW)
        page.wait_for_selector(".toast:has-text('Password changed')")
        seen["fields"] = [page.input_value(f) for f in ("#pw-current", "#pw-new", "#pw-again")]
        page.reload()  # the new tokens were kept: still signed in, and the API takes them
        page.click("#nav a[data-route=sessions]")
        page.wait_for_selector(".view-sessions .session")
        seen["signed_in"] = page.locator("#token-form").count() == 0

    with trio.fail_after(60):
        console = await in_browser(gw.base_url, scenario)
        old_gone = (await other_session.client.get("/api/auth/me")).status_code
        await other_session.client.aclose()
        logins = (await _login_status(gw, "erin", ERIN), await _login_status(gw, "erin", NEW))
    # The wrong current password is refused by the gateway (and the console reports that request), nothing else.
    assert failed_loads(console.errors, gw.base_url) == [(401, "/api/auth/me/password")]
    assert "erin" in seen["who"] and "user" in seen["who"]
    assert "the current password is wrong" in seen["wrong"] and seen["wrong_marked"] == "true"
    assert "differ" in seen["differ"]
    assert seen["fields"] == ["", "", ""]
    assert seen["signed_in"] is True
    assert old_gone == 401, "the account's other session was signed out"
    assert logins == (401, 200)
    await gw.stop()


async def test_an_admin_account_manages_users_and_is_offered_no_owner_only_action(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    require_chromium()
    gw = await start_gateway(nursery, *make_config(tmp_path))
    await register(gw, "root", "roots long password")  # the first account: an admin (super_admin)
    await register(gw, "erin", ERIN)
    await register(gw, "ada", "adas long password", role="super_admin")  # another admin, made by the owner
    seen: dict[str, Any] = {}

    def row(page: Page, name: str) -> Any:
        return page.locator(f".card.user[data-user='{name}']")

    def controls(page: Page, name: str) -> dict[str, Any]:
        r = row(page, name)
        return {
            "role": r.locator("select.user-role").is_disabled(),
            "ban": r.locator("button", has_text="Ban").is_disabled(),
            "delete": r.locator("button", has_text="Delete").is_disabled(),
            "why": r.locator(".why").inner_text() if r.locator(".why").count() else "",
        }

    def scenario(page: Page) -> None:
        login_with_account(page, "root", "roots long password")
        page.click("#nav a[data-route=users]")
        row(page, "ada").wait_for()
        seen["note"] = page.inner_text("#owner-note")
        seen["root"], seen["ada"], seen["erin"] = (controls(page, n) for n in ("root", "ada", "erin"))
        row(page, "erin").locator("button", has_text="Ban").click()
        page.wait_for_selector(".card.user[data-user='erin'] .pill.status-banned")
        seen["banned"] = to_trio(_users, gw)["erin"]["status"]
        row(page, "erin").locator("button", has_text="Unban").click()
        page.wait_for_selector(".card.user[data-user='erin'] .pill.status-active")
        seen["admin_option"] = page.is_disabled("#new-role option[value=super_admin]")
        page.fill("#new-username", "finn")
        page.fill("#new-password", "short")
        page.click("#user-create button[type=submit]")
        page.wait_for_selector("#user-create-error")
        seen["refused"] = page.inner_text("#user-create-error")
        page.fill("#new-password", "finns long password")
        page.click("#user-create button[type=submit]")
        row(page, "finn").wait_for()
        row(page, "finn").locator("button", has_text="Delete").click()
        row(page, "finn").locator("button", has_text="Really delete?").click()
        page.wait_for_selector(".card.user[data-user='finn']", state="detached")
        page.click("text=Make an invite code")
        seen["invite"] = page.inner_text("#invite-code")

    with trio.fail_after(60):
        console = await in_browser(gw.base_url, scenario)
        users = await _users(gw)
    assert failed_loads(console.errors, gw.base_url) == [(422, "/api/admin/users")]  # the short password
    assert "password" in seen["refused"]
    assert "only by the owner" in seen["note"]
    assert seen["root"] == {"role": True, "ban": True, "delete": True, "why": seen["root"]["why"]}
    assert "your own account" in seen["root"]["why"]
    assert seen["ada"]["role"] and seen["ada"]["ban"] and seen["ada"]["delete"]
    assert "an admin account: only the owner" in seen["ada"]["why"]
    assert seen["erin"]["role"] is True and seen["erin"]["ban"] is False and seen["erin"]["delete"] is False
    assert "roles: only the owner" in seen["erin"]["why"]
    assert seen["banned"] == "banned" and users["erin"]["status"] == "active"
    assert seen["admin_option"] is True
    assert "finn" not in users and set(users) == {"root", "erin", "ada"}
    assert len(seen["invite"]) >= 16
    await gw.stop()


async def test_the_gateway_token_changes_roles_and_may_act_on_admin_accounts(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    require_chromium()
    gw = await start_gateway(nursery, *make_config(tmp_path))
    await register(gw, "root")
    await register(gw, "erin", ERIN)
    seen: dict[str, Any] = {}

    def scenario(page: Page) -> None:
        login_with_token(page, TOKEN)
        page.click("#nav a[data-route=users]")
        erin = page.locator(".card.user[data-user='erin']")
        erin.wait_for()
        seen["root_enabled"] = page.is_enabled(".card.user[data-user='root'] button:has-text('Ban')")
        seen["notes"] = page.locator("#owner-note, .card.user .why").count()
        erin.locator("select.user-role").select_option("super_admin")
        page.wait_for_selector(".toast:has-text('role super_admin')")
        page.click("#nav a[data-route=account]")
        seen["account"] = page.inner_text("#account-who")

    with trio.fail_after(60):
        console = await in_browser(gw.base_url, scenario)
        users = await _users(gw)
    assert console.errors == []
    assert seen["root_enabled"] is True and seen["notes"] == 0
    assert users["erin"]["role"] == "super_admin"
    assert "no password to change" in seen["account"]
    await gw.stop()
