"""A fast webhook receiver for benchmarks: aiohttp on 127.0.0.1, one or more ports.

POST any path: records the webhook-id and the wall-clock receipt time, answers 204 (after
?delay= seconds, or the port's default delay). Paths under /fail-first/ answer 500 the first time a
webhook-id arrives and 204 after; every request to them is kept, in arrival order, with its time
and status. GET /stats: what has arrived so far (`?attempts=1`: the /fail-first/ requests too).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from aiohttp import web

received: dict[str, float] = {}
counts = {"requests": 0}
# The /fail-first/ requests in arrival order: (webhook-id, time, status). One event loop, so a total order.
attempts: list[tuple[str, float, int]] = []
failed_once: set[str] = set()


def app_for(delay: float) -> web.Application:
    async def receive(request: web.Request) -> web.Response:
        await request.read()
        if delay:
            await asyncio.sleep(delay)
        counts["requests"] += 1
        webhook_id = request.headers.get("webhook-id", "")
        if request.path.startswith("/fail-first/"):
            first = webhook_id not in failed_once
            failed_once.add(webhook_id)
            attempts.append((webhook_id, time.time(), 500 if first else 204))
            if first:
                return web.Response(status=500)
        received.setdefault(webhook_id, time.time())
        return web.Response(status=204)

    async def stats(request: web.Request) -> web.Response:
        since = float(request.query.get("since", "0"))
        return web.json_response(
            {
                "requests": counts["requests"],
                "unique": len(received),
                "times": {k: v for k, v in received.items() if v >= since} if request.query.get("times") else {},
                "attempts": attempts if request.query.get("attempts") else [],
            }
        )

    async def reset(request: web.Request) -> web.Response:
        received.clear()
        attempts.clear()
        failed_once.clear()
        counts["requests"] = 0
        return web.json_response({"ok": True})

    app = web.Application(client_max_size=2**20)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    app.router.add_post("/{tail:.*}", receive)
    return app


async def main(ports: list[int], slow_ports: list[int], slow_delay: float) -> None:
    for port in ports:
        runner = web.AppRunner(app_for(slow_delay if port in slow_ports else 0), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    print("receiver ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--ports", type=int, nargs="+", required=True)
    parser.add_argument("--slow-ports", type=int, nargs="*", default=[])
    parser.add_argument("--slow-delay", type=float, default=0.2)
    args = parser.parse_args()
    asyncio.run(main(args.ports, args.slow_ports, args.slow_delay))
