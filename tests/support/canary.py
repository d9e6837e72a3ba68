"""A listener on 127.0.0.1 and ::1 that only counts connections: nothing may reach it."""

from __future__ import annotations

import socket
import threading


class Canary:
    def __init__(self) -> None:
        self.connections = 0
        self.v4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.v4.bind(("127.0.0.1", 0))
        self.port = self.v4.getsockname()[1]
        self.v6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        self.v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        self.v6.bind(("::1", self.port))
        self.listeners = [self.v4, self.v6]

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def __enter__(self) -> Canary:
        for listener in self.listeners:
            listener.listen(64)
            threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        for listener in self.listeners:
            listener.close()
