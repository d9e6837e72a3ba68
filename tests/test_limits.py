"""Every body over the limit on a /v1/ path is the JSON 413, whatever its size and framing, with no traceback."""

from __future__ import annotations

import http.client
import json
import logging
import socket

import pytest

from tests.support.processes import free_port, gunicorn, serves_healthz, wait_until

TOO_LARGE = {"detail": "Request body is larger than 1000000 bytes."}


@pytest.mark.parametrize("size", [1_000_001, 3_000_000, 20_000_000])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/webhooks/subscriptions"),
        ("PATCH", "/v1/webhooks/subscriptions/sub_x"),
        ("POST", "/v1/webhooks/subscriptions/sub_x/rotate-secret"),
        ("POST", "/v1/events"),
        ("PUT", "/v1/nowhere"),
    ],
)
def test_an_oversized_body_is_the_json_413_at_any_size(api, caplog, method, path, size):
    body = b'{"description": "' + b"x" * size + b'"}'
    with caplog.at_level(logging.INFO):
        response = api.generic(method, path, body, content_type="application/json")
    assert response.status_code == 413
    assert response["Content-Type"] == "application/json" and response.json() == TOO_LARGE
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []


def test_a_body_at_the_limit_is_parsed(api):
    body = json.dumps({"url": "https://hooks.example.com/", "description": "x" * 20}).encode()
    body += b" " * (1_000_000 - len(body))
    response = api.generic("POST", "/v1/webhooks/subscriptions", body, content_type="application/json")
    assert response.status_code == 201, response.content


def post(port: int, body, headers: dict[str, str]) -> tuple[int, dict]:
    """Python's http.client sends the whole body before it reads the answer, like many API clients."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(
            "POST", "/v1/webhooks/subscriptions", body, headers, encode_chunked="Transfer-Encoding" in headers
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def pieces(total: int, size: int = 65536):
    for _ in range(total // size):
        yield b" " * size


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_gunicorn_answers_413_to_large_and_chunked_bodies_and_parses_small_chunked_ones(alice, make_key):
    key = make_key(alice)
    json_with_key = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    chunked = {**json_with_key, "Transfer-Encoding": "chunked"}
    port = free_port()
    with gunicorn(port, workers=1) as web:
        assert wait_until(lambda: serves_healthz(port), timeout=30)
        assert post(port, b" " * 20_000_000, json_with_key) == (413, TOO_LARGE)
        assert post(port, pieces(20_000_000), chunked) == (413, TOO_LARGE)
        assert post(port, pieces(1_048_576), chunked) == (413, TOO_LARGE)
        small = [b'{"url": "https://hooks.example.com/",', b' "description": "sent in chunks"}']
        status, created = post(port, iter(small), chunked)
        assert status == 201 and created["description"] == "sent in chunks"
        assert _raw(port, b"Transfer-Encoding: chunked\r\n\r\nzz\r\nnot a chunk\r\n").startswith(b"HTTP/1.1 400")
    log = "".join(web.lines)
    assert "Traceback" not in log and '"level": "ERROR"' not in log and "RequestDataTooBig" not in log


def _raw(port: int, rest: bytes) -> bytes:
    """A request written by hand, for framing http.client would not send."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" + rest)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer
