"""Real HTTP receivers on 127.0.0.1 that record what they get and misbehave on request."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float = field(default_factory=time.monotonic)
    finished_at: float | None = None


# A behaviour gets the handler and how many requests this path had before, and answers.
Behaviour = Callable[[BaseHTTPRequestHandler, int], None]


def respond(status: int, headers: dict[str, str] | None = None, body: bytes = b"ok", delay: float = 0) -> Behaviour:
    def behaviour(handler: BaseHTTPRequestHandler, index: int) -> None:
        if delay:
            time.sleep(delay)
        payload = b"" if status in (204, 304) else body  # these carry no body
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    return behaviour


def hang(seconds: float) -> Behaviour:
    def behaviour(handler: BaseHTTPRequestHandler, index: int) -> None:
        time.sleep(seconds)
        handler.close_connection = True

    return behaviour


def reset_mid_body() -> Behaviour:
    def behaviour(handler: BaseHTTPRequestHandler, index: int) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        handler.wfile.write(b"partial")
        handler.wfile.flush()
        # SO_LINGER 0: close with a TCP reset instead of a clean end of stream.
        handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        handler.connection.close()
        handler.close_connection = True

    return behaviour


def fail_then(failures: int, then: Behaviour, failure: Behaviour | None = None) -> Behaviour:
    failure = failure or respond(500)

    def behaviour(handler: BaseHTTPRequestHandler, index: int) -> None:
        (failure if index < failures else then)(handler, index)

    return behaviour


def max_concurrency(requests: list[ReceivedRequest]) -> int:
    """The most requests that were being handled at one moment, across any receivers."""
    edges = sorted([(r.received_at, 1) for r in requests] + [(r.finished_at or r.received_at, -1) for r in requests])
    peak = current = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak


class Receiver:
    def __init__(
        self, status: int = 200, headers: dict[str, str] | None = None, body: bytes = b"ok", delay: float = 0
    ) -> None:
        self.default: Behaviour = respond(status, headers, body, delay)
        self.behaviours: dict[str, Behaviour] = {}
        self.requests: list[ReceivedRequest] = []
        self.per_path: Counter = Counter()
        self.arrived = threading.Condition()
        self.in_flight = 0
        self.max_in_flight = 0
        self.in_flight_by_path: Counter = Counter()
        self.max_in_flight_by_path: Counter = Counter()
        self.connections = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real endpoints do

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                request = ReceivedRequest("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with receiver.arrived:
                    index = receiver.per_path[self.path]
                    receiver.per_path[self.path] += 1
                    receiver.requests.append(request)
                    receiver.in_flight += 1
                    receiver.in_flight_by_path[self.path] += 1
                    receiver.max_in_flight = max(receiver.max_in_flight, receiver.in_flight)
                    receiver.max_in_flight_by_path[self.path] = max(
                        receiver.max_in_flight_by_path[self.path], receiver.in_flight_by_path[self.path]
                    )
                    receiver.arrived.notify_all()
                try:
                    receiver.behaviours.get(self.path, receiver.default)(self, index)
                finally:
                    request.finished_at = time.monotonic()
                    with receiver.arrived:
                        receiver.in_flight -= 1
                        receiver.in_flight_by_path[self.path] -= 1

            def log_message(self, *args) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256

            def get_request(self):
                accepted = super().get_request()
                receiver.connections += 1
                return accepted

            def handle_error(self, request, client_address) -> None:
                pass  # resets and hang-ups are part of the tests

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, path: str, behaviour: Behaviour) -> str:
        self.behaviours[path] = behaviour
        return self.url(path)

    def wait_for(self, count: int, timeout: float, predicate: Callable[[list], bool] | None = None) -> list:
        with self.arrived:
            self.arrived.wait_for(
                lambda: predicate(self.requests) if predicate else len(self.requests) >= count, timeout=timeout
            )
            return list(self.requests)

    def ids(self) -> Counter:
        with self.arrived:
            return Counter(r.headers.get("webhook-id") for r in self.requests)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
