"""The RFC 3339 reader behind the log's time filters: every value the format admits, and the instant it names."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from deliveries.filters import parse_rfc3339

EARLIEST, LATEST = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "instant"),
    [
        ("2026-01-31T09:30:00Z", datetime(2026, 1, 31, 9, 30, tzinfo=UTC)),
        ("2026-01-31t09:30:00.123456789z", datetime(2026, 1, 31, 9, 30, 0, 123456, tzinfo=UTC)),
        ("2026-01-31T09:30:00+05:30", datetime(2026, 1, 31, 4, 0, tzinfo=UTC)),
        ("2024-02-29T00:00:00-00:00", datetime(2024, 2, 29, tzinfo=UTC)),
        ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),  # a leap second
        ("2016-12-31T22:59:60-01:00", datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        ("0000-06-01T00:00:00Z", EARLIEST),  # year 0: before anything datetime holds
        ("0000-02-29T00:00:00Z", EARLIEST),  # and a leap year, as RFC 3339's calendar says
        ("0001-01-01T00:00:00+01:00", EARLIEST),
        ("9999-12-31T23:59:59-05:00", LATEST),
    ],
)
def test_it_reads_the_instant_a_date_time_names(value, instant):
    assert parse_rfc3339(value) == instant


@pytest.mark.parametrize(
    "value",
    [
        "2026-01-31",
        "2026-01-31 09:30:00Z",
        "2026-01-31T09:30:00",
        "20260131T093000Z",
        "2026-02-29T00:00:00Z",
        "0001-02-29T00:00:00Z",
        "2026-01-31T12:59:60Z",  # a leap second is only ever 23:59:60 UTC
        "2026-01-31T24:00:00Z",
        "2026-01-31T09:60:00Z",
        "2026-01-31T09:30:00+24:00",
        "2026-01-31T09:30:00+00:60",
        "2026-13-01T00:00:00Z",
        "2026-01-00T00:00:00Z",
        "\uff12\uff10\uff12\uff16-01-31T09:30:00Z",
    ],
)
def test_it_refuses_what_rfc_3339_does_not_admit(value):
    assert parse_rfc3339(value) is None
