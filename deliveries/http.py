"""The one place that makes outbound webhook requests.

It resolves the host once, refuses if any address is blocked, and connects to the
address it checked while keeping the name for the Host header and TLS (SNI and
certificate check), so there is no second lookup for DNS rebinding to exploit.
Redirects are never followed, and no more than MAX_BODY_BYTES of a response is read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import certifi
import urllib3
from django.conf import settings

from webhooks.addresses import BlockedAddress, ResolutionFailed, check_addresses, resolve

MAX_BODY_BYTES = 20_000
MAX_LOCATION_CHARS = 500


@dataclass(frozen=True)
class HttpResult:
    status_code: int | None
    duration_ms: int
    body: str = ""
    error: str = ""
    location: str = ""

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def post_webhook(url: str, body: bytes, headers: dict[str, str]) -> HttpResult:
    started = time.monotonic()

    def elapsed() -> int:
        return int((time.monotonic() - started) * 1000)

    parts = urlsplit(url)
    host = parts.hostname or ""
    https = parts.scheme.lower() == "https"
    port = parts.port or (443 if https else 80)
    try:
        addresses = resolve(host, port)
        if not settings.ASIRI_ALLOW_PRIVATE_URLS:
            check_addresses(host, addresses)
    except (BlockedAddress, ResolutionFailed) as exc:
        return HttpResult(None, elapsed(), error=f"Refused: {exc}" if isinstance(exc, BlockedAddress) else str(exc))

    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    request_headers = {**headers, "Host": parts.netloc}
    timeout = urllib3.Timeout(
        connect=settings.ASIRI_CONNECT_TIMEOUT,
        read=settings.ASIRI_DELIVERY_TIMEOUT,
        total=settings.ASIRI_DELIVERY_TIMEOUT,
    )
    last_error = ""
    for address in addresses:
        if https:
            pool = urllib3.HTTPSConnectionPool(
                str(address),
                port,
                timeout=timeout,
                retries=False,
                maxsize=1,
                server_hostname=host,
                assert_hostname=host,
                cert_reqs="CERT_REQUIRED",
                ca_certs=certifi.where(),
            )
        else:
            pool = urllib3.HTTPConnectionPool(str(address), port, timeout=timeout, retries=False, maxsize=1)
        try:
            response = pool.urlopen(
                "POST",
                target,
                body=body,
                headers=request_headers,
                redirect=False,
                retries=False,
                preload_content=False,
                assert_same_host=False,
            )
            try:
                excerpt = response.read(MAX_BODY_BYTES)
            finally:
                response.release_conn()
            return HttpResult(
                response.status,
                elapsed(),
                body=excerpt.decode("utf-8", errors="replace"),
                location=(response.headers.get("Location") or "")[:MAX_LOCATION_CHARS],
            )
        except urllib3.exceptions.NewConnectionError as exc:
            last_error = f"Connection failed: {_reason(exc)}"
            continue  # the next address of the same name may answer
        except urllib3.exceptions.HTTPError as exc:
            return HttpResult(None, elapsed(), error=_describe(exc))
        finally:
            pool.close()
    return HttpResult(None, elapsed(), error=last_error or "Connection failed.")


def _reason(exc: Exception) -> str:
    text = str(exc)
    return text.split(": ", 1)[-1] if ": " in text else text


def _describe(exc: Exception) -> str:
    if isinstance(exc, (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ConnectTimeoutError)):
        return f"Timed out after {settings.ASIRI_DELIVERY_TIMEOUT:g} s."
    if isinstance(exc, urllib3.exceptions.SSLError):
        return f"TLS error: {_reason(exc)}"
    if isinstance(exc, urllib3.exceptions.ProtocolError):
        return f"Connection broken: {_reason(exc)}"
    return f"{type(exc).__name__}: {_reason(exc)}"
