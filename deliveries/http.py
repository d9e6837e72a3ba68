"""The one place that makes outbound webhook requests.

Sending is I/O, so it runs on an asyncio loop (aiohttp) in a thread of each worker process,
many requests in flight at once, while the calling thread keeps the database work. One
blocking `requests` session measured 623 signed requests/s here, aiohttp with 50 in flight
3,183/s (docs/architecture.md has the figures).

The address guard: every socket the sender opens comes from `guarded_socket`, which refuses
one whose address webhooks.addresses.is_blocked before it exists, however aiohttp came by the
address (a literal, which it connects to without asking a resolver, or a name). For names, the
resolver aiohttp calls for every new connection resolves the host once, refuses it whole if
ANY address is blocked (a mixed answer is how rebinding starts), and hands aiohttp exactly the
addresses it checked, so the connection goes to a checked address while the name is kept for
the Host header and TLS: there is no second lookup for DNS rebinding to exploit. Redirects are
never followed, and no more than MAX_BODY_BYTES of a response is read.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import functools
import ipaddress
import logging
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import aiohttp
import certifi
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult
from django.conf import settings

from webhooks.addresses import (
    UNDELIVERABLE,
    BlockedAddress,
    ResolutionFailed,
    check_addresses,
    connect_hosts,
    is_blocked,
    parse_literal,
    resolve,
)

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 20_000
MAX_LOCATION_CHARS = 500
# The response headers an attempt keeps, for whoever reads the log: what the answer was, when to come
# back, where it pointed, and how to find the request in the endpoint's own logs. Never cookies or
# anything else that could carry a credential; each value at most MAX_HEADER_CHARS.
KEPT_RESPONSE_HEADERS = (
    "content-type",
    "content-length",
    "location",
    "retry-after",
    "www-authenticate",
    "x-request-id",
)
MAX_HEADER_CHARS = 500
REFUSED = f"Refused: {UNDELIVERABLE}"
FAILURES = ("timeout", "connection_error", "tls_error", "dns_error", "refused", "invalid_url", "other_error")


@dataclass(frozen=True)
class HttpResult:
    status_code: int | None
    duration_ms: int
    body: str = ""
    error: str = ""
    location: str = ""
    retry_after: float | None = None
    headers: dict[str, str] = field(default_factory=dict)  # the KEPT_RESPONSE_HEADERS it had
    # Why no response came (one of FAILURES), so metrics can count kinds without parsing `error`.
    failure: str = ""

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class BlockedSocket(OSError):
    """A connection guarded_socket refused: an OSError, so aiohttp reports it like any failed connect."""


def guarded_socket(addr_info: AddrInfoType) -> socket.socket:
    """The socket for one connection attempt, refused before it exists if its address is blocked."""
    family, type_, proto, _, sockaddr = addr_info
    if not settings.ASIRI_ALLOW_PRIVATE_URLS and is_blocked(ipaddress.ip_address(sockaddr[0])):
        raise BlockedSocket(UNDELIVERABLE)
    return socket.socket(family=family, type=type_, proto=proto)


class GuardedResolver(AbstractResolver):
    """Resolves through webhooks.addresses and refuses blocked targets before any connect."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await asyncio.get_running_loop().run_in_executor(None, resolve, host, port)
        if not settings.ASIRI_ALLOW_PRIVATE_URLS:
            check_addresses(host, addresses)
        return [
            ResolveResult(
                hostname=host,
                host=str(address),
                port=port,
                family=socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        pass


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


def _text(value: str) -> str:
    """Storable text: aiohttp keeps bytes that are not UTF-8 as lone surrogates, and PostgreSQL refuses
    those as it refuses NUL."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace").replace("\x00", "\ufffd")


def kept_headers(headers) -> dict[str, str]:
    """The KEPT_RESPONSE_HEADERS of a response, names lower-cased, repeats joined, values capped."""
    kept = {}
    for name in KEPT_RESPONSE_HEADERS:
        values = headers.getall(name, [])
        if values:
            kept[name] = _text(", ".join(values))[:MAX_HEADER_CHARS]
    return kept


async def _read_excerpt(response: aiohttp.ClientResponse) -> bytes:
    chunks, size = [], 0
    while size < MAX_BODY_BYTES:
        chunk = await response.content.read(MAX_BODY_BYTES - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


async def post_webhook(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]) -> HttpResult:
    """POST one signed webhook and describe what happened; never raises for the endpoint's faults."""
    started = time.monotonic()

    def failed(failure: str, error: str) -> HttpResult:
        return HttpResult(None, int((time.monotonic() - started) * 1000), error=error, failure=failure)

    timeout = aiohttp.ClientTimeout(total=settings.ASIRI_DELIVERY_TIMEOUT, sock_connect=settings.ASIRI_CONNECT_TIMEOUT)
    try:
        # Address literals in notations yarl rejects (127.1, 2130706433) would fail without a word
        # about why: the URL's own host gets the create-time check first.
        if not settings.ASIRI_ALLOW_PRIVATE_URLS:
            for host in connect_hosts(url):
                literal = parse_literal(host)
                if literal is not None:
                    check_addresses(host, [literal])
        async with session.post(url, data=body, headers=headers, allow_redirects=False, timeout=timeout) as response:
            excerpt = await _read_excerpt(response)
            return HttpResult(
                response.status,
                int((time.monotonic() - started) * 1000),
                body=_text(excerpt.decode("utf-8", errors="replace")),
                location=(response.headers.get("Location") or "")[:MAX_LOCATION_CHARS],
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
                headers=kept_headers(response.headers),
            )
    except BlockedAddress:
        return failed("refused", REFUSED)
    except ResolutionFailed as exc:
        # The log says what it says for a private address, so it cannot map the internal DNS; the
        # metric still tells DNS trouble apart. Where private targets are allowed there is nothing to hide.
        return failed("dns_error", str(exc) if settings.ASIRI_ALLOW_PRIVATE_URLS else REFUSED)
    except TimeoutError:
        return failed("timeout", f"Timed out after {settings.ASIRI_DELIVERY_TIMEOUT:g} s.")
    except aiohttp.ClientConnectorCertificateError as exc:
        return failed("tls_error", f"TLS certificate error: {exc.certificate_error}")
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, BlockedSocket):
            return failed("refused", REFUSED)
        return failed("connection_error", f"Connection failed: {exc.os_error.strerror or exc.os_error}")
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError) as exc:
        return failed("connection_error", f"Connection broken: {exc or type(exc).__name__}")
    except aiohttp.ClientError as exc:
        return failed("other_error", f"{type(exc).__name__}: {exc}")
    except (ValueError, UnicodeError) as exc:
        return failed("invalid_url", f"Invalid URL: {exc}")


# (url, body, headers) of one signed webhook
Request = tuple[str, bytes, dict[str, str]]


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop where it is installed (every platform but Windows), else asyncio's.

    The sender's thread is busy with little but aiohttp and the loop under it: uvloop (libuv, in C) took
    12 to 15 % off its CPU per request, against nginx, beside asyncio's loop (bench/RESULTS.md).
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class Sender:
    """An event loop in a daemon thread with one aiohttp session (kept-alive connections)."""

    def __init__(self) -> None:
        self.loop = new_event_loop()
        # Sends ended in this turn of the loop, settled together at its end (_settle_ended).
        self._ended: list[tuple[concurrent.futures.Future, asyncio.Task]] = []
        self.thread = threading.Thread(target=self.loop.run_forever, name="webhook-sender", daemon=True)
        self.thread.start()
        self.session = asyncio.run_coroutine_threadsafe(self._open(), self.loop).result()

    async def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(),
            socket_factory=guarded_socket,
            use_dns_cache=False,  # every new connection is resolved and checked again
            # The pump bounds sends per subscription and in total; a second, per-host limit here
            # would make sends queue for a connection and time out without being sent.
            limit=settings.ASIRI_SEND_CONCURRENCY,
            limit_per_host=0,
            ssl=ssl.create_default_context(cafile=certifi.where()),
        )
        # No Accept-Encoding: excerpts are stored as text, and a compressed body is not text.
        return aiohttp.ClientSession(
            connector=connector, skip_auto_headers=("User-Agent", "Accept-Encoding"), auto_decompress=False
        )

    def close(self) -> None:
        if self.loop.is_running():
            asyncio.run_coroutine_threadsafe(self.session.close(), self.loop).result(timeout=5)
            self.loop.call_soon_threadsafe(self.loop.stop)

    def submit(self, url: str, body: bytes, headers: dict[str, str]) -> concurrent.futures.Future[HttpResult]:
        return self.submit_many([(url, body, headers)])[0]

    def submit_many(self, requests: list[Request]) -> list[concurrent.futures.Future[HttpResult]]:
        """Start these sends with one call into the loop's thread, not one each: every such call wakes the
        loop through its self-pipe, a third of the calling thread's time per send when made one by one
        (py-spy, bench/RESULTS.md). Each future settles as asyncio.run_coroutine_threadsafe's would:
        cancelling it cancels its send."""
        futures = [concurrent.futures.Future() for _ in requests]
        coroutines = [post_webhook(self.session, url, body, headers) for url, body, headers in requests]
        self.loop.call_soon_threadsafe(self._start, coroutines, futures)
        return futures

    def _start(self, coroutines: list, futures: list[concurrent.futures.Future]) -> None:
        for coroutine, future in zip(coroutines, futures, strict=True):
            if future.cancelled():
                coroutine.close()
                continue
            task = self.loop.create_task(coroutine)
            task.add_done_callback(functools.partial(self._ended_one, future))
            future.add_done_callback(functools.partial(_cancel_on_loop, self.loop, task))

    def _ended_one(self, future: concurrent.futures.Future, task: asyncio.Task) -> None:
        if not self._ended:
            self.loop.call_soon(self._settle_ended)
        self._ended.append((future, task))

    def _settle_ended(self) -> None:
        """Settle the futures of every send that ended in one turn of the loop, together.

        Settling one wakes whoever waits on it (the pump): once per send, that was a thread switch and
        a fight for the GIL per response; per turn of the loop it is one for all the responses that
        one poll of the sockets brought.
        """
        ended, self._ended = self._ended, []
        for future, task in ended:
            try:
                _settle(future, task)
            except Exception:
                # One future in a state nothing here expects must not leave the rest of its turn unsettled,
                # and their sends counted as in flight until the pump stops.
                logger.exception("could not hand a send's outcome to its waiter")


def _settle(future: concurrent.futures.Future, task: asyncio.Task) -> None:
    """Hand a finished send's outcome to its future, unless the future was cancelled meanwhile."""
    if not future.set_running_or_notify_cancel():
        return
    if task.cancelled():
        future.set_exception(concurrent.futures.CancelledError())
    elif (error := task.exception()) is not None:
        future.set_exception(error)
    else:
        future.set_result(task.result())


def _cancel_on_loop(loop: asyncio.AbstractEventLoop, task: asyncio.Task, future: concurrent.futures.Future) -> None:
    if future.cancelled() and not loop.is_closed():
        loop.call_soon_threadsafe(task.cancel)


_sender: Sender | None = None
_sender_pid: int | None = None
_sender_lock = threading.Lock()


def sender() -> Sender:
    """This process's sender; a forked Celery child makes its own."""
    global _sender, _sender_pid
    with _sender_lock:
        if _sender is None or _sender_pid != os.getpid():
            _sender, _sender_pid = Sender(), os.getpid()
            atexit.register(_sender.close)
        return _sender


def send(url: str, body: bytes, headers: dict[str, str]) -> HttpResult:
    """Send one webhook and wait for the outcome: the seam without the engine around it."""
    return sender().submit(url, body, headers).result()
