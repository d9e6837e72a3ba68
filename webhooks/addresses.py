"""The one list of addresses a webhook may never reach, and the checks that use it.

Used when a subscription is created or changed (webhooks.validators) and again at send
time on the addresses actually connected to (deliveries.http), so a name that later
resolves somewhere private (DNS rebinding) is still refused.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from functools import lru_cache
from urllib.parse import urlsplit

from django.conf import settings
from django.utils.module_loading import import_string

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Python's is_private/is_global miss some of these (CGNAT, multicast, benchmarking), so
# the set is spelled out.
BLOCKED_NETWORKS = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8",  # "this network", includes the unspecified address
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local, includes cloud metadata at 169.254.169.254
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # TEST-NET-1
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",  # private
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # TEST-NET-2
        "203.0.113.0/24",  # TEST-NET-3
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, includes broadcast 255.255.255.255
        "::/96",  # unspecified, loopback and the deprecated IPv4-compatible block
        "::ffff:0:0/96",  # IPv4-mapped
        "100::/64",  # discard-only
        "2001:db8::/32",  # documentation
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
# Blocks that carry an IPv4 address inside: judged by that address.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")

_LEGACY_IPV4 = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$", re.IGNORECASE)


class BlockedAddress(Exception):
    """The target is, or resolves to, an address webhooks may not reach."""


class ResolutionFailed(Exception):
    """The host name did not resolve."""


def connect_hosts(url: str) -> list[str]:
    """The host as written and as an HTTP client will connect to it.

    yarl (under aiohttp) normalises a URL's host with IDNA, so a host written in, say,
    Unicode digit forms can become an address literal only at send time: both are checked.
    """
    import yarl

    hosts = [urlsplit(url).hostname or ""]
    try:
        raw = yarl.URL(url).raw_host or ""
    except (ValueError, TypeError, UnicodeError):
        raw = ""
    if raw and raw.strip("[]").lower() != hosts[0].lower():
        hosts.append(raw)
    return hosts


def is_blocked(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        address = ipaddress.IPv6Address(int(address))  # drop any %zone before comparing
        if address in _NAT64:
            return is_blocked(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if address in _SIX_TO_FOUR:
            return is_blocked(ipaddress.IPv4Address((int(address) >> 80) & 0xFFFFFFFF))
    return any(address.version == net.version and address in net for net in BLOCKED_NETWORKS)


def parse_literal(host: str) -> IPAddress | None:
    """The address a host literal means, in any notation a resolver accepts, or None for a name.

    Besides the standard forms this reads what inet_aton does (`127.1`, `2130706433`,
    `0x7f000001`, `0177.0.0.1`), because getaddrinfo connects to those too.
    """
    host = host.strip("[]").rstrip(".")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _LEGACY_IPV4.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def system_resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos]


@lru_cache(maxsize=8)
def _resolver(path: str) -> Callable[[str, int], list[str]]:
    return import_string(path)


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` stands for: the literal itself, or what the resolver answers."""
    literal = parse_literal(host)
    if literal is not None:
        return [literal]
    try:
        answers = _resolver(settings.ASIRI_RESOLVER)(host, port)
    except (OSError, UnicodeError) as exc:
        raise ResolutionFailed(f"Could not resolve {host!r}: {exc}") from None
    addresses = []
    for answer in answers:
        try:
            addresses.append(ipaddress.ip_address(answer))
        except ValueError:
            raise ResolutionFailed(f"Resolver gave {answer!r} for {host!r}, which is not an address.") from None
    if not addresses:
        raise ResolutionFailed(f"Could not resolve {host!r}: no addresses.")
    return addresses


def check_addresses(host: str, addresses: list[IPAddress]) -> None:
    """Refuse when ANY address is blocked: a mixed answer is how rebinding attacks start."""
    for address in addresses:
        if is_blocked(address):
            # The address itself is not named: it would let a tenant map internal host names.
            what = "is" if str(address) == host.strip("[]") else "resolves to"
            raise BlockedAddress(f"{host} {what} a private, loopback or reserved address.")
