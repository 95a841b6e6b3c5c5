"""The web UI in a real headless Chromium against a real gateway on loopback: chat, Stop, history, resume, cron,
notifications, a user account over SSE, and every screen without console errors."""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from playwright.sync_api import Page, WebSocketRoute
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from gateway.logs import memory_handler
from tests.conftest import TOKEN, RunningGateway, make_config, start_gateway
from tests.fakes.openai_server import FakeOpenAI
from tests.gateway.browser import (
    PHONE,
    beside_an_outage,
    chat_then_a_notification,
    covering,
    failed_loads,
    in_browser,
    login_with_token,
    require_chromium,
    texts,
    to_trio,
    to_trio_sync,
)
from tests.gateway.connectors.helpers import wait_for
from tests.gateway.http.test_skills_rest import GOOD, skill_folder
from tests.gateway.http.test_tool_servers_rest import calc_config, wait_listing
from tests.gateway.rest import admin_client, register, sse_events

ECHO = {"echo": {"delay_ms": 30.0}}  # slow enough that streaming and Stop are observable in the page
WORDS = " ".join(f"w{i}" for i in range(200))


async def _events(gw: RunningGateway, key: str) -> list[dict[str, Any]]:
    async with admin_client(gw) as client:
        r = await client.get(f"/api/sessions/{key}/events")
    assert r.status_code == 200, r.text
    events: list[dict[str, Any]] = r.json()["events"]
    return events


def _turn_text(events: list[dict[str, Any]], turn: int) -> str:
    started = [e["turn_id"] for e in events if e["type"] == "turn_started"]
    return "".join(e["data"] for e in events if e["type"] == "text_delta" and e["turn_id"] == started[turn])


async def test_chat_streams_stops_mid_stream_and_shows_history_after_reload(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    require_chromium()
    gw = await start_gateway(nursery, *make_config(tmp_path, providers=ECHO))
    first = "the quick brown fox jumps over the lazy dog and keeps on running far away"
    seen: dict[str, Any] = {}

    def scenario(page: Page) -> None:
        login_with_token(page, TOKEN)
        page.fill("#composer-input", first)
        page.press("#composer-input", "Enter")
        # Streaming: the bubble shows part of the reply while the turn still runs.
        partial = page.wait_for_function(
            """full => { const t = document.querySelector('.msg.assistant.streaming .text');
                         return t && t.textContent.length > 0 && t.textContent.trim() !== full && t.textContent; }""",
            arg=first,
        ).json_value()
        seen["partial"] = partial
        page.wait_for_selector(".msg.assistant.done")
        seen["done"] = texts(page, ".msg.assistant .text")
        # Stop mid-stream: the turn ends as "stopped" long before its 200 words.
        page.fill("#composer-input", WORDS)
        page.press("#composer-input", "Enter")
        page.wait_for_function(
            "() => document.querySelector('.msg.assistant.streaming .text')?.textContent.includes('w5')"
        )
        page.click("#stop")
        page.wait_for_selector(".msg.assistant.aborted")
        page.wait_for_selector("#send:not([hidden])")
        seen["stopped"] = texts(page, ".msg.assistant.aborted .text")[0]
        # Reload: the history comes back from the gateway, prompts included, each message once.
        page.reload()
        page.wait_for_selector("#conn-state.live")
        page.wait_for_selector(".msg.assistant.aborted")
        seen["users_after"] = texts(page, ".msg.user")
        seen["assistants_after"] = texts(page, ".msg.assistant .text")

    with trio.fail_after(90):
        console = await in_browser(gw.base_url, scenario)
        events = await _events(gw, "api:1")
    assert console.errors == []
    assert first.startswith(seen["partial"].strip()) and len(seen["partial"].strip()) < len(first)
    assert seen["done"] == [first]
    stopped = seen["stopped"]
    assert WORDS.startswith(stopped) and 0 < len(stopped) < len(WORDS)
    assert _turn_text(events, 1).strip() == stopped, "the page shows exactly what the gateway streamed"
    assert any(e["type"] == "turn_ended" and e["state"] == "aborted" for e in events)
    assert seen["users_after"] == [first, WORDS]
    assert seen["assistants_after"] == [first, stopped]
    await gw.stop()


async def test_a_file_goes_up_with_a_message_and_comes_back_as_a_download(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    require_chromium()
    source = tmp_path / "notes.txt"
    source.write_text("meeting notes: ship the web UI\n")
    seen: dict[str, Any] = {}

    def scenario(page: Page) -> None:
        login_with_token(page, TOKEN)
        page.set_input_files("#file-input", str(source))
        page.wait_for_selector(".chip:not(.busy)")
        page.fill("#composer-input", "please keep this")
        page.press("#composer-input", "Enter")
        # The echo agent answers with the same <file:…> tag, which the result lists as a file to download.
        page.wait_for_selector(".msg.assistant.done .files button")
        seen["user"] = texts(page, ".msg.user")[0]
        with page.expect_download() as info:
            page.click(".msg.assistant.done .files button")
        download = info.value
        seen["name"] = download.suggested_filename
        seen["body"] = Path(download.path()).read_text()

    with trio.fail_after(60):
        console = await in_browser(gateway.base_url, scenario)
    assert console.errors == []
    assert "<file:" in seen["user"] and "notes.txt" in seen["user"] and seen["user"].endswith("please keep this")
    assert seen["name"] == "notes.txt"
    assert seen["body"] == "meeting notes: ship the web UI\n"


async def test_sessions_create_rename_delete_unread_and_channels(gateway: RunningGateway) -> None:
    require_chromium()
    async with admin_client(gateway) as client:
        other = (await client.post("/api/sessions", json={"channel": "api", "chat_id": "7", "title": "Other"})).json()
    seen: dict[str, Any] = {}

    async def reply_elsewhere() -> None:
        async with (
            admin_client(gateway) as client,
            client.stream(
                "POST", f"/api/sessions/{other['session_id']}/chat", json={"message": "while you were away"}
            ) as r,
        ):
            await sse_events(r)

    async def wait_read() -> None:
        async with admin_client(gateway) as client:

            async def read() -> bool | None:
                r = await client.get(f"/api/sessions/{other['session_id']}")
                return r.json()["unread_message_count"] == 0 or None

            await wait_for(read, timeout=10)

    def scenario(page: Page) -> None:
        login_with_token(page, TOKEN)
        # A channel of the default chat is its own session and stream.
        page.select_option("#channel-select", "new")
        page.wait_for_function("() => location.hash === '#/chat/' + encodeURIComponent('api:1:1')")
        page.wait_for_selector("#conn-state.live")
        page.fill("#composer-input", "in channel one")
        page.press("#composer-input", "Enter")
        page.wait_for_selector(".msg.assistant.done")
        seen["channel"] = page.input_value("#channel-select")
        # Unread: a reply in another session while we look elsewhere shows as a count on it.
        to_trio(reply_elsewhere)
        page.click("#nav a[data-route=sessions]")
        # Scoped to the sessions page: the chat screen's own compact list has the same rows, and until the route
        # redraws, an unscoped locator would read that older list.
        row = page.locator(f".session-page li[data-session='{other['session_id']}']")
        seen["unread"] = row.locator(".badge").inner_text()
        # Create, rename, delete.
        page.click(".panel-head button:has-text('+ New')")
        page.wait_for_selector("#composer-input")
        seen["new_hash"] = page.evaluate("location.hash")
        page.click("#nav a[data-route=sessions]")
        fresh = page.locator(f".session-page li.session[data-session='{seen['new_hash'].removeprefix('#/chat/')}']")
        seen["fresh_name"] = fresh.locator(".name").inner_text()  # no title and nothing said in it yet
        fresh.locator("button", has_text="Rename").click()
        page.fill(".rename-input", "Renamed in the browser")
        page.press(".rename-input", "Enter")
        renamed = page.locator("li.session", has_text="Renamed in the browser")
        renamed.wait_for()
        renamed.locator("button", has_text="Delete").click()
        renamed.locator("button", has_text="Really delete?").click()
        page.wait_for_selector("li.session:has-text('Renamed in the browser')", state="detached")
        row.locator(".session-open").click()  # opening it marks it read
        page.wait_for_selector(".msg.assistant.done")
        to_trio(wait_read)
        page.click("#nav a[data-route=sessions]")
        row.wait_for()
        seen["unread_after"] = row.locator(".badge").count()

    with trio.fail_after(90):
        console = await in_browser(gateway.base_url, scenario)
        async with admin_client(gateway) as client:
            sessions = (await client.get("/api/sessions")).json()["sessions"]
    assert console.errors == []
    assert seen["channel"] == "1"
    assert seen["unread"] == "1" and seen["unread_after"] == 0
    assert seen["new_hash"].startswith("#/chat/") and seen["fresh_name"] == "New chat"
    keys = {s["key"]: s for s in sessions}
    # The default chat and its channel stay (opening /ws made them), the created one is gone.
    assert set(keys) == {"api:1", "api:1:1", "api:7"}
    assert keys["api:1:1"]["latest_message"] and keys["api:7"]["unread_message_count"] == 0


async def test_a_refused_token_then_the_right_one_leaves_nothing_over_the_composer(gateway: RunningGateway) -> None:
    """The page's clock is paused (Playwright's clock): a notice stays until the page itself removes it, so what
    is checked is what the page does on sign-in, not whether four seconds happened to pass."""
    require_chromium()
    async with admin_client(gateway) as client:
        sid = (await client.post("/api/sessions", json={"channel": "webchat"})).json()["session_id"]
        body = {"name": "ping", "prompt": "ping", "interval_seconds": 3600, "session_id": sid}
        job = (await client.post("/api/cron/create", json=body)).json()
    seen: dict[str, Any] = {}

    async def trigger() -> None:
        async with admin_client(gateway) as client:
            assert (await client.post("/api/cron/trigger", json={"job_id": job["id"]})).status_code == 200

    def pause_the_clock(page: Page) -> None:
        page.clock.install()

    def scenario(page: Page) -> None:
        page.wait_for_selector("#token-form")
        page.clock.pause_at(time.time() + 1)  # from here no timer of the page fires unless the test says so
        page.fill("#login-token", "not-the-token-0123456789")
        page.click("#token-form button[type=submit]")
        page.wait_for_selector("#login-error:has-text('not valid'), .toast")  # the form's answer, or a notice
        seen["refused"] = texts(page, "#login-error")
        login_with_token(page, TOKEN)
        seen["toasts"] = texts(page, ".toast")
        seen["over_send"] = covering(page, "#send")
        # A notice that arrives while chatting (a cron run, pushed over /ws) is not put over the composer either.
        to_trio(trigger)
        page.wait_for_selector(".toast.note")
        seen["over_send_with_note"] = covering(page, "#send")
        seen["over_input_with_note"] = covering(page, "#composer-input")
        page.click(".toast.note")  # a click dismisses it
        try:
            page.wait_for_selector(".toast.note", state="detached", timeout=5000)
            seen["dismissed"] = True
        except PlaywrightTimeoutError:
            seen["dismissed"] = False

    with trio.fail_after(60):
        console = await in_browser(gateway.base_url, scenario, before_load=pause_the_clock)
    assert failed_loads(console.errors, gateway.base_url) == [(401, "/api/sessions?limit=1")]  # the refused token
    assert seen["refused"] == ["That token is not valid."]
    assert seen["toasts"] == [], "signing in clears what was said before"
    assert seen["over_send"] is None, seen["over_send"]
    assert seen["over_send_with_note"] is None and seen["over_input_with_note"] is None, seen
    assert seen["dismissed"] is True


async def test_sessions_are_named_by_their_first_message_never_by_their_key(gateway: RunningGateway) -> None:
    require_chromium()
    question = "Plan the release of version two, with a checklist for the changelog"
    async with admin_client(gateway) as client:
        body = {"messages": [{"role": "user", "content": question}], "user": "planning"}
        assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
    seen: dict[str, Any] = {}

    def scenario(page: Page) -> None:
        login_with_token(page, TOKEN)
        page.fill("#composer-input", "hello from the default chat")
        page.press("#composer-input", "Enter")
        page.wait_for_selector(".msg.assistant.done")
        page.click("#nav a[data-route=sessions]")
        page.wait_for_selector(".view-sessions li.session:has-text('hello from the default chat')")
        seen["names"] = texts(page, ".view-sessions li.session .name")

    with trio.fail_after(60):
        console = await in_browser(gateway.base_url, scenario)
        async with admin_client(gateway) as client:
            keys = [s["key"] for s in (await client.get("/api/sessions")).json()["sessions"]]
    assert console.errors == []
    assert sorted(keys) == ["api:1", "openai:admin.planning"]
    assert sorted(seen["names"]) == sorted(["hello from the default chat", question])
    assert not [n for n in seen["names"] if n.startswith(("api:", "openai:"))]


async def test_a_connector_is_created_with_a_write_only_secret_and_shows_its_health(gateway: RunningGateway) -> None:
    require_chromium()
    secret = "s3cr3t-bearer-value-never-shown"
    seen: dict[str, Any] = {}

    def scenario(page: Page) -> None:
        login_with_token(page, TOKEN)
        page.click("#nav a[data-route=connectors]")
        page.wait_for_selector("#connectors >> text=No connectors.")
        page.click("text=+ New connector")
        page.select_option("#conn-kind", "http")
        page.fill("#conn-name", "intake")
        page.fill("#conn-settings", '{"actor_id": "ci-bot"}')
        page.fill("#conn-secret-bearer_token", secret)
        page.click("#connector-editor button:has-text('Save')")
        card = page.locator("[data-connector='http/intake']")
        card.wait_for()
        seen["card"] = card.inner_text()
        card.locator("button", has_text="Edit").click()
        seen["placeholder"] = page.get_attribute("#conn-secret-bearer_token", "placeholder")
        seen["value"] = page.input_value("#conn-secret-bearer_token")
        seen["settings"] = page.input_value("#conn-settings")
        seen["html"] = page.content()

    with trio.fail_after(60):
        console = await in_browser(gateway.base_url, scenario)
        async with admin_client(gateway) as client:
            view = (await client.get("/v1/runtime/connectors/http/intake")).json()
    assert console.errors == []
    assert "bearer_token: set" in seen["card"] and "running" in seen["card"]
    assert "ingress ≤ 50 events/s" in seen["card"]  # the default rate limit, from the view
    assert seen["value"] == "" and "set" in seen["placeholder"]
    assert '"actor_id": "ci-bot"' in seen["settings"]
    assert secret not in seen["html"], "a secret is never put back into the page"
    assert view["actor_id"] == "ci-bot" and view["bearer_token"]["configured"] is True


async def test_the_page_drops_replayed_and_reflected_frames(gateway: RunningGateway) -> None:
    """On v1 (chosen for an old gateway), a man in the middle (Playwright's WebSocket route) sends every encrypted
    server frame twice and bounces every encrypted page frame back: the page must show each notification once and
    each reply once. (v2's own test is in test_webui_v2.py.)"""
    require_chromium()
    async with admin_client(gateway) as client:
        sid = (await client.post("/api/sessions", json={"channel": "webchat"})).json()["session_id"]
        job = (
            await client.post("/api/cron/create", json={"prompt": "tick", "interval_seconds": 3600, "session_id": sid})
        ).json()
    seen: dict[str, Any] = {"replayed": 0, "reflected": 0}

    async def trigger() -> None:
        async with admin_client(gateway) as client:
            assert (await client.post("/api/cron/trigger", json={"job_id": job["id"]})).status_code == 200

    def middle(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()
        plain = {"page": True, "server": True}  # the first frame each way is the plaintext handshake

        def from_page(msg: str | bytes) -> None:
            server.send(msg)
            if plain["page"]:
                plain["page"] = False
                return
            ws.send(msg)  # reflected: the page gets its own frame back
            seen["reflected"] += 1

        def from_server(msg: str | bytes) -> None:
            ws.send(msg)
            if plain["server"]:
                plain["server"] = False
                return
            ws.send(msg)  # replayed: the same frame again
            seen["replayed"] += 1

        ws.on_message(from_page)
        server.on_message(from_server)

    def scenario(page: Page) -> None:
        page.route_web_socket(re.compile(r"/ws$"), middle)
        login_with_token(page, TOKEN)
        seen.update(chat_then_a_notification(page, "one two three", trigger))

    def v1(page: Page) -> None:
        page.add_init_script("localStorage.setItem('gateway.handshake', JSON.stringify('v1'))")

    with trio.fail_after(60):
        console = await in_browser(gateway.base_url, scenario, before_load=v1)
    assert console.errors == []
    # Replayed: every frame after auth_ok (deltas may go out joined, so at least one delta, the result and the
    # notification).
    assert seen["replayed"] >= 3 and seen["reflected"] >= 1
    assert seen["badge"] == "1" and seen["toasts"] == 1
    assert seen["assistants"] == ["one two three"] and seen["users"] == ["one two three"]


# A stand-in for a coding-agent CLI in stream-json mode (the `cli` provider's third party): it reports a status and a
# tool call, then holds until the test has seen them in the page (it opens the FIFO), then answers.
FAKE_AGENT = """
import json, sys
def say(obj):
    print(json.dumps(obj), flush=True)
say({"type": "system", "subtype": "reading the repository"})
say({"type": "assistant", "message": {"content": [{"type": "tool_use", "name": "grep"}]}})
open(sys.argv[1]).read()
say({"type": "system", "subtype": None})
say({"type": "assistant", "message": {"content": [{"type": "text", "text": "Found it in gateway/http/webui.py."}]}})
say({"type": "result", "result": "Found it in gateway/http/webui.py."})
"""


async def test_tool_activity_and_status_lines_show_while_the_agent_works(nursery: trio.Nursery, tmp_path: Path) -> None:
    require_chromium()
    script, fifo = tmp_path / "agent.py", tmp_path / "go"
    script.write_text(FAKE_AGENT)
    os.mkfifo(fifo)
    providers = {"cli": {"argv": [sys.executable, str(script), str(fifo)]}}
    gw = await start_gateway(nursery, *make_config(tmp_path, agent={"provider": "cli"}, providers=providers))
    seen: dict[str, Any] = {}

    def scenario(page: Page) -> None:
        login_with_token(page, TOKEN)
        page.fill("#composer-input", "where is the CSP set?")
        page.press("#composer-input", "Enter")
        page.wait_for_selector(".msg.assistant.streaming .status-line:has-text('reading the repository')")
        page.wait_for_selector(".msg.assistant.streaming .tool:has-text('grep')")
        seen["working"] = page.inner_text(".msg.assistant.streaming")
        seen["stop_visible"] = page.is_visible("#stop")
        with open(fifo, "w") as go:  # let the agent finish
            go.write("go\n")
        page.wait_for_selector(".msg.assistant.done")
        seen["done"] = page.inner_text(".msg.assistant.done")
        seen["status_left"] = page.locator(".msg.assistant.done .status-line").count()

    with trio.fail_after(60):
        console = await in_browser(gw.base_url, scenario)
    assert console.errors == []
    assert "reading the repository" in seen["working"] and "grep" in seen["working"] and seen["stop_visible"]
    assert "Found it in gateway/http/webui.py." in seen["done"] and "grep" in seen["done"]  # the tool chip stays
    assert seen["status_left"] == 0  # a null status clears the line
    await gw.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_resume_after_a_dropped_connection_loses_and_repeats_nothing(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    require_chromium()
    config, paths = make_config(tmp_path, server={"port": _free_port()})
    gw = await start_gateway(nursery, config, paths)
    box: dict[str, Any] = {"gw": gw}

    async def restart_and_run_a_turn_elsewhere() -> None:
        # Back on the same port and database; another client runs a turn before the page has reconnected.
        box["gw"] = again = await start_gateway(nursery, config, paths)
        chat = {"message": "second reply"}
        async with admin_client(again) as client, client.stream("POST", "/api/sessions/api:1/chat", json=chat) as r:
            await sse_events(r)

    def scenario(page: Page) -> None:
        login_with_token(page, TOKEN)
        page.fill("#composer-input", "first reply")
        page.press("#composer-input", "Enter")
        page.wait_for_selector(".msg.assistant.done")
        # What the page does after a reply (mark it read, then redraw the list) is done: the list says so.
        page.wait_for_selector(".chat-side li.session.active:has-text('first reply'):not(:has(.badge))")
        to_trio(gw.stop)  # the gateway goes away: the socket drops
        page.wait_for_selector("#conn-state.reconnecting")
        to_trio(restart_and_run_a_turn_elsewhere)
        page.wait_for_selector("#conn-state.live", timeout=30_000)
        page.wait_for_function("() => document.querySelectorAll('.msg.assistant.done').length >= 2")
        box["users"] = texts(page, ".msg.user")
        box["assistants"] = texts(page, ".msg.assistant .text")

    with trio.fail_after(90):
        console = await in_browser(gw.base_url, scenario)
    # While the gateway is down, whatever the page asks (its reconnects, a refresh of the session list, marking the
    # reply read) finds no server: how many such requests fall in the outage depends on timing, so those failures
    # are let through, and only those.
    assert beside_an_outage(console.errors, gw.base_url) == []
    assert box["users"] == ["first reply", "second reply"]  # v2 tells every turn's prompt, another client's too
    assert box["assistants"] == ["first reply", "second reply"], "the missed turn once, the old one not again"
    await box["gw"].stop()


async def test_cron_job_create_toggle_trigger_delete_with_a_live_notification(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    require_chromium()
    gw = await start_gateway(nursery, *make_config(tmp_path))
    seen: dict[str, Any] = {}

    def scenario(page: Page) -> None:
        login_with_token(page, TOKEN)  # on the chat screen, so /ws is open and pushes notifications
        page.click("#nav a[data-route=cron]")
        page.fill("#cron-name", "nightly digest")
        page.fill("#cron-prompt", "summarise the day")
        page.click("#cron-form button[type=submit]")
        job = page.locator(".cron-job")
        job.wait_for()
        seen["created"] = job.inner_text()
        job.locator("input.switch").click()
        # The checkbox flips at once; the card is redrawn from the gateway's answer.
        redrawn = "s => document.querySelector('.cron-job label.check')?.textContent.trim() === s"
        page.wait_for_function(redrawn, arg="off")
        seen["off"] = job.inner_text()
        job.locator("input.switch").click()
        page.wait_for_function(redrawn, arg="on")
        page.locator(".cron-job button", has_text="Run now").click()
        seen["toast"] = page.locator(".toast.note").first.inner_text()  # pushed over /ws when the run ends
        page.wait_for_selector("#bell .badge:not([hidden])")
        seen["badge"] = page.inner_text("#bell .badge")
        page.click("#bell")
        page.wait_for_selector("#notifications .note.unread")
        seen["listed"] = texts(page, "#notifications .note.unread strong")
        page.click("text=Mark all read")
        page.wait_for_selector("#bell .badge[hidden]", state="attached")
        page.click("#nav a[data-route=cron]")
        delete = page.locator(".cron-job button", has_text="Delete")
        delete.click()
        page.locator(".cron-job button", has_text="Really delete?").click()
        page.wait_for_selector("text=No jobs yet.")

    with trio.fail_after(90):
        console = await in_browser(gw.base_url, scenario)
        async with admin_client(gw) as client:
            jobs = (await client.get("/api/cron")).json()["jobs"]
            unread = (await client.get("/api/notifications/unread-count")).json()["count"]
            notes = (await client.get("/api/notifications")).json()["notifications"]
    assert console.errors == []
    assert "nightly digest" in seen["created"] and "every 3600 s" in seen["created"]
    assert "off" in seen["off"].split("\n") and "next" not in seen["off"]  # disabled: no next slot
    assert "nightly digest" in seen["toast"]
    assert seen["badge"] == "1"
    assert len(seen["listed"]) == 1 and "nightly digest" in seen["listed"][0]
    assert jobs == [] and unread == 0 and len(notes) == 1 and notes[0]["read"] is True
    await gw.stop()


async def test_a_user_account_chats_over_sse_and_keeps_history(nursery: trio.Nursery, tmp_path: Path) -> None:
    require_chromium()
    gw = await start_gateway(nursery, *make_config(tmp_path, providers=ECHO))
    await register(gw, "root")  # the first account is the admin; erin is a plain user
    erin = await register(gw, "erin", "erins long password")
    seen: dict[str, Any] = {}

    def scenario(page: Page) -> None:
        page.click("text=Account")
        page.fill("#login-user", "erin")
        page.fill("#login-pass", "erins long password")
        page.click("#user-form button[type=submit]")
        page.wait_for_selector("#conn-state.live")
        page.fill("#composer-input", "hello from an account")
        page.press("#composer-input", "Enter")
        page.wait_for_selector(".msg.assistant.done")
        page.reload()  # remembered in localStorage: no second login
        page.wait_for_selector(".msg.assistant.done")
        seen["users"] = texts(page, ".msg.user")
        seen["assistants"] = texts(page, ".msg.assistant .text")
        page.click("#nav a[data-route=connectors]")
        seen["connectors"] = page.locator(".notice").first.inner_text()
        seen["connector_actions"] = page.locator("#view button").all_inner_texts()
        page.click("#nav a[data-route=logs]")
        seen["logs"] = page.locator("#view .notice").first.inner_text()

    with trio.fail_after(90):
        console = await in_browser(gw.base_url, scenario)
        sessions = (await erin.client.get("/api/sessions")).json()["sessions"]
        mine = {"allow_unauthenticated_ingress": True}
        refused = await erin.client.put("/v1/runtime/connectors/http/mine", json=mine)
        await erin.client.aclose()
    assert console.errors == []  # the Logs screen, too, asks nothing the gateway would refuse an account
    assert seen["users"] == ["hello from an account"]
    assert seen["assistants"] == ["hello from an account"]
    assert "needs the gateway token" in seen["connectors"]
    assert seen["connector_actions"] == [], "an account is not offered what the API refuses it"
    assert refused.status_code in (401, 403)
    assert "needs the gateway token or an admin account" in seen["logs"]
    assert [s["key"].split(":")[0] for s in sessions] == ["webchat"]
    await gw.stop()


@contextmanager
def captured_logs(name: str) -> Iterator[logging.Logger]:
    """A logger whose records reach the log API (the memory handler) once, whatever an earlier test configured."""
    logger = logging.getLogger(name)
    level, propagate = logger.level, logger.propagate
    logger.addHandler(memory_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger
    finally:
        logger.removeHandler(memory_handler)
        logger.setLevel(level)
        logger.propagate = propagate


CHANGELOG = """---
name: Changelog
description: Keeps CHANGELOG.md in the Keep a Changelog format.
version: 0.3.1
---
Add an entry under Unreleased for every user-visible change.
"""
SCREENS = [
    "chat",
    "sessions",
    "notifications",
    "cron",
    "connectors",
    "models",
    "mcp",
    "skills",
    "logs",
    "overview",
    "users",
]
SCREENS += ["account"]
# A reply that shows the Markdown rendering in the chat's screenshot (the echo provider sends it back as it is).
SHOWCASE = """Show me how the gateway streams a reply:

1. **word by word**, over the encrypted socket
2. each event with its `seq`, so a reconnect loses nothing

```sh
gateway chat --v2 --pin gw1:…
```

| transport | server key |
|---|---|
| `/ws` v2 | pinned |
| SSE | TLS |"""
# What each screen shows once its data has arrived.
LOADED = {
    "sessions": [".view-sessions .session"],
    "notifications": ["#notifications > li"],
    "cron": [".cron-job"],
    "connectors": [".connector"],
    "models": [
        "#providers .provider[data-provider=openai][data-probe]",
        "#providers .provider[data-provider=echo][data-probe]",
        "#llm-key-state.ok",
        "#agent-form",
        "#models-json-text",
    ],
    "mcp": [".mcp-server .pill.state-connected", ".my-tool"],
    "skills": [".skill[data-skill=release-notes]", ".skill[data-skill=changelog]"],
    "logs": ["#log-lines > *"],
    "overview": [".overview[data-drawn]", "#ov-connectors .ov-connector", "#ov-errors > *"],
    "users": [".card.user[data-user=erin]"],
    "account": ["#encryption #pinned-fingerprint"],
}


@pytest.fixture
def gateway_logs() -> Iterator[logging.Logger]:
    """The gateway's own records reach the log API (and so the log screen) during the test."""
    with captured_logs("gateway") as log:
        yield log


async def test_every_screen_renders_without_console_errors(
    nursery: trio.Nursery, tmp_path: Path, gateway_logs: logging.Logger
) -> None:
    """Also the screenshot maker: GATEWAY_SCREENSHOTS=docs/screenshots saves them there (see docs/webui.md)."""
    require_chromium()
    gw = await start_gateway(nursery, *make_config(tmp_path, providers=ECHO))
    fake = FakeOpenAI()  # what the Models screen tries (GET /models): nothing leaves the machine
    fake_url = await fake.start(nursery)
    out = trio.Path(os.environ.get("GATEWAY_SCREENSHOTS") or tmp_path / "shots")
    await out.mkdir(parents=True, exist_ok=True)
    async with admin_client(gw) as client:
        # Something to look at: a connector, a cron job with a notification, a second session.
        r = await client.put("/v1/runtime/connectors/http/intake", json={"allow_unauthenticated_ingress": True})
        assert r.status_code == 201, r.text
        sid = (
            await client.post("/api/sessions", json={"channel": "api", "chat_id": "2", "title": "Release notes"})
        ).json()
        job = await client.post(
            "/api/cron/create",
            json={"name": "daily summary", "prompt": "summarise", "cron": "0 8 * * *", "session_id": sid["session_id"]},
        )
        assert job.status_code == 201, job.text
        # The agent config: openai ready beside echo (never called: echo stays the default), a real stdio MCP server
        # with its tools, two skills.
        llm = {"api_key": "sk-screenshot-only", "model_name": "gpt-4o-mini", "temperature": 0.7, "base_url": fake_url}
        assert (await client.post("/api/app-config/llm", json=llm)).status_code == 200
        listed = {"providers": {"openai": {"models": ["gpt-4o-mini", "gpt-4.1"]}}}
        assert (await client.patch("/api/models-json", json=listed)).status_code == 200
        assert (await client.post("/api/app-config/mcp-servers", json=calc_config())).status_code == 200
        for folder, md in [("notes", GOOD), ("changes", CHANGELOG)]:
            body = {"source_type": "local", "source_ref": str(skill_folder(tmp_path / folder, md))}
            assert (await client.post("/api/v2/skills/install", json=body)).status_code == 200
        with trio.fail_after(30):
            await wait_listing(client, "calc", "connected")
    for name in ("root", "erin", "ada"):  # the Users screen: an admin, a user, and ada made an admin by the owner
        await (await register(gw, name, role="super_admin" if name == "ada" else None)).client.aclose()
    gateway_logs.error("connector telegram/family: getUpdates answered 401 (check the bot token)")
    seen: dict[str, str] = {}

    def scenario(page: Page) -> None:
        login_with_token(page, TOKEN)
        page.fill("#composer-input", SHOWCASE)
        page.press("#composer-input", "Enter")
        page.wait_for_selector(".msg.assistant.done")
        page.wait_for_selector(".chat-side li.session.active:has-text('Show me how'):not(:has(.badge))")  # read
        page.screenshot(path=str(out / "chat.png"), animations="disabled")
        for name in SCREENS[1:]:
            page.click(f"#nav a[data-route={name}]")
            for selector in LOADED[name]:
                page.wait_for_selector(selector)
            seen[name] = page.inner_text("#view")
            if name in (
                "sessions",
                "cron",
                "connectors",
                "logs",
                "models",
                "mcp",
                "skills",
                "overview",
                "users",
                "account",
            ):
                page.screenshot(path=str(out / f"{name}.png"), animations="disabled")
        page.set_viewport_size({"width": PHONE["width"], "height": PHONE["height"]})
        page.click("#bell")
        page.click(".menu")
        page.click("#nav a[data-route=chat]")
        page.wait_for_selector(".msg.assistant.done")
        page.screenshot(path=str(out / "phone-chat.png"), animations="disabled")
        for name in ("models", "mcp", "skills", "overview"):
            page.click(".menu")
            page.click(f"#nav a[data-route={name}]")
            for selector in LOADED[name]:
                page.wait_for_selector(selector)
            page.screenshot(path=str(out / f"phone-{name}.png"), animations="disabled")

    with trio.fail_after(120):
        console = await in_browser(gw.base_url, scenario)
    assert console.errors == []
    assert "Release notes" in seen["sessions"]
    assert "daily summary" in seen["cron"]
    assert "http/intake" in seen["connectors"]
    assert "echo" in seen["models"] and "API key set" in seen["models"] and "gpt-4.1" in seen["models"]
    assert "reachable" in seen["models"] and "unreachable" not in seen["models"]
    assert "calc" in seen["mcp"] and "connected" in seen["mcp"] and "on in my chats" in seen["mcp"]
    assert "Release Notes" in seen["skills"] and "Changelog" in seen["skills"]
    for name in SCREENS[1:]:
        assert "not available" not in seen[name] and "needs the gateway token" not in seen[name], name
    assert "erin" in seen["users"] and "http/intake" in seen["overview"] and "gw1:" in seen["account"]
    shots = ["chat", "sessions", "cron", "connectors", "logs", "models", "mcp", "skills", "phone-chat"]
    for n in [*shots, "overview", "users", "account", "phone-models", "phone-mcp", "phone-skills", "phone-overview"]:
        assert (await (out / f"{n}.png").stat()).st_size > 10_000, n
    await gw.stop()


async def test_the_log_viewer_filters_by_level_and_text_and_follows_live_on_a_phone(gateway: RunningGateway) -> None:
    require_chromium()
    seen: dict[str, Any] = {}
    rows = "n => document.querySelectorAll('#log-lines .log').length === n"

    with captured_logs("gateway.webui-probe") as log:
        log.info("webui-probe routine detail")
        log.warning("webui-probe disk nearly full")

        def scenario(page: Page) -> None:
            login_with_token(page, TOKEN)
            seen["side_hidden"] = page.is_hidden(".chat-side")  # the session column folds away on a phone
            page.click(".menu")
            page.click("#nav a[data-route=logs]")
            page.fill("#log-q", "webui-probe")
            page.wait_for_function(rows, arg=2)
            page.select_option("#log-level", "warning")
            page.wait_for_function(rows, arg=1)
            seen["warning"] = texts(page, "#log-lines .log")
            to_trio_sync(log.error, "webui-probe live record")  # the viewer polls: it shows up
            page.wait_for_function(rows, arg=2)
            seen["live"] = texts(page, "#log-lines .log .msgtext")
            page.fill("#log-q", "no-such-record-anywhere")
            page.wait_for_selector("#log-lines >> text=No matching records.")

        with trio.fail_after(60):
            console = await in_browser(gateway.base_url, scenario, viewport=PHONE)
    assert console.errors == []
    assert seen["side_hidden"] is True
    assert len(seen["warning"]) == 1 and "disk nearly full" in seen["warning"][0] and "WARNING" in seen["warning"][0]
    assert seen["live"] == ["webui-probe live record", "webui-probe disk nearly full"]  # newest first
