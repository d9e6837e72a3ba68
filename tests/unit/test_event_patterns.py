"""Which event types a subscription's patterns choose: `*` leaves ASIRI's operational events out."""

from __future__ import annotations

import pytest

from webhooks.events import is_reserved, pattern_matches
from webhooks.models import Subscription


@pytest.mark.parametrize(
    ("pattern", "event_type", "matches"),
    [
        ("*", "invoice.paid", True),
        ("*", "webhook.test", True),
        ("*", "asiri", True),  # only the namespace below `asiri.` is ASIRI's
        ("*", "asiri.subscription.failing", False),
        ("*", "asiri.subscription.recovered", False),
        ("asiri.*", "asiri.subscription.failing", True),
        ("asiri.subscription.*", "asiri.subscription.disabled", True),
        ("asiri.subscription.failing", "asiri.subscription.failing", True),
        ("asiri.subscription.failing", "asiri.subscription.recovered", False),
        ("invoice.*", "invoice.paid", True),
        ("invoice.*", "asiri.subscription.failing", False),
    ],
)
def test_it_matches_patterns(pattern, event_type, matches):
    assert pattern_matches(pattern, event_type) is matches
    assert Subscription(events=[pattern]).wants(event_type) is matches


def test_a_subscription_naming_the_namespace_beside_star_gets_both():
    subscription = Subscription(events=["*", "asiri.*"])
    assert subscription.wants("invoice.paid") and subscription.wants("asiri.subscription.failing")


@pytest.mark.parametrize(
    ("event_type", "reserved"),
    [("asiri.x", True), ("webhook.test", True), ("asiri", False), ("webhooks.x", False), ("invoice.paid", False)],
)
def test_it_knows_the_reserved_namespaces(event_type, reserved):
    assert is_reserved(event_type) is reserved
