"""core.compiled: a queryset compiled once, its stand-ins bound at each use."""

from __future__ import annotations

import pytest

from core.compiled import compile_once
from webhooks.models import Subscription


def test_each_stand_in_is_bound_in_its_own_place():
    query = compile_once(
        Subscription.objects.filter(url="stand-in url", rate_limit=424242, active=True),
        url="stand-in url",
        limit=424242,
    )
    params = query.bind(url="https://hooks.example.com/a", limit=5)
    assert "https://hooks.example.com/a" in params and 5 in params
    assert "stand-in url" not in params and 424242 not in params
    assert "stand-in url" in query.params and 424242 in query.params  # binding leaves the compiled query as it was


@pytest.mark.parametrize("times", [0, 2])
def test_a_stand_in_not_there_exactly_once_is_refused(times):
    queryset = Subscription.objects.all()
    for n in range(times):
        queryset = queryset.filter(**{["url", "description"][n]: "stand-in"})
    with pytest.raises(ValueError, match=f"{times} times"):
        compile_once(queryset, url="stand-in")
