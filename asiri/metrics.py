"""`GET /metrics`: Prometheus exposition, answered before the other middleware like the health checks.

Prometheus addresses a target by IP, so, like /healthz, this does not go through
DJANGO_ALLOWED_HOSTS (nothing here builds a URL from the Host header). Access is decided here
instead: the client's address is in ASIRI_METRICS_ALLOWED_NETWORKS (loopback by default), or it
sends `Authorization: Bearer <ASIRI_METRICS_TOKEN>`. Anything else gets a 403. The client's address
is the one asiri/proxies.py decides: behind a proxy listed in ASIRI_TRUSTED_PROXIES, the client it
forwarded for. A request that carries any forwarding header from a peer that is not a trusted
proxy is let in by the token only: behind a proxy on the same host that nobody listed, every
client on the internet would otherwise arrive from 127.0.0.1. API keys play no part.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import start_http_server
from prometheus_client.exposition import choose_encoder

from asiri.proxies import client_address, parse_address, peer_is_trusted_proxy
from deliveries.metrics import exposition_registry, process_registry

logger = logging.getLogger(__name__)

PATH = "/metrics"
# Headers some proxy or CDN sets for the client's address; none is ever believed here.
PROXY_HEADERS = (
    "HTTP_X_FORWARDED_FOR",
    "HTTP_FORWARDED",
    "HTTP_X_REAL_IP",
    "HTTP_X_CLIENT_IP",
    "HTTP_TRUE_CLIENT_IP",
    "HTTP_CF_CONNECTING_IP",
    "HTTP_X_CLUSTER_CLIENT_IP",
    "HTTP_FASTLY_CLIENT_IP",
)


def token_allowed(request: HttpRequest) -> bool:
    expected = settings.ASIRI_METRICS_TOKEN
    if not expected:
        return False
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), expected.encode())


def address_allowed(request: HttpRequest) -> bool:
    if not peer_is_trusted_proxy(request) and any(header in request.META for header in PROXY_HEADERS):
        return False
    address = parse_address(client_address(request) or "")
    return address is not None and any(address in network for network in settings.ASIRI_METRICS_ALLOWED_NETWORKS)


def metrics_response(request: HttpRequest) -> HttpResponse:
    if request.method != "GET":
        response = JsonResponse({"detail": f'Method "{request.method}" not allowed.'}, status=405)
        response["Allow"] = "GET"
        return response
    if not (address_allowed(request) or token_allowed(request)):
        return JsonResponse(
            {"detail": "Metrics are served to the allowed networks, or with the metrics token."}, status=403
        )
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    response = HttpResponse(encoder(exposition_registry()), content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response


class MetricsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path == PATH:
            return metrics_response(request)
        return self.get_response(request)


def serve_worker_metrics() -> None:
    """In a Celery worker's main process, when ASIRI_WORKER_METRICS_ADDRESS is set: serve the
    counters of every process on this host (a worker host may have no web process). No database
    gauges here (the web's /metrics has them) and no token: bind it to a private address."""
    address = settings.ASIRI_WORKER_METRICS_ADDRESS
    if address is None:
        return
    host, port = address
    start_http_server(port, addr=host, registry=process_registry())
    logger.info("serving worker metrics on %s port %s", host, port)
