"""The sender's loop and how it hands results back, with the one outbound HTTP function replaced."""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest

from deliveries import http
from tests.support.processes import wait_until


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


def test_cancelling_a_send_in_flight_cancels_its_request(sender, monkeypatch):
    entered, hold = threading.Event(), asyncio.Event()
    outcomes = []

    async def held(session, url, body, headers):
        entered.set()
        try:
            await hold.wait()
        except asyncio.CancelledError:
            outcomes.append(("cancelled", url))
            raise
        outcomes.append(("answered", url))
        return http.HttpResult(200, 0)

    monkeypatch.setattr(http, "post_webhook", held)
    first, second = sender.submit_many([("http://example.test/a", b"{}", {}), ("http://example.test/b", b"{}", {})])
    assert entered.wait(timeout=10)
    assert first.cancel()
    assert wait_until(lambda: outcomes == [("cancelled", "http://example.test/a")], timeout=10)
    sender.loop.call_soon_threadsafe(hold.set)
    assert second.result(timeout=10).ok
    assert first.cancelled() and outcomes[1:] == [("answered", "http://example.test/b")]


def test_a_send_cancelled_after_it_ended_but_before_it_was_settled_stays_cancelled(instant_sends, sender):
    settle_ended = sender._settle_ended
    futures, submitted = [], threading.Event()

    def cancelling_first() -> None:
        assert submitted.wait(timeout=10)  # on the loop's thread: submit_many may not have returned yet
        futures[0].cancel()
        settle_ended()

    sender._settle_ended = cancelling_first
    futures += sender.submit_many([("http://example.test/a", b"{}", {}), ("http://example.test/b", b"{}", {})])
    submitted.set()
    assert futures[1].result(timeout=10).body == "http://example.test/b"
    assert futures[0].cancelled()


def test_one_future_that_cannot_be_settled_leaves_the_others_of_its_turn_settled(instant_sends, sender):
    settle_ended = sender._settle_ended
    futures, submitted = [], threading.Event()

    def first_already_answered() -> None:
        assert submitted.wait(timeout=10)  # on the loop's thread: submit_many may not have returned yet
        futures[0].set_result("set by someone else")  # settling it again raises
        settle_ended()

    sender._settle_ended = first_already_answered
    futures += sender.submit_many([(f"http://example.test/{n}", b"{}", {}) for n in range(3)])
    submitted.set()
    assert [future.result(timeout=10) for future in futures[1:]] == [
        http.HttpResult(200, 0, body=f"http://example.test/{n}") for n in (1, 2)
    ]


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop does not run on Windows")
def test_the_sender_runs_on_uvloop_where_it_is_installed(sender):
    import uvloop

    assert isinstance(sender.loop, uvloop.Loop)
