from datetime import UTC

import django_filters
from django import forms
from django_filters.fields import IsoDateTimeField

from deliveries.models import Delivery, DeliveryStatus


class StorableIsoDateTimeField(IsoDateTimeField):
    """An ISO 8601 date-time that can also be converted to UTC (0001-01-01T00:00+01:00 cannot)."""

    def clean(self, value):
        moment = super().clean(value)
        if moment is not None:
            try:
                moment.astimezone(UTC)
            except OverflowError:
                raise forms.ValidationError("Out of range.") from None
        return moment


class StorableIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = StorableIsoDateTimeField


class DeliveryFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=DeliveryStatus.choices)
    event_type = django_filters.CharFilter(max_length=200)
    created_after = StorableIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = StorableIsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Delivery
        fields = ["status", "event_type", "created_after", "created_before"]
