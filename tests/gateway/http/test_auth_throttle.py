"""Failed authentication is throttled per client address: real sockets from 127.0.0.x, REST and `/ws` v1 and v2."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
import pytest
import trio
import trio_websocket
from trio_websocket import ConnectionClosed, WebSocketConnection

from gateway.ws.client import HandshakeError, handshake_v1, handshake_v2
from tests.conftest import TOKEN, RunningGateway, make_config, start_gateway
from tests.gateway.rest import error_of, register

FREE = 3
# Enough for the wait (1 s, 2 s, 4 s… after FREE failures) to show even on a slow machine, few enough to be quick.
ATTEMPTS = FREE + 8


@pytest.fixture
async def gw(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[RunningGateway]:
    limits = {"failed_auth_free": FREE, "auth_burst": 1000, "auth_per_minute": 60000}
    gateway = await start_gateway(nursery, *make_config(tmp_path, limits=limits))
    yield gateway
    with trio.fail_after(10):
        await gateway.stop()


def http_from(gw: RunningGateway, source: str, token: str | None = None) -> httpx.AsyncClient:
    """A client whose connections leave from `source` (any 127.0.0.x is the loopback on Linux)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    transport = httpx.AsyncHTTPTransport(local_address=source)
    return httpx.AsyncClient(base_url=gw.base_url, headers=headers, transport=transport, timeout=30)


async def until_throttled(attempt: Callable[[], Awaitable[httpx.Response]]) -> tuple[list[int], httpx.Response]:
    """Fail again and again until a 429 comes back; return the statuses before it and the 429."""
    statuses: list[int] = []
    for _ in range(ATTEMPTS):
        r = await attempt()
        if r.status_code == 429:
            return statuses, r
        statuses.append(r.status_code)
    raise AssertionError(f"no 429 after {ATTEMPTS} failures: {statuses}")


def check_429(r: httpx.Response) -> None:
    retry = int(r.headers["retry-after"])
    assert retry >= 1
    err = error_of(r)
    assert err["code"] == "RATE_LIMITED" and "failed authentications" in err["message"]
    assert err["details"]["retry_after"] == retry


async def test_wrong_gateway_tokens_then_429_and_never_another_address(gw: RunningGateway) -> None:
    with trio.fail_after(60):
        bad, same, other = (http_from(gw, "127.0.0.2", "wrong-token-0123456789"), http_from(gw, "127.0.0.2", TOKEN),
                            http_from(gw, "127.0.0.3", TOKEN))  # fmt: skip
        async with bad, same, other:
            statuses, r = await until_throttled(lambda: bad.get("/api/status"))
            assert statuses[:FREE] == [401] * FREE and set(statuses) == {401}
            check_429(r)
            # While it waits, even the right token from that address is refused unread...
            assert (await same.get("/api/status")).status_code == 429
            # ...and a client on another address is not slowed at all.
            assert (await other.get("/api/status")).status_code == 200
            assert (await other.get("/health")).status_code == 200


async def test_forged_jwts_and_wrong_passwords_are_throttled(gw: RunningGateway) -> None:
    with trio.fail_after(60):
        await register(gw, "alice", "the right password")
        forged = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
        async with http_from(gw, "127.0.0.4", forged) as c:
            statuses, r = await until_throttled(lambda: c.get("/api/auth/me"))
            assert set(statuses) == {401}
            check_429(r)
        async with http_from(gw, "127.0.0.5") as c:
            wrong = {"username": "alice", "password": "not the password"}
            statuses, r = await until_throttled(lambda: c.post("/api/auth/login", json=wrong))
            assert set(statuses) == {401}
            check_429(r)
            right = await c.post("/api/auth/login", json={"username": "alice", "password": "the right password"})
            assert right.status_code == 429  # not even checked while the address waits
        async with http_from(gw, "127.0.0.6") as c:
            right = await c.post("/api/auth/login", json={"username": "alice", "password": "the right password"})
            assert right.status_code == 200
        async with http_from(gw, "127.0.0.7") as c:
            statuses, r = await until_throttled(lambda: c.post("/api/auth/refresh", json={"refresh_token": "nope"}))
            assert set(statuses) == {401}
            check_429(r)


async def test_a_success_resets_the_count(gw: RunningGateway) -> None:
    with trio.fail_after(60):
        bad, good = http_from(gw, "127.0.0.8", "wrong-token-0123456789"), http_from(gw, "127.0.0.8", TOKEN)
        async with bad, good:
            for _ in range(3):
                for _ in range(FREE - 1):
                    assert (await bad.get("/api/status")).status_code == 401
                assert (await good.get("/api/status")).status_code == 200
            # Without the resets that was 3 * (FREE - 1) failures: the next one would already have to wait.
            assert (await bad.get("/api/status")).status_code == 401


@asynccontextmanager
async def ws_from(gw: RunningGateway, source: str) -> AsyncIterator[WebSocketConnection]:
    """A `/ws` connection whose TCP socket leaves from `source`."""
    port = urlsplit(gw.base_url).port
    sock = trio.socket.socket()
    await sock.bind((source, 0))
    await sock.connect(("127.0.0.1", port))
    async with trio.open_nursery() as nursery:
        ws = await trio_websocket.wrap_client_stream(nursery, trio.SocketStream(sock), "127.0.0.1", "/ws")
        try:
            yield ws
        finally:
            await ws.aclose()


async def ws_auth(gw: RunningGateway, source: str, token: str, *, v2: bool) -> tuple[str, Any]:
    """Run the handshake from `source`; return ("ok", None) or (error code, the socket's close code)."""
    async with ws_from(gw, source) as ws:
        try:
            if v2:
                await handshake_v2(ws, token, pin=None, chat_id=None, channel_id=None, resume_from=None)
            else:
                await handshake_v1(ws, token, chat_id=None, channel_id=None, resume_from=None)
        except HandshakeError as exc:
            with pytest.raises(ConnectionClosed):
                await ws.get_message()
            assert ws.closed is not None
            return exc.code, ws.closed.code
        return "ok", None


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
async def test_ws_auth_failures_are_throttled(gw: RunningGateway, v2: bool) -> None:
    with trio.fail_after(60):
        outcomes = []
        for _ in range(ATTEMPTS):
            outcomes.append(await ws_auth(gw, "127.0.0.9", "wrong-token-0123456789", v2=v2))
            if outcomes[-1][0] == "rate_limited":
                break
        assert outcomes[:FREE] == [("auth_failed", 1008)] * FREE
        assert outcomes[-1] == ("rate_limited", 1013), outcomes
        # The plaintext error says when to come back; existing clients see an ordinary auth error frame.
        async with ws_from(gw, "127.0.0.9") as ws:
            frame = msgspec.json.decode(await ws.get_message())
            assert frame["type"] == "error" and frame["code"] == "rate_limited"
            assert frame["retry_after"] >= 1 and "retry after" in frame["message"]
        assert (await ws_auth(gw, "127.0.0.9", gw.token, v2=v2))[0] == "rate_limited"
        assert await ws_auth(gw, "127.0.0.10", gw.token, v2=v2) == ("ok", None)
