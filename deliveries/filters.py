import re
from datetime import UTC, datetime, timedelta

import django_filters
from django import forms

from deliveries.models import Delivery, DeliveryStatus

# RFC 3339 (section 5.6), exactly what the OpenAPI `date-time` format admits: no other ISO 8601 forms.
_RFC3339 = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"  # ASCII digits only: \d takes any script's
    r"[Tt](?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})"
    r"(?:\.(?P<fraction>[0-9]+))?(?:[Zz]|(?P<sign>[+-])(?P<offset_hour>[0-9]{2}):(?P<offset_minute>[0-9]{2}))"
)
_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)


def _days_before_year(year: int) -> int:
    """Days from 0001-01-01 to January 1st of `year` (negative for year 0), proleptic Gregorian."""
    y = year - 1
    return y * 365 + y // 4 - y // 100 + y // 400


def parse_rfc3339(value: str) -> datetime | None:
    """The UTC instant an RFC 3339 date-time names, or None if it is not one.

    Every value the format admits is read, including year 0000 and leap seconds, which Python's
    datetime cannot hold: an instant before year 1 or after 9999 (once in UTC) becomes the earliest
    or latest one it can, which as a bound selects the same rows; a leap second is read as :59.999999.
    """
    match = _RFC3339.fullmatch(value)
    if match is None:
        return None
    year, month, day = int(match["year"]), int(match["month"]), int(match["day"])
    hour, minute, second = int(match["hour"]), int(match["minute"]), int(match["second"])
    leap_year = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if not 1 <= month <= 12 or not 1 <= day <= _DAYS_IN_MONTH[month - 1] + (month == 2 and leap_year):
        return None
    offset = 0
    if match["sign"]:
        offset_hour, offset_minute = int(match["offset_hour"]), int(match["offset_minute"])
        if offset_hour > 23 or offset_minute > 59:
            return None
        offset = (offset_hour * 60 + offset_minute) * (1 if match["sign"] == "+" else -1)
    if hour > 23 or minute > 59 or second > 60:
        return None
    if second == 60:
        if (hour * 60 + minute - offset) % 1440 != 23 * 60 + 59:
            return None  # a leap second is only ever 23:59:60 UTC
        second, microsecond = 59, 999_999
    else:
        microsecond = int((match["fraction"] or "0")[:6].ljust(6, "0"))
    days = _days_before_year(year) + sum(_DAYS_IN_MONTH[: month - 1]) + (month > 2 and leap_year) + day - 1
    seconds = days * 86_400 + hour * 3600 + (minute - offset) * 60 + second
    if seconds < 0:
        return _EARLIEST
    try:
        return _EARLIEST + timedelta(seconds=seconds, microseconds=microsecond)
    except OverflowError:
        return _LATEST


class Rfc3339DateTimeField(forms.Field):
    def to_python(self, value) -> datetime | None:
        if value in self.empty_values:
            return None
        moment = parse_rfc3339(value)
        if moment is None:
            raise forms.ValidationError("Must be an RFC 3339 date-time, such as 2026-01-31T09:30:00Z.")
        return moment


class Rfc3339DateTimeFilter(django_filters.Filter):
    field_class = Rfc3339DateTimeField


class DeliveryFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=DeliveryStatus.choices)
    # Not stripped: the document's 200-character limit is on the value as sent.
    event_type = django_filters.CharFilter(max_length=200, strip=False)
    created_after = Rfc3339DateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = Rfc3339DateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Delivery
        fields = ["status", "event_type", "created_after", "created_before"]
