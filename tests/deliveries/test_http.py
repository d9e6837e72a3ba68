"""The outbound HTTP seam against real sockets on 127.0.0.1."""

from __future__ import annotations

import socket
import threading

import pytest

from deliveries import http
from tests.support.canary import Canary
from tests.support.processes import free_port
from tests.support.receiver import Receiver, respond


@pytest.fixture
def allow_loopback(settings):
    settings.ASIRI_ALLOW_PRIVATE_URLS = True


def test_it_posts_and_keeps_a_bounded_excerpt(allow_loopback):
    with Receiver(status=200, body=b"y" * 50_000) as receiver:
        result = http.send(receiver.url("/in?x=1"), b'{"a":1}', {"content-type": "application/json"})
    assert result.ok and result.status_code == 200
    assert len(result.body) == http.MAX_BODY_BYTES
    (request,) = receiver.requests
    assert request.path == "/in?x=1" and request.body == b'{"a":1}'
    assert request.headers["host"] == f"127.0.0.1:{receiver.port}"
    assert receiver.connections == 1


def test_it_connects_to_the_name_it_resolved_keeping_the_host_header(allow_loopback):
    with Receiver() as receiver:
        result = http.send(f"http://localhost:{receiver.port}/h", b"{}", {})
    assert result.ok
    assert receiver.requests[0].headers["host"] == f"localhost:{receiver.port}"


def test_it_never_follows_a_redirect(allow_loopback):
    with Receiver(status=307, headers={"Location": "http://169.254.169.254/latest"}) as receiver:
        result = http.send(receiver.url(), b"{}", {})
    assert result.status_code == 307 and not result.ok
    assert result.location == "http://169.254.169.254/latest"
    assert len(receiver.requests) == 1


def test_a_refused_connection_is_a_failed_attempt(allow_loopback):
    port = free_port()
    result = http.send(f"http://127.0.0.1:{port}/", b"{}", {})
    assert result.status_code is None and "Connection" in result.error


def test_a_hanging_endpoint_times_out(allow_loopback, settings):
    settings.ASIRI_DELIVERY_TIMEOUT = 0.5
    settings.ASIRI_CONNECT_TIMEOUT = 0.5
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    try:
        result = http.send(f"http://127.0.0.1:{listener.getsockname()[1]}/", b"{}", {})
    finally:
        listener.close()
    assert result.status_code is None and "Timed out" in result.error


@pytest.mark.parametrize("target", ["127.0.0.1", "localhost", "127.1", "[::ffff:127.0.0.1]", "2130706433"])
def test_it_refuses_private_targets_without_connecting(target):
    with Receiver() as canary:
        result = http.send(f"http://{target}:{canary.port}/", b"{}", {})
    assert result.status_code is None and result.error.startswith("Refused:")
    assert canary.connections == 0


@pytest.mark.parametrize("target", ["loopback.test", "loopback6.test", "127.0.0.1", "[::1]", "[::ffff:7f00:1]"])
def test_every_socket_is_checked_even_when_the_checks_before_it_let_an_address_through(target, monkeypatch):
    monkeypatch.setattr(http, "check_addresses", lambda host, addresses: None)  # the resolver's and the URL's
    with Canary() as canary:
        result = http.send(f"http://{target}:{canary.port}/", b"{}", {})
    assert result.failure == "refused" and result.error.startswith("Refused:"), result
    assert canary.connections == 0


def test_a_name_that_does_not_resolve_fails_in_the_words_a_private_one_does(connections):
    missing = http.send("https://nowhere.test/", b"{}", {})
    private = http.send("https://intranet.test/", b"{}", {})
    assert missing.status_code is None and missing.error == private.error == http.REFUSED
    assert http.REFUSED == "Refused: Cannot be delivered to: does not resolve to a public address."
    assert (missing.failure, private.failure) == ("dns_error", "refused")  # operators still tell them apart
    assert connections.hosts == []


def test_where_private_targets_are_allowed_a_failed_lookup_says_so(allow_loopback):
    result = http.send("https://nowhere.test/", b"{}", {})
    assert result.failure == "dns_error" and "Could not resolve 'nowhere.test'" in result.error


def test_the_resolver_is_asked_once_per_attempt_and_a_mixed_answer_never_connects(settings):
    from tests.support import resolver

    settings.ASIRI_RESOLVER = "tests.support.resolver.counting_resolve"
    resolver.calls.clear()
    with Canary() as canary:
        results = [http.send(f"http://mixed-loopback.test:{canary.port}/", b"{}", {}) for _ in range(3)]
    assert all(r.error.startswith("Refused:") for r in results), results
    assert resolver.calls == ["mixed-loopback.test"] * 3
    assert canary.connections == 0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("120", 120.0), ("0", 0.0), ("soon", None), ("", None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)
def test_it_reads_retry_after(value, seconds):
    assert http.parse_retry_after(value) == seconds


def test_a_host_that_normalises_to_loopback_is_refused_at_send():

    digits = "\U0001fbf1\U0001fbf2\U0001fbf7.\U0001fbf0.\U0001fbf0.\U0001fbf1"  # 127.0.0.1 in Unicode digit forms
    with Canary() as canary:
        result = http.send(f"http://{digits}:{canary.port}/", b"{}", {})
    assert result.error.startswith("Refused:"), result
    assert canary.connections == 0


def test_response_bodies_are_stored_as_text_without_nul(allow_loopback):
    with Receiver(body=b"binary\x00body") as receiver:
        result = http.send(receiver.url(), b"{}", {})
    assert result.ok and "\x00" not in result.body and result.body.startswith("binary")
    assert "accept-encoding" not in receiver.requests[0].headers  # never asks for compressed replies


def test_an_odd_retry_after_is_ignored():
    assert http.parse_retry_after("²") is None


def test_it_keeps_a_few_response_headers_lower_cased_capped_and_storable(allow_loopback):
    headers = {
        "Retry-After": "7",
        "Content-Type": "text/plain; charset=utf-8",
        "X-Request-ID": "r" * 600,
        "WWW-Authenticate": "caf\xe9",  # sent as Latin-1: not UTF-8
        "Set-Cookie": "session=never-kept",
        "X-Other": "not kept",
    }
    with Receiver(status=503, headers=headers, body=b"busy") as receiver:
        result = http.send(receiver.url(), b"{}", {})
    assert result.headers == {
        "content-type": "text/plain; charset=utf-8",
        "content-length": "4",
        "retry-after": "7",
        "www-authenticate": "caf\ufffd",
        "x-request-id": "r" * http.MAX_HEADER_CHARS,
    }
    assert result.body == "busy" and result.retry_after == 7


def test_sends_started_together_each_settle_their_own_future(allow_loopback):
    with Receiver() as receiver:
        receiver.on("/gone", respond(410))
        futures = http.sender().submit_many(
            [
                (receiver.url("/a"), b'{"n":1}', {}),
                (receiver.url("/gone"), b'{"n":2}', {}),
                (receiver.url("/b"), b"{}", {}),
            ]
        )
        results = [future.result(timeout=10) for future in futures]
    assert [result.status_code for result in results] == [200, 410, 200]
    assert sorted(request.path for request in receiver.requests) == ["/a", "/b", "/gone"]


def test_cancelling_a_started_send_closes_its_connection(allow_loopback, settings):
    settings.ASIRI_DELIVERY_TIMEOUT = 60
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    try:
        (future,) = http.sender().submit_many([(f"http://127.0.0.1:{listener.getsockname()[1]}/", b"{}", {})])
        listener.settimeout(10)
        connection, _ = listener.accept()
        assert future.cancel()
        # The request is abandoned, not left hanging until its timeout: the client end closes.
        connection.settimeout(10)
        while connection.recv(65536):
            pass
        connection.close()
    finally:
        listener.close()
    assert future.cancelled()
