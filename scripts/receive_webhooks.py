#!/usr/bin/env python3
"""A local webhook receiver for trying ASIRI out: prints each delivery and answers 204.

python3 scripts/receive_webhooks.py [PORT]    # default 9000, listens on 127.0.0.1 only
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        print(f"--- {self.path}", flush=True)
        for name in ("webhook-id", "webhook-timestamp", "webhook-signature", "user-agent"):
            print(f"{name}: {self.headers.get(name)}")
        try:
            print(json.dumps(json.loads(body), indent=2))
        except ValueError:
            print(body[:2000])
        sys.stdout.flush()
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    print(f"Receiving webhooks on http://127.0.0.1:{port}/ (Ctrl-C to stop)", flush=True)
    HTTPServer(("127.0.0.1", port), Handler).serve_forever()
