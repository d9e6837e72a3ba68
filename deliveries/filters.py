import re
from datetime import UTC, datetime, timedelta

import django_filters
from django import forms

from deliveries.models import Delivery, DeliveryStatus, Event

# RFC 3339 (section 5.6), exactly what the OpenAPI `date-time` format admits: no other ISO 8601 forms.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"  # ASCII digits only: \d takes any script's
    r"(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-5][0-9])"
)
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)
_GREGORIAN_CYCLE = timedelta(days=146_097)  # 400 years: year 0 has year 400's calendar


def parse_rfc3339(value: str) -> datetime | None:
    """The UTC instant an RFC 3339 date-time names, or None if it is not one.

    The regex admits the grammar and `fromisoformat` the calendar. Two values RFC 3339 allows and
    datetime cannot hold are clamped: a leap second (23:59:60 UTC only) reads as :59.999999, and an
    instant outside years 1 to 9999 in UTC (year 0000, or an offset across the edge) becomes the
    earliest or latest one datetime has, which as a bound selects the same rows.
    """
    match = _RFC3339.fullmatch(value)
    if match is None:
        return None
    text, leap_second = value.upper(), match[3] == "60"
    if leap_second:
        text = text[:17] + "59" + text[19:]
    year_zero = text.startswith("0000")
    if year_zero:
        text = "0400" + text[4:]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if leap_second:
        offset_minutes = moment.utcoffset() // timedelta(minutes=1)
        if (moment.hour * 60 + moment.minute - offset_minutes) % 1440 != 23 * 60 + 59:
            return None  # a leap second is only ever 23:59:60 UTC
        moment = moment.replace(microsecond=999_999)
    try:
        moment = moment.astimezone(UTC)
        return moment - _GREGORIAN_CYCLE if year_zero else moment
    except OverflowError:
        return _EARLIEST if year_zero or moment.year == 1 else _LATEST


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
    status = django_filters.ChoiceFilter(
        choices=DeliveryStatus.choices,
        error_messages={"invalid_choice": f"Must be one of {', '.join(DeliveryStatus.values)}."},
    )
    # Not stripped: the document's 200-character limit is on the value as sent.
    event_type = django_filters.CharFilter(max_length=200, strip=False)
    created_after = Rfc3339DateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = Rfc3339DateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Delivery
        fields = ["status", "event_type", "created_after", "created_before"]


class EventFilter(django_filters.FilterSet):
    type = django_filters.CharFilter(max_length=200, strip=False)  # exactly, like event_type above
    created_after = Rfc3339DateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = Rfc3339DateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Event
        fields = ["type", "created_after", "created_before"]
