"""How long outcomes wait for a database that cannot be reached (deliveries.outcomes._held_until), with no I/O."""

from __future__ import annotations

from django.test import override_settings

from deliveries import http
from deliveries.claims import Claimed
from deliveries.models import Attempt, Delivery
from deliveries.outcomes import RECORD_WAIT, _held_until

OK = http.HttpResult(200, 12)


def claimed_at(monotonic: float) -> tuple[Claimed, http.HttpResult]:
    return Claimed(Delivery(), Attempt(), claimed_at=None, started=monotonic), OK


@override_settings(ASIRI_DELIVERY_LEASE=120)
def test_outcomes_wait_while_the_last_of_their_leases_runs():
    # A failover of a minute or two: nothing is taken over by another worker before the leases end.
    outcomes = [claimed_at(1000.0), claimed_at(1012.5), claimed_at(1004.0)]
    assert _held_until(outcomes, started=1015.0) == 1012.5 + 120


@override_settings(ASIRI_DELIVERY_LEASE=10)
def test_with_short_leases_they_still_wait_the_minimum():
    assert _held_until([claimed_at(1000.0)], started=1001.0) == 1001.0 + RECORD_WAIT


@override_settings(ASIRI_DELIVERY_LEASE=120)
def test_a_batch_long_in_flight_waits_at_least_the_minimum_from_the_failure():
    assert _held_until([claimed_at(1000.0)], started=1100.0) == 1100.0 + RECORD_WAIT
