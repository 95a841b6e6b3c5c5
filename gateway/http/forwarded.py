"""The client's address behind a reverse proxy: `X-Forwarded-For`, believed only from the proxies the owner trusts."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from gateway.config.networks import parse_networks
from gateway.types import ASGIApp, Receive, Scope, Send


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("["):  # [v6]:port
        text = text[1 : text.find("]")] if "]" in text else text
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # a dual-stack socket's ::ffff:127.0.0.1 is 127.0.0.1
    return ip


class ForwardedFor:
    """With `server.trusted_proxies` set: a request or WebSocket whose peer is one of them gets, as its client
    address (`scope["client"]`, which the rate limits and the failed-authentication throttle key on), the right-most
    `X-Forwarded-For` entry that is not itself a trusted proxy. Entries left of it were written by the client and
    prove nothing; a peer that is not trusted keeps its own address, whatever it sends."""

    def __init__(self, app: ASGIApp, *, trusted: Iterable[str]) -> None:
        self.app = app
        self.trusted = parse_networks(trusted)

    def _trusts(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
        return ip is not None and any(ip in net for net in self.trusted)

    def client_of(self, peer: str, headers: Iterable[tuple[bytes, bytes]]) -> str:
        """The client address of a connection from `peer` carrying these headers."""
        if not self._trusts(_address(peer)):
            return peer
        # Several X-Forwarded-For headers are one list, in order (RFC 9110 §5.3).
        hops = [h for name, value in headers if name == b"x-forwarded-for" for h in value.decode("latin-1").split(",")]
        client = peer
        for hop in reversed(hops):
            ip = _address(hop)
            if ip is None:
                break  # not an address: what a trusted proxy never writes, so nothing left of it is believed
            client = str(ip)
            if not self._trusts(ip):
                break
        # With no header, or only trusted hops in it, the farthest trusted hop is the client (a proxy's own check).
        return client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] in ("http", "websocket") and client:
            address = self.client_of(client[0], scope.get("headers", ()))
            if address != client[0]:
                scope = {**scope, "client": (address, 0)}
        await self.app(scope, receive, send)
