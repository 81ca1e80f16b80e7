"""The client's address behind reverse proxies (X-Forwarded-For), believed only from
proxies the operator listed (Settings.trusted_proxies, `serve --trusted-proxy`).

The TCP peer is the client unless it is a trusted proxy. Then X-Forwarded-For is read
from the right, skipping trusted proxies, and the first address that is not one is the
client: every entry left of it was written by that client (or someone it relayed), so
it is never believed. With no trusted proxy configured the header is ignored, so a
client cannot choose the address that the sign-in pages, the phone and the rate
limits see.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """Trusted proxies as given on the command line: addresses or CIDR networks.
    Raises ValueError naming the first one that is neither."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {value!r}") from None
    return tuple(networks)


def _address(value: str) -> Address | None:
    value = value.strip()
    if value.startswith("[") and "]" in value:  # "[2001:db8::1]:443" (RFC 7239 style)
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # "192.0.2.1:8080"
        value = value.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        return None
    # An IPv4 client seen through a dual-stack socket reads as ::ffff:a.b.c.d.
    return addr.ipv4_mapped or addr if isinstance(addr, ipaddress.IPv6Address) else addr


def forwarded_client(peer: str | None, forwarded_for: Iterable[str], trusted: Iterable[Network]) -> str:
    """The client's address: `peer` (the TCP peer) unless it is a trusted proxy; then the
    rightmost X-Forwarded-For entry that is not a trusted proxy. `forwarded_for` is every
    X-Forwarded-For header in order (each a comma-separated list). A malformed entry
    ends the walk: the last trusted hop before it is the best we know."""
    trusted = tuple(trusted)
    peer_addr = _address(peer or "")
    if peer_addr is None:
        return peer or "unknown"

    def is_trusted(addr: Address) -> bool:
        return any(addr.version == net.version and addr in net for net in trusted)

    if not is_trusted(peer_addr):
        return str(peer_addr)
    hops = [h for header in forwarded_for for h in header.split(",")]
    client = peer_addr
    for hop in reversed(hops):
        addr = _address(hop)
        if addr is None:
            break
        client = addr
        if not is_trusted(addr):
            break
    return str(client)
