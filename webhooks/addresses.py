"""The one decision on which addresses a webhook may never reach, and the checks that use it.

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

# Refused whatever Python's is_global says: it misses some of these (multicast, the 6to4 relay
# anycast, local-use NAT64 before 3.12) and its tables change between versions. Anything it does
# not call global is refused as well (is_blocked).
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
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215): only this network's translator knows where it goes
        "100::/64",  # discard-only
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation (RFC 9637), which Python before 3.14 calls global
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
# IPv6 forms that carry an IPv4 address: (block, bits to shift the address right, XOR mask). Each is
# also judged by the IPv4 address it carries, so no notation turns 127.0.0.1 into a public address.
_EMBEDDED_IPV4 = tuple(
    (ipaddress.ip_network(net), shift, mask)
    for net, shift, mask in (
        ("::ffff:0:0/96", 0, 0),  # IPv4-mapped
        ("::ffff:0:0:0/96", 0, 0),  # IPv4-translated (SIIT)
        ("::/96", 0, 0),  # IPv4-compatible
        ("64:ff9b::/96", 0, 0),  # NAT64, well-known prefix
        ("64:ff9b:1::/48", 0, 0),  # NAT64, local-use prefix
        ("2002::/16", 80, 0),  # 6to4: the 32 bits after the prefix
        ("2001::/32", 0, 0xFFFFFFFF),  # Teredo: the client is the last 32 bits, inverted
    )
)

_LEGACY_IPV4 = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$", re.IGNORECASE)


# What a tenant is told, at create, PATCH and in the delivery log, whether the host resolves to a
# blocked address or does not resolve at all: two answers would let them map the internal DNS.
UNDELIVERABLE = "Cannot be delivered to: does not resolve to a public address."


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


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, translated, NAT64, 6to4, Teredo), or None."""
    for network, shift, mask in _EMBEDDED_IPV4:
        if address in network:
            return ipaddress.IPv4Address(((int(address) >> shift) ^ mask) & 0xFFFFFFFF)
    return None


def is_blocked(address: IPAddress) -> bool:
    """Whether webhooks may not reach `address`: the one decision, at create, at PATCH and on every connect.

    Blocked unless Python calls it global, it is outside BLOCKED_NETWORKS, and any IPv4 address
    it carries passes the same test.
    """
    if isinstance(address, ipaddress.IPv6Address):
        address = ipaddress.IPv6Address(int(address))  # drop any %zone before comparing
        carried = embedded_ipv4(address)
        if carried is not None and is_blocked(carried):
            return True
    if not address.is_global:
        return True
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
    """Refuse when ANY address is blocked: a mixed answer is how rebinding attacks start.

    Neither the host nor the address is named: the tenant knows the one, and must not learn the other.
    """
    if any(is_blocked(address) for address in addresses):
        raise BlockedAddress(UNDELIVERABLE)
