"""The sender's loop and how it hands results back, with the one outbound HTTP function replaced."""

from __future__ import annotations

import asyncio
import sys

import pytest

from deliveries import http


@pytest.fixture
def instant_sends(monkeypatch):
    """post_webhook answers at once with the request's URL as its body: no socket is opened."""

    async def answer(session, url, body, headers):
        return http.HttpResult(200, 0, body=url)

    monkeypatch.setattr(http, "post_webhook", answer)


@pytest.fixture
def sender():
    started = http.Sender()
    yield started
    started.close()


def test_sends_that_end_in_one_turn_of_the_loop_are_settled_together_each_with_its_own_result(instant_sends, sender):
    settled_batches = []
    settle_ended = sender._settle_ended

    def counting() -> None:
        settled_batches.append(len(sender._ended))
        settle_ended()

    sender._settle_ended = counting
    futures = sender.submit_many([(f"http://example.test/{n}", b"{}", {}) for n in range(20)])
    results = [future.result(timeout=10) for future in futures]
    assert [result.body for result in results] == [f"http://example.test/{n}" for n in range(20)]
    # One wake-up of whoever waits for them, not twenty.
    assert settled_batches == [20]


def test_a_send_cancelled_before_it_is_settled_stays_cancelled(instant_sends, sender):
    gate = asyncio.run_coroutine_threadsafe(asyncio.sleep(0), sender.loop)
    gate.result(timeout=10)
    hold = asyncio.Event()

    async def held(session, url, body, headers):
        await hold.wait()
        return http.HttpResult(200, 0)

    http.post_webhook, original = held, http.post_webhook
    try:
        first, second = sender.submit_many([("http://example.test/a", b"{}", {}), ("http://example.test/b", b"{}", {})])
        assert first.cancel()
        sender.loop.call_soon_threadsafe(hold.set)
        assert second.result(timeout=10).ok
    finally:
        http.post_webhook = original
    assert first.cancelled()


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop does not run on Windows")
def test_the_sender_runs_on_uvloop_where_it_is_installed(sender):
    import uvloop

    assert isinstance(sender.loop, uvloop.Loop)
