"""The outbound policy against real sockets: private destinations refused, redirects and DNS answers checked."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio

from gateway.config.file import ConfigError, parse_config
from gateway.outbound import OutboundPolicy, OutboundRefusedError, parse_rule, refusal


class Listener:
    """A loopback HTTP/1.1 server that answers `response` and counts the connections it accepted."""

    def __init__(self, response: bytes) -> None:
        self.response = response
        self.connections = 0
        self.port = 0

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        try:
            await stream.receive_some(65536)
            await stream.send_all(self.response)
        finally:
            await stream.aclose()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Listener]:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(trio.serve_tcp, self._handle, 0)
            self.port = listeners[0].socket.getsockname()[1]
            try:
                yield self
            finally:
                nursery.cancel_scope.cancel()


def ok() -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"


def redirect(to: str) -> bytes:
    return f"HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode()


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.10", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("192.0.2.1", "private"),  # documentation range: Python counts it private
        ("240.0.0.1", "private"),
    ],
)
def test_non_public_addresses_are_refused_by_default(address: str, why: str) -> None:
    reason = refusal(ipaddress.ip_address(address))
    assert reason is not None and why in reason


@pytest.mark.parametrize("address", ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


def test_allow_rules_parse_hosts_cidrs_and_ports() -> None:
    assert parse_rule("ollama.lan").name == "ollama.lan"
    assert parse_rule("Ollama.LAN:11434").port == 11434
    assert parse_rule("*.lan").matches_name("printer.lan", 80)
    assert not parse_rule("*.lan").matches_name("lan", 80)
    assert not parse_rule("ollama.lan:11434").matches_name("ollama.lan", 80)
    rule = parse_rule("10.0.0.0/8")
    assert rule.matches_ip(ipaddress.ip_address("10.9.8.7"), 1) and not rule.matches_ip(
        ipaddress.ip_address("11.0.0.1"), 1
    )
    assert parse_rule("127.0.0.1:11434").matches_ip(ipaddress.ip_address("127.0.0.1"), 11434)
    assert not parse_rule("127.0.0.1:11434").matches_ip(ipaddress.ip_address("127.0.0.1"), 80)
    assert parse_rule("127.0.0.1").matches_ip(ipaddress.ip_address("::ffff:127.0.0.1"), 80)
    assert parse_rule("[::1]:8080").matches_ip(ipaddress.ip_address("::1"), 8080)
    assert parse_rule("[fd00::/8]").matches_ip(ipaddress.ip_address("fd00::5"), 1)
    assert parse_rule("fd00::/8").matches_ip(ipaddress.ip_address("fd00::5"), 1)
    for bad in ["", "http://x", "a b", "host:0", "host:99999", "host:", "[::1", "[::1]x", "10.0.0.0/33:80"]:
        with pytest.raises(ValueError):
            parse_rule(bad)


def test_a_bad_allow_entry_is_a_config_error_naming_the_setting() -> None:
    assert parse_config({"outbound": {"allow": ["10.0.0.0/8", "ollama.lan:11434"]}}).outbound.allow
    with pytest.raises(ConfigError, match=r"outbound\.allow: 'http://x'"):
        parse_config({"outbound": {"allow": ["http://x"]}})


async def test_private_destinations_are_refused_before_any_connection() -> None:
    async with Listener(ok()).running() as target:
        policy = OutboundPolicy()
        with trio.fail_after(10):
            for url in (
                f"http://127.0.0.1:{target.port}/",
                f"http://localhost:{target.port}/",  # a name that resolves to loopback
                f"http://[::ffff:127.0.0.1]:{target.port}/",
                f"http://0.0.0.0:{target.port}/",
                "http://169.254.169.254/latest/meta-data/",
                "http://[fd00:ec2::254]/latest/meta-data/",
            ):
                async with policy.client() as client:
                    with pytest.raises(OutboundRefusedError, match="refused by the outbound policy"):
                        await client.get(url)
                async with policy.client2() as client2:  # the MCP SDK's HTTP library gets the same checks
                    with pytest.raises(OutboundRefusedError):
                        await client2.get(url)
        assert target.connections == 0


async def test_the_refusal_is_an_httpx_error_so_callers_handle_it_like_a_failed_connection() -> None:
    async with OutboundPolicy().client() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("http://127.0.0.1:9/")


async def test_the_owners_url_and_the_allow_list_may_reach_private_addresses() -> None:
    async with Listener(ok()).running() as target:
        url = f"http://localhost:{target.port}/v1"
        with trio.fail_after(10):
            async with OutboundPolicy().client(trusted=[url]) as client:
                assert (await client.get(f"http://localhost:{target.port}/models")).text == "ok"
                # Only that host and port: the same host on another port is still refused.
                with pytest.raises(OutboundRefusedError):
                    await client.get(f"http://localhost:{target.port + 1 if target.port < 65535 else 1}/")
            for allow in ([f"127.0.0.1:{target.port}"], ["127.0.0.0/8"], ["localhost"], [f"localhost:{target.port}"]):
                async with OutboundPolicy(allow).client() as client:
                    assert (await client.get(f"http://localhost:{target.port}/")).text == "ok", allow
            async with OutboundPolicy(["127.0.0.1:1"]).client() as client:
                with pytest.raises(OutboundRefusedError):  # the rule's port is not this one
                    await client.get(f"http://127.0.0.1:{target.port}/")
        assert target.connections == 5


async def test_each_redirect_hop_is_checked() -> None:
    async with Listener(ok()).running() as private:
        hop = Listener(redirect(f"http://127.0.0.1:{private.port}/secret"))
        async with hop.running():
            # The first hop is allowed (the owner's URL), the redirect to another private address is not.
            start = f"http://localhost:{hop.port}/start"
            with trio.fail_after(10):
                async with OutboundPolicy().client(trusted=[start], follow_redirects=True) as client:
                    with pytest.raises(OutboundRefusedError, match=r"127\.0\.0\.1 is a loopback"):
                        await client.get(start)
            assert hop.connections == 1
    assert private.connections == 0


class Rebinding(trio.abc.HostnameResolver):
    """Answers a public address the first time a name is asked, then loopback: a DNS-rebinding attacker."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.asked = 0

    async def getaddrinfo(self, host: bytes | str | None, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in (self.name, self.name.encode()):
            return await trio.to_thread.run_sync(lambda: socket.getaddrinfo(host, port, *args, **kwargs))
        self.asked += 1
        address = "93.184.216.34" if self.asked == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, int(port)))]

    async def getnameinfo(self, sockaddr: Any, flags: int) -> Any:
        raise NotImplementedError


async def test_the_connection_goes_to_the_checked_address_not_to_a_second_lookup() -> None:
    resolver = Rebinding("rebind.test")
    trio.socket.set_custom_hostname_resolver(resolver)
    try:
        async with Listener(ok()).running() as target:
            with trio.fail_after(20):
                timeout = httpx.Timeout(5.0, connect=1.0)
                async with OutboundPolicy().client(timeout=timeout) as client:
                    # Checked: public. Connected: that public address (unreachable here), never the loopback
                    # answer a second lookup would have given.
                    with pytest.raises(httpx.TransportError):
                        await client.get(f"http://rebind.test:{target.port}/")
                    assert resolver.asked == 1
                    with pytest.raises(OutboundRefusedError, match=r"rebind\.test resolves to 127\.0\.0\.1"):
                        await client.get(f"http://rebind.test:{target.port}/")
            assert target.connections == 0
    finally:
        trio.socket.set_custom_hostname_resolver(None)
