"""The web UI speaks the v2 handshake of `/ws` (docs/protocol.md) in a real Chromium against a real gateway: turns
complete, the server key is pinned on first use and shown, the token never crosses the wire, forged frames are
dropped, a changed server key is refused with a clear message, and the tweetnacl path works where WebCrypto lacks
X25519 (a page served over plain http on a LAN has no WebCrypto at all)."""

from __future__ import annotations

import hashlib
import json
import re
import socket
from pathlib import Path
from typing import Any

import httpx
import trio
from playwright.sync_api import Page, WebSocket, WebSocketRoute

from gateway.ws.identity import identity_fingerprint
from tests.conftest import TOKEN, make_config, start_gateway
from tests.gateway.browser import (
    beside_an_outage,
    chat_then_a_notification,
    in_browser,
    login_with_token,
    require_chromium,
    texts,
    to_trio,
)
from tests.gateway.rest import admin_client

# @noble/hashes 2.4.0 (`npm pack @noble/hashes@2.4.0`), MIT, the files BLAKE2b needs, unchanged.
NOBLE_SHA256 = {
    "blake2.js": "03f00237bcc0b4d822a80f7c0ac22e42632c48e246c3b6da584e6452186e32f0",
    "_blake.js": "cabbff61d1f373bac45594ad758df7c42e176464ddbb94b44f5533fa977a4f56",
    "_md.js": "60cf3010fda89e3e4d3f0e7ff1ce249e9c467f34b4fd41b6fd6101d9f69be763",
    "_u64.js": "b09da8c07fe8187c07649494cdb7cd0bcf13df90b506a9473d19e4d5f8c2e102",
    "utils.js": "037ad49adb78168b6b699598fd33f85f7877456b1d28b4d032e2a1a16807947c",
}
BACKEND = "async () => (await import('/assets/js/chat.js')).chatState.engine.sock.backend"
NO_WEBCRYPTO = "Object.defineProperty(Crypto.prototype, 'subtle', { get() { return undefined; } });"


class Frames:
    """What the page sent and received on each of its WebSockets, in order: (text or None for binary, bytes)."""

    def __init__(self) -> None:
        self.sockets: list[dict[str, list[Any]]] = []

    def watch(self, page: Page) -> None:
        page.on("websocket", self._on_socket)

    def _on_socket(self, ws: WebSocket) -> None:
        record: dict[str, list[Any]] = {"sent": [], "received": []}
        self.sockets.append(record)
        ws.on("framesent", lambda data: record["sent"].append(data))
        ws.on("framereceived", lambda data: record["received"].append(data))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_the_browser_chats_over_v2_pins_the_key_and_never_sends_the_token(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    require_chromium()
    config, paths = make_config(tmp_path)
    gw = await start_gateway(nursery, config, paths)
    expected = identity_fingerprint(paths)
    frames = Frames()
    seen: dict[str, Any] = {}

    def scenario(page: Page) -> None:
        frames.watch(page)
        login_with_token(page, TOKEN)
        seen["toast"] = page.inner_text("#pin-new")
        page.fill("#composer-input", "hello over the pinned channel")
        page.press("#composer-input", "Enter")
        page.wait_for_selector(".msg.assistant.done")
        seen["reply"] = texts(page, ".msg.assistant .text")
        seen["backend"] = page.evaluate(BACKEND)
        seen["pin"] = json.loads(page.evaluate("() => localStorage.getItem('gateway.pin')"))
        page.click("#nav a[data-route=account]")
        seen["shown"] = page.inner_text("#pinned-fingerprint")
        seen["encryption"] = page.inner_text("#encryption")

    with trio.fail_after(60):
        console = await in_browser(gw.base_url, scenario)
        async with admin_client(gw) as client:
            events = (await client.get("/api/sessions/api:1/events")).json()["events"]
    assert console.errors == []
    assert seen["reply"] == ["hello over the pinned channel"]
    assert [e["text"] for e in events if e["type"] == "turn_started"] == ["hello over the pinned channel"]
    assert seen["backend"] == "webcrypto"  # 127.0.0.1 is a secure context: X25519 from WebCrypto
    assert seen["pin"]["fingerprint"] == expected and seen["pin"]["how"] == "first use"
    assert expected in seen["toast"] and "gateway token" in seen["toast"] and seen["shown"] == expected
    assert "v2" in seen["encryption"] and "trusted on first use" in seen["encryption"]
    (sock,) = frames.sockets
    hello = json.loads(sock["sent"][0])
    assert hello["type"] == "auth" and hello["v"] == 2 and "token" not in hello
    assert json.loads(sock["received"][0])["type"] == "auth_challenge"
    assert json.loads(sock["sent"][1])["type"] == "auth_proof"
    assert all(isinstance(f, bytes) for f in sock["sent"][2:] + sock["received"][1:])  # then binary frames only
    assert sock["sent"][2:], "the message went encrypted"
    assert not [f for f in sock["sent"] if TOKEN.encode() in (f if isinstance(f, bytes) else f.encode())]
    await gw.stop()


async def test_v2_drops_tampered_replayed_and_reflected_frames(nursery: trio.Nursery, tmp_path: Path) -> None:
    """A man in the middle puts a tampered copy before every encrypted server frame and replays it after, and bounces
    every encrypted page frame back: the page shows each reply and notification once, and never has to reconnect."""
    require_chromium()
    config, paths = make_config(tmp_path, providers={"echo": {"delay_ms": 5.0}})
    gw = await start_gateway(nursery, config, paths)
    async with admin_client(gw) as client:
        sid = (await client.post("/api/sessions", json={"channel": "webchat"})).json()["session_id"]
        body = {"prompt": "tick", "interval_seconds": 3600, "session_id": sid}
        job = (await client.post("/api/cron/create", json=body)).json()
    seen: dict[str, Any] = {"forged": 0, "reflected": 0, "sockets": 0}

    async def trigger() -> None:
        async with admin_client(gw) as client:
            assert (await client.post("/api/cron/trigger", json={"job_id": job["id"]})).status_code == 200

    def middle(ws: WebSocketRoute) -> None:
        seen["sockets"] += 1
        server = ws.connect_to_server()

        def from_page(msg: str | bytes) -> None:
            server.send(msg)
            if isinstance(msg, bytes):  # the handshake's text frames pass untouched
                ws.send(msg)  # reflected: the page gets its own frame back
                seen["reflected"] += 1

        def from_server(msg: str | bytes) -> None:
            if isinstance(msg, bytes):
                ws.send(msg[:-1] + bytes([msg[-1] ^ 1]))  # tampered: one bit flipped
                ws.send(msg)
                ws.send(msg)  # replayed
                seen["forged"] += 2
            else:
                ws.send(msg)

        ws.on_message(from_page)
        server.on_message(from_server)

    def scenario(page: Page) -> None:
        page.route_web_socket(re.compile(r"/ws$"), middle)
        login_with_token(page, TOKEN)
        seen.update(chat_then_a_notification(page, "one two three four five", trigger))

    with trio.fail_after(60):
        console = await in_browser(gw.base_url, scenario)
    assert console.errors == []
    assert seen["forged"] > 10 and seen["reflected"] >= 1
    assert seen["badge"] == "1" and seen["toasts"] == 1
    assert seen["assistants"] == ["one two three four five"] and seen["users"] == ["one two three four five"]
    assert seen["sockets"] == 1 and "live" in str(seen["state"]), "no frame put the stream out of step"
    await gw.stop()


async def test_a_changed_server_key_is_refused_until_the_new_fingerprint_is_pinned(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """The gateway comes back on the same address with another identity key (another data folder): the page sends
    nothing but its hello to it and says why; pinning the new fingerprint (as `gateway token` prints it) lets it in."""
    require_chromium()
    port = _free_port()
    first_cfg, first_paths = make_config(tmp_path / "a", server={"port": port})
    other_cfg, other_paths = make_config(tmp_path / "b", server={"port": port})
    first = await start_gateway(nursery, first_cfg, first_paths)
    old_fp, new_fp = identity_fingerprint(first_paths), identity_fingerprint(other_paths)
    assert old_fp != new_fp
    frames = Frames()
    box: dict[str, Any] = {}
    seen: dict[str, Any] = {}

    async def swap() -> None:
        await first.stop()
        box["gw"] = await start_gateway(nursery, other_cfg, other_paths)

    def scenario(page: Page) -> None:
        frames.watch(page)
        login_with_token(page, TOKEN)
        page.fill("#composer-input", "before the swap")
        page.press("#composer-input", "Enter")
        page.wait_for_selector(".msg.assistant.done")
        to_trio(swap)  # the socket drops; the page reconnects to the other gateway
        page.wait_for_selector("#pin-error", timeout=30_000)
        seen["banner"] = page.inner_text("#pin-error")
        seen["state"] = page.inner_text("#conn-state")
        seen["sockets_at_refusal"] = len(frames.sockets)
        page.click("#pin-error a")
        page.fill("#pin-input", new_fp)
        page.click("#encryption button:has-text('Pin this key')")
        page.wait_for_selector(f"#pinned-fingerprint:has-text('{new_fp}')")
        page.click("#nav a[data-route=chat]")
        page.wait_for_selector("#conn-state.live")
        page.fill("#composer-input", "after pinning")
        page.press("#composer-input", "Enter")
        page.wait_for_selector(".msg.assistant.done:has-text('after pinning')")
        seen["pin"] = json.loads(page.evaluate("() => localStorage.getItem('gateway.pin')"))

    try:
        with trio.fail_after(90):
            console = await in_browser(first.base_url, scenario)
    finally:
        if "gw" in box:
            await box["gw"].stop()
    assert beside_an_outage(console.errors, first.base_url) == []
    assert old_fp in seen["banner"] and new_fp in seen["banner"] and "identity key has changed" in seen["banner"]
    assert "gateway token" in seen["banner"]
    assert seen["state"] == "disconnected"
    refused = frames.sockets[seen["sockets_at_refusal"] - 1]
    assert len(refused["sent"]) == 1 and json.loads(refused["sent"][0])["v"] == 2, "only the hello went out"
    assert json.loads(refused["received"][0])["type"] == "auth_challenge"
    assert seen["pin"]["fingerprint"] == new_fp and seen["pin"]["how"] == "given"


async def test_a_fingerprint_given_at_sign_in_is_the_pin_and_a_wrong_one_keeps_the_chat_closed(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    require_chromium()
    config, paths = make_config(tmp_path)
    gw = await start_gateway(nursery, config, paths)
    wrong = "gw1:" + "-".join(["0000"] * 8)
    seen: dict[str, Any] = {}

    def sign_in(page: Page, fingerprint: str) -> None:
        page.fill("#login-token", TOKEN)
        page.evaluate("() => { document.querySelector('.pin-details').open = true; }")
        page.fill("#login-fingerprint", fingerprint)
        page.click("#token-form button[type=submit]")

    def scenario(page: Page) -> None:
        sign_in(page, "not-a-fingerprint")
        seen["malformed"] = page.inner_text("#login-error")
        sign_in(page, wrong)
        page.wait_for_selector("#pin-error")
        seen["banner"] = page.inner_text("#pin-error")
        page.click("#logout")
        sign_in(page, identity_fingerprint(paths))
        page.wait_for_selector("#conn-state.live")
        seen["pin"] = json.loads(page.evaluate("() => localStorage.getItem('gateway.pin')"))

    with trio.fail_after(60):
        console = await in_browser(gw.base_url, scenario)
    assert console.errors == []
    assert "That is not a fingerprint" in seen["malformed"]
    assert wrong in seen["banner"] and identity_fingerprint(paths) in seen["banner"]
    assert seen["pin"] == {**seen["pin"], "fingerprint": identity_fingerprint(paths), "how": "given"}
    await gw.stop()


async def test_v2_on_tweetnacl_where_the_browser_has_no_webcrypto(nursery: trio.Nursery, tmp_path: Path) -> None:
    """Over plain http on a LAN address `crypto.subtle` is undefined (not a secure context): hidden here the same
    way, the handshake runs on tweetnacl's X25519 and still completes turns."""
    require_chromium()
    config, paths = make_config(tmp_path)
    gw = await start_gateway(nursery, config, paths)
    seen: dict[str, Any] = {}

    def no_webcrypto(page: Page) -> None:
        page.add_init_script(NO_WEBCRYPTO)

    def scenario(page: Page) -> None:
        login_with_token(page, TOKEN)
        page.fill("#composer-input", "no webcrypto here")
        page.press("#composer-input", "Enter")
        page.wait_for_selector(".msg.assistant.done")
        seen["reply"] = texts(page, ".msg.assistant .text")
        seen["backend"] = page.evaluate(BACKEND)
        seen["subtle"] = page.evaluate("() => typeof crypto.subtle")

    with trio.fail_after(60):
        console = await in_browser(gw.base_url, scenario, before_load=no_webcrypto)
    assert console.errors == []
    assert seen["subtle"] == "undefined" and seen["backend"] == "tweetnacl"
    assert seen["reply"] == ["no webcrypto here"]
    await gw.stop()


async def test_the_vendored_blake2b_is_the_published_file(nursery: trio.Nursery, tmp_path: Path) -> None:
    gw = await start_gateway(nursery, *make_config(tmp_path))
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=gw.base_url) as anon:
            served = {name: await anon.get(f"/assets/vendor/noble-hashes/{name}") for name in NOBLE_SHA256}
    for name, r in served.items():
        assert r.status_code == 200, name
        assert hashlib.sha256(r.content).hexdigest() == NOBLE_SHA256[name], name
    await gw.stop()
