"""Addresses and CIDR ranges as the config names them (`server.trusted_proxies`), and the address types the
outbound policy uses too.

Plain `ipaddress`, no trio: the config, and so every `gateway …` command, parses these without loading the event
loop's library (0.1-0.3 s of a short command's start).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> list[IPNetwork]:
    """Addresses or CIDR ranges. Raises ValueError naming a bad entry."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip().strip("[]"), strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or CIDR range (127.0.0.1, 10.0.0.0/8, ::1)") from None
    return networks
