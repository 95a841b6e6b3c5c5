"""`server.trusted_proxies`: X-Forwarded-For names the client only when the peer is a trusted proxy (real sockets)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from gateway.config.file import ConfigError, parse_config
from gateway.http.forwarded import ForwardedFor
from tests.conftest import TOKEN, RunningGateway, make_config, start_gateway
from tests.gateway.http.test_auth_throttle import FREE, check_429, until_throttled

PROXY = "127.0.0.2"  # the trusted proxy's address: any 127.0.0.x is the loopback on Linux
STRANGER = "127.0.0.3"  # a peer that is not a proxy


@pytest.fixture
async def gw(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[RunningGateway]:
    limits = {"failed_auth_free": FREE, "auth_burst": 1000, "auth_per_minute": 60000}
    gateway = await start_gateway(
        nursery, *make_config(tmp_path, limits=limits, server={"trusted_proxies": [PROXY, "10.0.0.0/8"]})
    )
    yield gateway
    with trio.fail_after(10):
        await gateway.stop()


def client(gw: RunningGateway, source: str, token: str, forwarded_for: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    transport = httpx.AsyncHTTPTransport(local_address=source)
    return httpx.AsyncClient(base_url=gw.base_url, headers=headers, transport=transport, timeout=30)


async def test_clients_behind_a_trusted_proxy_are_throttled_apart(gw: RunningGateway) -> None:
    bad = "wrong-token-0123456789"
    with trio.fail_after(60):
        async with client(gw, PROXY, bad, "198.51.100.1") as guesser:
            statuses, r = await until_throttled(lambda: guesser.get("/api/status"))
            assert set(statuses) == {401}
            check_429(r)
        async with (
            client(gw, PROXY, TOKEN, "198.51.100.1") as same,
            # What the client wrote left of what the proxy appended proves nothing: the right-most entry counts.
            client(gw, PROXY, TOKEN, "198.51.100.2, 198.51.100.1") as spoofing,
            # A client the proxy reports through another trusted hop (10/8) is still that client.
            client(gw, PROXY, TOKEN, "198.51.100.1, 10.1.2.3") as via_hop,
            client(gw, PROXY, TOKEN, "198.51.100.2") as other,
            client(gw, PROXY, TOKEN, None) as proxy_itself,
        ):
            assert (await same.get("/api/status")).status_code == 429
            assert (await spoofing.get("/api/status")).status_code == 429
            assert (await via_hop.get("/api/status")).status_code == 429
            assert (await other.get("/api/status")).status_code == 200
            assert (await proxy_itself.get("/api/status")).status_code == 200


async def test_a_peer_that_is_not_a_trusted_proxy_cannot_spoof_its_address(gw: RunningGateway) -> None:
    bad = "wrong-token-0123456789"
    with trio.fail_after(60):
        async with client(gw, STRANGER, bad, "198.51.100.7") as guesser:
            statuses, _ = await until_throttled(lambda: guesser.get("/api/status"))
            assert set(statuses) == {401}
        async with (
            client(gw, STRANGER, TOKEN, "198.51.100.8") as new_name,
            client(gw, PROXY, TOKEN, "198.51.100.7") as named,
            client(gw, PROXY, TOKEN, STRANGER) as stranger_via_proxy,
        ):
            # A fresh X-Forwarded-For from the same untrusted peer does not get it a fresh budget...
            assert (await new_name.get("/api/status")).status_code == 429
            # ...its failures were charged to its own address, not to the one it wrote...
            assert (await named.get("/api/status")).status_code == 200
            # ...which is the address a trusted proxy would report for it.
            assert (await stranger_via_proxy.get("/api/status")).status_code == 429


@pytest.mark.parametrize(
    ("peer", "headers", "client"),
    [
        ("127.0.0.9", [(b"x-forwarded-for", b"198.51.100.1")], "127.0.0.9"),  # not trusted
        ("127.0.0.2", [], "127.0.0.2"),
        ("127.0.0.2", [(b"x-forwarded-for", b"198.51.100.1, 198.51.100.2")], "198.51.100.2"),
        # Two headers are one list, in order.
        ("127.0.0.2", [(b"x-forwarded-for", b"198.51.100.1"), (b"x-forwarded-for", b"198.51.100.2")], "198.51.100.2"),
        ("::ffff:127.0.0.2", [(b"x-forwarded-for", b"2001:db8::1")], "2001:db8::1"),
        ("127.0.0.2", [(b"x-forwarded-for", b"[2001:db8::1]:4711")], "2001:db8::1"),
        ("127.0.0.2", [(b"x-forwarded-for", b"198.51.100.1:4711")], "198.51.100.1"),
        ("127.0.0.2", [(b"x-forwarded-for", b"198.51.100.1, 10.0.0.1")], "198.51.100.1"),
        ("127.0.0.2", [(b"x-forwarded-for", b"10.0.0.5")], "10.0.0.5"),  # only trusted hops: the farthest
        ("127.0.0.2", [(b"x-forwarded-for", b"198.51.100.1, nonsense")], "127.0.0.2"),
    ],
)
def test_the_client_is_the_rightmost_untrusted_hop(peer: str, headers: list[tuple[bytes, bytes]], client: str) -> None:
    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("not called")

    assert ForwardedFor(app, trusted=["127.0.0.2", "10.0.0.0/8"]).client_of(peer, headers) == client


def test_a_bad_trusted_proxy_entry_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"server.trusted_proxies: 'proxy.lan' is not an IP address"):
        parse_config({"server": {"trusted_proxies": ["127.0.0.1", "proxy.lan"]}})
    assert parse_config({"server": {"trusted_proxies": ["::1", "10.0.0.0/8"]}}).server.trusted_proxies
