"""The outbound policy: which addresses a request made on someone's behalf may reach, checked at connect time."""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msgspec
import trio

from gateway.config.networks import IPAddress, IPNetwork

if TYPE_CHECKING:
    import httpx
    import httpx2

Origin = tuple[str, int]

# The instance metadata services of the big clouds (AWS, GCP, Azure, and AWS over IPv6): a fetch there hands out
# the machine's credentials. Link-local and private ranges would refuse them anyway; named for a clearer message.
METADATA = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})
CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAME = re.compile(r"^(\*\.)?([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class OutboundRefusedError(Exception):
    """The outbound policy refused a destination; the message names it and says how the owner may allow it."""

    permanent = True  # retrying cannot help (callers outside gateway/ test this attribute, not the class)


def refusal(ip: IPAddress) -> str | None:
    """Why `ip` is refused by default (loopback, private, link-local, CGNAT, multicast, ...), or None if public."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if ip in METADATA:
        return "a cloud metadata address"
    if ip.is_unspecified:
        return "an unspecified address"  # connecting to 0.0.0.0 reaches this machine
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in CGNAT:
        return "a carrier-grade NAT (shared) address"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved or not ip.is_global:
        return "a reserved address"
    return None


class AllowRule(msgspec.Struct, frozen=True):
    """One `[outbound] allow` entry: a host name (`*.` for a whole domain), an address or a CIDR, maybe a port."""

    name: str | None = None
    network: IPNetwork | None = None
    port: int | None = None

    def matches_name(self, host: str, port: int) -> bool:
        if self.name is None or (self.port is not None and self.port != port):
            return False
        host = host.lower().rstrip(".")
        return host == self.name or (self.name.startswith("*.") and host.endswith(self.name[1:]))

    def matches_ip(self, ip: IPAddress, port: int) -> bool:
        if self.network is None or (self.port is not None and self.port != port):
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return ip.version == self.network.version and ip in self.network


def parse_rule(entry: str) -> AllowRule:
    """Parse `HOST[:PORT]`: a name (`ollama.lan`, `*.lan`), an IPv4 address or CIDR, or an IPv6 one in brackets
    (`[::1]:8080`, `[fd00::/8]`; without a port the brackets may be left out). Raise ValueError saying what is wrong."""
    text = entry.strip()
    host, port_text = text, ""
    if text.startswith("["):
        inside, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{entry!r}: write an IPv6 address as [address] or [address]:port")
        host, port_text = inside, rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    port: int | None = None
    if port_text or text.endswith(":"):
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"{entry!r}: the port must be a number from 1 to 65535")
        port = int(port_text)
    try:
        return AllowRule(network=ipaddress.ip_network(host, strict=False), port=port)
    except ValueError:
        pass
    name = host.lower().rstrip(".")
    if not name or "/" in name or not _NAME.match(name):
        raise ValueError(f"{entry!r}: not a host name, an address or a CIDR (e.g. ollama.lan, 10.0.0.0/8, [::1]:8080)")
    return AllowRule(name=name, port=port)


def origin_of(url: str) -> Origin | None:
    """(host, port) of an http(s) URL, the host in lower case; None for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return parts.hostname.lower(), port or _DEFAULT_PORTS[parts.scheme]


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


_HOW = "the owner may allow it in the config file ([outbound] allow) or set the URL with the gateway token"


class OutboundPolicy:
    """The `[outbound]` rules, and HTTP clients that apply them to every connection they open.

    By default a connection may only reach public addresses. It may reach others when an `allow` rule names them,
    or when it goes to a `trusted` origin: a URL the owner set himself (with the gateway token or in the config
    file). Names are resolved here and the connection is made to the address that was checked, so a name cannot
    resolve to a public address for the check and to a private one for the connection; the name still goes out
    as Host and TLS server name. Redirects are connections too: each hop is checked.
    """

    def __init__(self, allow: Sequence[str] = ()) -> None:
        self.rules = [parse_rule(entry) for entry in allow]
        self._ssl: Any = None  # one TLS context (CA bundle loaded once) for every client of this policy

    def _name_allowed(self, host: str, port: int) -> bool:
        return any(r.matches_name(host, port) for r in self.rules)

    def _why_not(self, ip: IPAddress, port: int) -> str | None:
        if any(r.matches_ip(ip, port) for r in self.rules):
            return None
        return refusal(ip)

    async def addresses(self, host: str, port: int) -> list[str]:
        """The addresses a connection to `host:port` may use (names resolved and checked here).

        Raises OutboundRefusedError when none may be used, and OSError when the name does not resolve.
        """
        ip = _literal(host)
        if ip is not None:
            why = self._why_not(ip, port)
            if why is not None:
                raise OutboundRefusedError(f"refused by the outbound policy: {host} is {why}; {_HOW}")
            return [str(ip)]
        if self._name_allowed(host, port):
            return [host]
        infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        allowed: list[str] = []
        refused: list[str] = []
        for *_, sockaddr in infos:
            found = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            why = self._why_not(found, port)
            if why is None:
                if str(found) not in allowed:
                    allowed.append(str(found))
            else:
                refused.append(f"{found} ({why})")
        if not allowed:
            raise OutboundRefusedError(
                f"refused by the outbound policy: {host} resolves to {', '.join(refused) or 'nothing'}; {_HOW}"
            )
        return allowed

    async def check_url(self, url: str) -> None:
        """Check that `url` may be reached (for settings made by someone who is not the owner).

        Raises OutboundRefusedError; a name that does not resolve now passes (the connection is checked again).
        """
        origin = origin_of(url)
        if origin is None:
            raise OutboundRefusedError(f"refused by the outbound policy: {url!r} is not an http(s) URL")
        try:
            await self.addresses(*origin)
        except OSError:
            return

    def client(self, *, trusted: Iterable[str] = (), **kwargs: Any) -> httpx.AsyncClient:
        """An httpx client whose connections follow this policy; `trusted`: URLs the owner set (their origins may
        be private). The other arguments are httpx.AsyncClient's (never `transport`)."""
        import httpcore
        import httpx

        client: httpx.AsyncClient = self._client(httpx, httpcore, trusted, kwargs)
        return client

    def client2(self, *, trusted: Iterable[str] = (), **kwargs: Any) -> httpx2.AsyncClient:
        """The same as `client` for httpx2, the HTTP library of the MCP SDK (the same API as httpx's)."""
        import httpcore2
        import httpx2

        client: httpx2.AsyncClient = self._client(httpx2, httpcore2, trusted, kwargs)
        return client

    def _client(self, hx: Any, core: Any, trusted: Iterable[str], kwargs: dict[str, Any]) -> Any:
        # The refusal is the library's ConnectError (so callers' `except httpx.HTTPError` handle it) and ours.
        refused = type("OutboundRefused", (OutboundRefusedError, hx.ConnectError), {})
        backend = type("GuardedBackend", (_Guard, core.AsyncNetworkBackend), {})(
            self, _origins(trusted), core.TrioBackend(), refused, core.ConnectError
        )
        if self._ssl is None:
            self._ssl = hx.create_ssl_context()
        transport = hx.AsyncHTTPTransport(verify=self._ssl, trust_env=False)
        # httpx has no argument for a network backend: its pool is replaced by one that uses ours (the same
        # pool class, limits and TLS context). tests/gateway/test_outbound.py fails if this stops taking effect.
        transport._pool = core.AsyncConnectionPool(ssl_context=self._ssl, network_backend=backend, **_POOL)
        return hx.AsyncClient(transport=transport, trust_env=False, **kwargs)


_POOL: dict[str, Any] = {"max_connections": 100, "max_keepalive_connections": 20, "keepalive_expiry": 5.0}


def _origins(urls: Iterable[str]) -> frozenset[Origin]:
    return frozenset(o for o in (origin_of(u) for u in urls) if o is not None)


class _Guard:
    """The network backend's checks (mixed into httpcore's and httpcore2's backend class)."""

    def __init__(
        self, policy: OutboundPolicy, trusted: frozenset[Origin], inner: Any, refused: type[Exception], failed: Any
    ) -> None:
        self.policy = policy
        self.trusted = trusted
        self.inner = inner
        self.refused = refused
        self.failed = failed  # the library's ConnectError, which its client maps to its own

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> Any:
        if (host.lower(), port) in self.trusted:
            candidates = [host]
        else:
            try:
                candidates = await self.policy.addresses(host, port)
            except OutboundRefusedError as exc:
                raise self.refused(str(exc)) from None
            except OSError as exc:
                raise self.failed(f"cannot resolve {host}: {exc}") from exc
        error: Exception | None = None
        for address in candidates:
            try:
                return await self.inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except Exception as exc:  # the next checked address may answer
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> Any:
        raise self.refused("refused by the outbound policy: Unix sockets are never used for outbound requests")

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)


async def check_settable(
    policy: OutboundPolicy, url: str, *, by_owner: bool, what: str, trusted: Iterable[str] = ()
) -> None:
    """Refuse (403 `OUTBOUND_REFUSED`) a URL set by someone other than the owner when the policy would refuse its
    destination; `trusted`: URLs the owner set before (re-sending one unchanged is allowed)."""
    if by_owner or url in trusted:
        return
    try:
        await policy.check_url(url)
    except OutboundRefusedError as exc:
        from gateway.errors import ForbiddenError

        raise ForbiddenError(f"{what}: {exc}", code="OUTBOUND_REFUSED") from None
