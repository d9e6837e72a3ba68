"""The pump's hand-over of ended sends (engine.Ended): each future once, none missed, across threads."""

from __future__ import annotations

import concurrent.futures
import threading

from deliveries.engine import Ended


def test_each_ended_future_is_taken_once_in_the_order_they_ended():
    ended = Ended()
    futures = [concurrent.futures.Future() for _ in range(4)]
    for future in futures:
        ended.watch(future)
    futures[2].set_result("c")
    futures[0].set_result("a")
    assert ended.take(timeout=1) == [futures[2], futures[0]]
    futures[3].cancel()
    assert ended.take(timeout=1) == [futures[3]]
    assert ended.take(timeout=0.01) == []


def test_a_future_already_ended_when_watched_is_taken():
    ended = Ended()
    future = concurrent.futures.Future()
    future.set_result(1)
    ended.watch(future)
    assert ended.take(timeout=1) == [future]


def test_futures_ended_by_another_thread_while_taking_are_all_taken():
    ended = Ended()
    futures = [concurrent.futures.Future() for _ in range(2000)]
    for future in futures:
        ended.watch(future)
    settler = threading.Thread(target=lambda: [future.set_result(None) for future in futures])
    settler.start()
    taken, waited_out = [], 0
    while len(taken) < len(futures) and waited_out < 3:
        batch = ended.take(timeout=1)
        # A take may come back empty when a future ended between its clear and its read (the next
        # one then gets it), but never twice running while futures are left.
        waited_out = 0 if batch else waited_out + 1
        taken += batch
    settler.join()
    assert taken == futures
