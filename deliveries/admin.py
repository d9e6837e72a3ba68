"""Support staff's view of deliveries: find one, see why it failed, send it again."""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST

from core.admin import ModelAdmin
from core.clock import database_now
from core.paginators import BoundedCountPaginator
from deliveries.console import CreatedFilter, WaitingFilter, attempts, code, redelivery_plans, short_id
from deliveries.models import Attempt, Delivery, DeliveryStatus, Event, SkipReason
from deliveries.services import DeliveryConflict, delivery_redeliver, delivery_redeliver_many

# The bulk redeliver takes at most this many; more selected are counted (up to the bound) and named.
REDELIVER_CAP = 500
LEFT_OUT_COUNT_BOUND = 10_000

STATUS_COLOURS = {
    DeliveryStatus.SUCCEEDED: "#2e7d32",
    DeliveryStatus.FAILED: "#c62828",
    DeliveryStatus.RETRYING: "#ef6c00",
    DeliveryStatus.PENDING: "#546e7a",
}


SKIP_EXPLAINED = {
    SkipReason.PAUSED: "paused (the tenant set it inactive)",
    SkipReason.DISABLED: "disabled (by the service)",
    SkipReason.FILTERED: "filtered (its payload filter refused the event)",
    SkipReason.SUBJECT: "the subject (an operational event is never sent to the subscription it is about)",
}


def badge(text: str, colour: str):
    return format_html(
        '<span style="background:{};color:#fff;padding:2px 8px;border-radius:10px;font-size:11px">{}</span>',
        colour,
        text,
    )


class ResponseClassFilter(admin.SimpleListFilter):
    title = "last response"
    parameter_name = "response"

    def lookups(self, request, model_admin):
        return [("2xx", "2xx"), ("3xx", "3xx"), ("4xx", "4xx"), ("5xx", "5xx"), ("network", "network error")]

    def queryset(self, request, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value == "network":
            return queryset.filter(response_status_code__isnull=True, attempt_count__gt=0)
        if value in {"2xx", "3xx", "4xx", "5xx"}:
            low = int(value[0]) * 100
            return queryset.filter(response_status_code__gte=low, response_status_code__lt=low + 100)
        return queryset


class EventTypeFilter(admin.SimpleListFilter):
    """A text box rather than a list: listing distinct types would scan every delivery."""

    title = "event type"
    parameter_name = "event_type"
    template = "admin/input_filter.html"

    def lookups(self, request, model_admin):
        return [("", "")]

    def queryset(self, request, queryset: QuerySet) -> QuerySet:
        value = (self.value() or "").strip()
        if not value:
            return queryset
        if value.endswith(".*"):
            return queryset.filter(event_type__startswith=value[:-1])
        return queryset.filter(event_type=value)


class AttemptInline(admin.TabularInline):
    model = Attempt
    extra = 0
    can_delete = False
    fields = (
        "number",
        "started_at",
        "duration_ms",
        "response_status_code",
        "error",
        "response_header_lines",
        "response_excerpt",
    )
    readonly_fields = fields

    @admin.display(description="response headers")
    def response_header_lines(self, attempt: Attempt):
        if not attempt.response_headers:
            return "-"
        return format_html(
            "<pre style='white-space:pre-wrap;max-width:40em'>{}</pre>",
            "\n".join(f"{name}: {value}" for name, value in attempt.response_headers.items()),
        )

    @admin.display(description="response body (excerpt)")
    def response_excerpt(self, attempt: Attempt):
        return format_html("<pre style='white-space:pre-wrap;max-width:60em'>{}</pre>", attempt.response_body[:2000])

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(ModelAdmin):
    list_display = (
        "delivery_id",
        "status_badge",
        "event_type",
        "tenant",
        "subscription_short_id",
        attempts,
        code,
        "created_at",
    )
    list_select_related = ("tenant",)
    list_filter = ("status", WaitingFilter, CreatedFilter, ResponseClassFilter, EventTypeFilter, "tenant")
    search_fields = ("=id", "=event__id", "=subscription__id")
    search_help_text = "A delivery id (the receiver's webhook-id), an event id or a subscription id."
    # No date_hierarchy: its year links cost a DISTINCT over the whole table on every list page.
    show_full_result_count = False
    paginator = BoundedCountPaginator
    list_per_page = 50
    ordering = ("-created_at",)
    inlines = [AttemptInline]
    actions = ["redeliver"]
    fields = (
        "id",
        "status_badge",
        "failure_reason",
        "tenant",
        "subscription_link",
        "event_type",
        "event_id",
        "test_send",
        "attempt_count",
        "response_status_code",
        "created_at",
        "last_attempt_at",
        "next_attempt_at",
        "ordering_key",
        "waiting_on",
        "payload",
    )
    readonly_fields = fields

    def get_search_results(self, request, queryset, search_term):
        # Ids are exact: one indexed lookup per column instead of Django's OR across joins.
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(Q(id=term) | Q(event_id=term) | Q(subscription_id=term)), False

    change_form_template = "admin/deliveries/delivery/change_form.html"

    @admin.display(description="id", ordering="id")
    def delivery_id(self, delivery: Delivery):
        return short_id(delivery.id)

    @admin.display(description="subscription")
    def subscription_short_id(self, delivery: Delivery):
        return short_id(delivery.subscription_id)

    @admin.display(description="test send")
    def test_send(self, delivery: Delivery) -> str:
        # Text, not the boolean icons: a red ✗ on every ordinary delivery reads as an error.
        return "yes (webhook.test)" if delivery.is_test else "no"

    @admin.display(description="status", ordering="status")
    def status_badge(self, delivery: Delivery):
        return badge(delivery.get_status_display(), STATUS_COLOURS[delivery.status])

    @admin.display(description="subscription")
    def subscription_link(self, delivery: Delivery):
        # Admin URLs escape "_" and what follows it (admin's quote()): never build them by hand.
        link = reverse("admin:webhooks_subscription_change", args=[quote(delivery.subscription_id)])
        return format_html('<a href="{}">{}</a> → {}', link, delivery.subscription_id, delivery.subscription.url)

    @admin.display(description="waiting on")
    def waiting_on(self, delivery: Delivery):
        """For an ordered delivery in flight, the unfinished one before it in its key: why it is not sent yet."""
        if delivery.ordering_key is None or delivery.is_final:
            return "-"
        ahead = Delivery.objects.filter(pk=delivery.pk).with_waiting_on().values_list("waiting_on", flat=True)[0]
        if ahead is None:
            return "nothing: it is the first of its ordering key"
        link = reverse("admin:deliveries_delivery_change", args=[quote(ahead)])
        return format_html('<a href="{}">{}</a>, which must succeed or fail first', link, ahead)

    @admin.display(description="event payload")
    def payload(self, delivery: Delivery):
        return format_html("<pre>{}</pre>", json.dumps(delivery.event.payload(), indent=2, ensure_ascii=False))

    @admin.action(description="Redeliver the selected deliveries", permissions=["redeliver"])
    def redeliver(self, request: HttpRequest, queryset: QuerySet):
        deliveries = list(queryset.select_related("subscription")[:REDELIVER_CAP])
        if request.POST.get("confirmed") != "yes":
            left_out = 0
            if len(deliveries) == REDELIVER_CAP:
                # Bounded like the list's own count: "select all" may cover millions of rows.
                left_out = queryset.values("pk")[REDELIVER_CAP : REDELIVER_CAP + LEFT_OUT_COUNT_BOUND].count()
            plans = redelivery_plans(deliveries, database_now())
            deliveries = [plan["delivery"] for plan in plans if plan["starts"]]
            endpoints = sorted({d.subscription.url for d in deliveries})
            return TemplateResponse(
                request,
                "admin/deliveries/delivery/redeliver_confirmation.html",
                {
                    **self.admin_site.each_context(request),
                    "title": "Redeliver these deliveries?",
                    "deliveries": deliveries,
                    "endpoints": endpoints,
                    "cap": REDELIVER_CAP,
                    "left_out": left_out,
                    "left_out_bounded": left_out == LEFT_OUT_COUNT_BOUND,
                    "plans": plans,
                    "opts": self.model._meta,
                    "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
                },
            )
        started, refused = delivery_redeliver_many(deliveries)
        redelivery_messages(self, request, started, refused)
        # Echoed by the confirmation page: only ASCII digits (str.isdigit also takes "²", which int() refuses).
        posted = request.POST.get("left_out", "")
        left_out = int(posted) if posted.isascii() and posted.isdigit() else 0
        if left_out:
            more = f"{left_out:,} or more" if left_out >= LEFT_OUT_COUNT_BOUND else f"{left_out:,}"
            self.message_user(
                request,
                f"Also, {more} of the selected deliveries were not redelivered: at most {REDELIVER_CAP} go at a time. "
                "Select them again (the failed ones are still failed) to send the next ones.",
                messages.WARNING,
            )
        return None

    def get_urls(self):
        view = self.admin_site.admin_view(require_POST(self.redeliver_one_view))
        return [path("<path:object_id>/redeliver/", view, name="deliveries_delivery_redeliver"), *super().get_urls()]

    def redeliver_one_view(self, request: HttpRequest, object_id: str):
        """The Redeliver button on a delivery's page: the same service as the list action and the API."""
        if not self.has_redeliver_permission(request):
            raise PermissionDenied
        delivery = get_object_or_404(Delivery.objects.select_related("subscription"), pk=unquote(object_id))
        try:
            delivery_redeliver(delivery=delivery)
        except DeliveryConflict as exc:
            redelivery_messages(self, request, [], [(delivery, str(exc))])
        else:
            redelivery_messages(self, request, [delivery], [])
        return HttpResponseRedirect(reverse("admin:deliveries_delivery_change", args=[quote(delivery.pk)]))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = extra_context or {}
        delivery = Delivery.objects.select_related("subscription").filter(pk=unquote(object_id)).first()
        if delivery is not None and self.has_redeliver_permission(request):
            extra_context["redelivery"] = redelivery_plans([delivery], database_now())[0]
        return super().change_view(request, object_id, form_url, extra_context)

    def has_redeliver_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("deliveries.redeliver_delivery")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


def redelivery_messages(model_admin, request, started, refused) -> None:
    """What a redelivery did, each message opening with a word: the admin capitalises the first
    letter of every message, which would change an id that began it."""
    if len(started) == 1:
        model_admin.message_user(request, f"Redelivering 1 delivery: {started[0].id}.", messages.SUCCESS)
    elif started:
        model_admin.message_user(request, f"Redelivering {len(started)} deliveries.", messages.SUCCESS)
    for delivery, reason in refused:
        model_admin.message_user(request, f"Not redelivered, {delivery.id}: {reason}", messages.WARNING)


@admin.register(Event)
class EventAdmin(ModelAdmin):
    list_display = ("id", "type", "tenant", "created_at")
    list_select_related = ("tenant",)
    search_fields = ("=id",)
    show_full_result_count = False
    paginator = BoundedCountPaginator
    fieldsets = [
        (None, {"fields": ("id", "type", "tenant", "created_at", "idempotency_key", "payload")}),
        (
            "Where it went",
            {
                "fields": ("delivered_to", "skipped"),
                "description": (
                    "Every live subscription whose patterns matched at publish time is in exactly one of these."
                ),
            },
        ),
    ]
    readonly_fields = ("id", "type", "tenant", "created_at", "idempotency_key", "payload", "delivered_to", "skipped")

    @admin.display(description="payload")
    def payload(self, event: Event):
        return format_html("<pre>{}</pre>", json.dumps(event.data, indent=2, ensure_ascii=False))

    @admin.display(description="deliveries")
    def delivered_to(self, event: Event):
        rows = event.deliveries.order_by("created_at", "id").values_list("id", "status", "subscription_id")
        lines = format_html_join(
            "",
            '<li><a href="{}">{}</a> {} to <a href="{}">{}</a></li>',
            (
                (
                    reverse("admin:deliveries_delivery_change", args=[quote(delivery_id)]),
                    delivery_id,
                    badge(status, STATUS_COLOURS[status]),
                    reverse("admin:webhooks_subscription_change", args=[quote(subscription_id)]),
                    subscription_id,
                )
                for delivery_id, status, subscription_id in rows
            ),
        )
        return format_html("<ul>{}</ul>", lines) if lines else "none"

    @admin.display(description="skipped")
    def skipped(self, event: Event):
        rows = event.skips.order_by("subscription_id").values_list("subscription_id", "reason")
        lines = format_html_join(
            "",
            '<li><a href="{}">{}</a>: {}</li>',
            (
                (
                    reverse("admin:webhooks_subscription_change", args=[quote(subscription_id)]),
                    subscription_id,
                    SKIP_EXPLAINED[reason],
                )
                for subscription_id, reason in rows
            ),
        )
        return format_html("<ul>{}</ul>", lines) if lines else "none"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
