"""The claim's triage (deliveries.claims.triage): which locked rows are sent, stopped, ended or left, with no I/O."""

from __future__ import annotations

from collections import Counter

from django.test import override_settings

from deliveries.claims import triage


def row(
    delivery: str,
    subscription: str = "sub_a",
    *,
    is_test: bool = False,
    active: bool = True,
    deleted_at=None,
    rate_limit=None,
    attempts: int = 0,
    series_start: int = 0,
) -> tuple:
    return (delivery, subscription, is_test, active, deleted_at, rate_limit, attempts, series_start)


def test_test_sends_go_first_and_the_rest_stay_oldest_first():
    rows = [row("d1"), row("d2"), row("t1", is_test=True), row("d3")]
    decided = triage(rows, busy=Counter(), share=10, limit=10)
    assert [delivery for delivery, _ in decided.picked] == ["t1", "d1", "d2", "d3"]


def test_an_endpoint_gets_no_more_than_its_share_with_what_it_has_in_flight():
    rows = [row(f"a{n}") for n in range(5)] + [row("b1", "sub_b")]
    decided = triage(rows, busy=Counter({"sub_a": 2}), share=3, limit=10)
    assert [delivery for delivery, _ in decided.picked] == ["a0", "b1"]
    assert decided.taken == Counter({"sub_a": 1, "sub_b": 1})


def test_no_more_than_the_limit_is_picked():
    decided = triage([row(f"a{n}") for n in range(5)], busy=Counter(), share=10, limit=2)
    assert len(decided.picked) == 2


def test_paused_or_deleted_endpoints_stop_their_deliveries_but_not_test_sends():
    rows = [
        row("paused", "sub_p", active=False),
        row("paused_test", "sub_p", active=False, is_test=True),
        row("deleted_test", "sub_d", is_test=True, deleted_at="2026-11-30"),
    ]
    decided = triage(rows, busy=Counter(), share=10, limit=10)
    assert decided.stopped == {"sub_p": ["paused"], "sub_d": ["deleted_test"]}
    assert [delivery for delivery, _ in decided.picked] == ["paused_test"]


@override_settings(ASIRI_RETRY_SCHEDULE=(5, 10))
def test_a_series_with_every_attempt_made_and_no_outcome_ends():
    rows = [row("spent", attempts=5, series_start=2), row("fresh", attempts=2, series_start=0)]
    decided = triage(rows, busy=Counter(), share=10, limit=10)
    assert decided.exhausted == ["spent"]
    assert [delivery for delivery, _ in decided.picked] == ["fresh"]


def test_a_rate_limited_endpoint_gets_at_most_one_second_of_its_rate_and_is_marked_filled():
    rows = [row(f"r{n}", "sub_r", rate_limit=2) for n in range(4)]
    decided = triage(rows, busy=Counter(), share=10, limit=10)
    assert [delivery for delivery, _ in decided.picked] == ["r0", "r1"]
    assert decided.filled == {"sub_r"} and decided.rate_limits == {"sub_r": 2}
