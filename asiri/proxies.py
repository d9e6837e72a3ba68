"""Who the client is, believing forwarded headers only from the proxies an operator listed.

Any client can send `X-Forwarded-For: 127.0.0.1` or `X-Forwarded-Proto: https`. They mean something
only when a proxy we trust (ASIRI_TRUSTED_PROXIES, none by default) set them: then the scheme is the
proxy's and the client is the rightmost X-Forwarded-For hop that is not itself a trusted proxy
(every hop to its right was appended by a proxy we trust; anything to its left, the client wrote).
Every other forwarding header (X-Real-IP, True-Client-IP, CF-Connecting-IP...) is never believed.
/metrics, the admin's lockouts (django-axes) and the request log all ask `client_address`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_address(value: str) -> Address | None:
    """An address as a proxy or a socket reports it: `a.b.c.d`, `::1`, `[::1]`, `a.b.c.d:port`, `[::1]:port`."""
    value = value.strip()
    if value.startswith("["):
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:
        value = value.partition(":")[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped  # a dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d
    return address


def is_trusted_proxy(address: Address | None) -> bool:
    return address is not None and any(address in network for network in settings.ASIRI_TRUSTED_PROXIES)


def peer_is_trusted_proxy(request: HttpRequest) -> bool:
    return is_trusted_proxy(parse_address(request.META.get("REMOTE_ADDR", "")))


def client_address(request: HttpRequest) -> str | None:
    """The client's IP address: the socket's peer, unless that is a trusted proxy (see the module)."""
    peer = parse_address(request.META.get("REMOTE_ADDR", ""))
    if not is_trusted_proxy(peer):
        return str(peer) if peer else None
    client = peer
    for hop in reversed(request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")):
        address = parse_address(hop)
        if address is None:
            break  # garbage: what a trusted proxy saw last is all we know
        client = address
        if not is_trusted_proxy(address):
            break
    return str(client)


class TrustedProxyMiddleware:
    """First in the chain: X-Forwarded-Proto counts (SECURE_PROXY_SSL_HEADER) only from a trusted proxy."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if "HTTP_X_FORWARDED_PROTO" in request.META and not peer_is_trusted_proxy(request):
            del request.META["HTTP_X_FORWARDED_PROTO"]
        return self.get_response(request)
