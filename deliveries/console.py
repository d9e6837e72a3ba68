"""Pieces of the support console the delivery and subscription admins share: short ids, exact
times, and what a redelivery would do, said before anything is done."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.contrib import admin
from django.db.models import QuerySet
from django.utils import formats, timezone
from django.utils.html import format_html

from deliveries.models import Delivery
from deliveries.services import deliveries_in_flight, redelivery_refusal

SHORT_ID_CHARS = 10  # "dlv_" and six more: enough to tell rows apart at a glance


def short_id(value: str):
    """An id cut short for a list column, the whole of it on hover and in a copy button."""
    shown = value if len(value) <= SHORT_ID_CHARS + 1 else f"{value[:SHORT_ID_CHARS]}…"
    return format_html(
        '<span class="short-id" title="{}">{}</span>'
        '<button type="button" class="copy-id" data-copy="{}" title="Copy {}" aria-label="Copy {}">copy</button>',
        value,
        shown,
        value,
        value,
        value,
    )


def exact_time(value: datetime | None) -> str:
    """A moment with seconds and its timezone, as every page of the console shows it."""
    if value is None:
        return "-"
    return formats.date_format(timezone.localtime(value), "DATETIME_FORMAT")


def redelivery_plans(deliveries: list[Delivery], now: datetime) -> list[dict]:
    """For each delivery, whether a redelivery would start and what it would do, or why not."""
    in_flight = deliveries_in_flight(deliveries, now)
    plans = []
    for delivery in deliveries:
        refusal = redelivery_refusal(delivery, in_flight=delivery.pk in in_flight)
        number = delivery.attempt_count + 1
        if refusal:
            what = f"Refused: {refusal}"
        elif delivery.is_final:
            what = f"A new series of attempts starts now with attempt {number}."
        elif delivery.next_attempt_at is not None and delivery.next_attempt_at > now:
            what = (
                f"Attempt {number} is made now instead of at {exact_time(delivery.next_attempt_at)}, "
                "in the same series; that scheduled attempt no longer happens."
            )
        else:
            what = f"Attempt {number} is made now (it was already due)."
        plans.append({"delivery": delivery, "starts": refusal is None, "what": what})
    return plans


class CreatedFilter(admin.SimpleListFilter):
    """The dashboard's periods, so its counts open as lists (delivery_newest serves it)."""

    title = "created"
    parameter_name = "created"
    PERIODS = {"24h": timedelta(hours=24), "7d": timedelta(days=7)}

    def lookups(self, request, model_admin):
        return [("24h", "in the last 24 hours"), ("7d", "in the last 7 days")]

    def queryset(self, request, queryset: QuerySet) -> QuerySet:
        period = self.PERIODS.get(self.value() or "")
        return queryset.filter(created_at__gte=timezone.now() - period) if period else queryset


class WaitingFilter(admin.SimpleListFilter):
    """Deliveries still on their way: the backlog the dashboard counts (the delivery_due index)."""

    title = "waiting"
    parameter_name = "waiting"

    def lookups(self, request, model_admin):
        return [("yes", "pending or retrying"), ("due", "due now, not yet sent")]

    def queryset(self, request, queryset: QuerySet) -> QuerySet:
        if self.value() == "yes":
            return queryset.in_flight()
        if self.value() == "due":
            return queryset.due(timezone.now())
        return queryset


@admin.display(description="attempts", ordering="attempt_count")
def attempts(delivery: Delivery) -> int:
    return delivery.attempt_count


@admin.display(description="code", ordering="response_status_code")
def code(delivery: Delivery):
    """The last response's status code: a short heading keeps the list within a laptop's width."""
    return delivery.response_status_code if delivery.response_status_code is not None else "-"
