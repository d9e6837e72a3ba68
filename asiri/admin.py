"""The Subscription admin: it composes webhooks and deliveries, so it lives with the wiring."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import admin, messages
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html

from core.paginators import BoundedCountPaginator
from deliveries.admin import STATUS_COLOURS, badge
from deliveries.console import exact_time, short_id
from deliveries.models import Delivery
from deliveries.services import delivery_send_test
from webhooks.models import Subscription
from webhooks.services import subscription_rotate_secret, subscription_update


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [
            ("active", "active"),
            ("paused", "paused by the tenant"),
            ("disabled", "disabled by the system"),
            ("deleted", "deleted"),
        ]

    def queryset(self, request, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value == "deleted":
            return queryset.filter(deleted_at__isnull=False)
        queryset = queryset.filter(deleted_at__isnull=True)  # deleted ones only on request
        if value == "active":
            return queryset.filter(active=True)
        if value == "paused":
            return queryset.filter(active=False, disabled_reason__isnull=True)
        if value == "disabled":
            return queryset.filter(active=False, disabled_reason__isnull=False)
        return queryset


class FailingFilter(admin.SimpleListFilter):
    title = "recent failures"
    parameter_name = "failing"

    def lookups(self, request, model_admin):
        return [("yes", "failing now"), ("day", "failing for over a day")]

    def queryset(self, request, queryset: QuerySet) -> QuerySet:
        if self.value() == "yes":
            return queryset.filter(failing_since__isnull=False)
        if self.value() == "day":
            return queryset.filter(failing_since__lte=timezone.now() - timedelta(days=1))
        return queryset


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = ("sub_id", "tenant", "url", "events", "state", "last_outcome", "failure_streak", "created_at")
    list_select_related = ("tenant",)
    list_filter = (StateFilter, FailingFilter, "tenant")
    search_fields = ("=id", "url", "=tenant__slug")
    search_help_text = "A subscription id, part of a URL, or a tenant's slug."
    show_full_result_count = False
    paginator = BoundedCountPaginator
    ordering = ("-created_at",)
    actions = ["send_test", "pause", "reenable", "rotate_secret"]
    # The signing secret is deliberately absent: it is shown once, when a superuser rotates it.
    fields = (
        "id",
        "tenant",
        "url",
        "events",
        "description",
        "metadata",
        "rate_limit",
        "state",
        "failure_streak",
        "deliveries",
        "created_at",
        "updated_at",
        "deleted_at",
    )
    readonly_fields = fields

    def get_queryset(self, request):
        latest = Delivery.objects.filter(subscription=OuterRef("pk")).order_by("-created_at")
        return super().get_queryset(request).annotate(last_status=Subquery(latest.values("status")[:1]))

    @admin.display(description="id", ordering="id")
    def sub_id(self, subscription: Subscription):
        return short_id(subscription.id)

    @admin.display(description="state")
    def state(self, subscription: Subscription):
        if subscription.is_deleted:
            return badge("deleted", "#424242")
        if subscription.active:
            return badge("active", "#2e7d32")
        if subscription.disabled_reason:
            return format_html("{} {}", badge("disabled by the system", "#c62828"), subscription.disabled_reason)
        return badge("paused by the tenant", "#546e7a")

    @admin.display(description="last delivery")
    def last_outcome(self, subscription: Subscription):
        status = getattr(subscription, "last_status", None)
        return badge(status, STATUS_COLOURS[status]) if status else "-"

    @admin.display(description="failing for")
    def failure_streak(self, subscription: Subscription):
        if subscription.failing_since is None:
            return "-"
        hours = (timezone.now() - subscription.failing_since).total_seconds() / 3600
        return format_html('<span title="since {}">{} h</span>', exact_time(subscription.failing_since), f"{hours:.1f}")

    @admin.display(description="deliveries")
    def deliveries(self, subscription: Subscription):
        return format_html(
            '<a href="../../../deliveries/delivery/?q={}">Its deliveries</a> · '
            '<a href="../../../deliveries/delivery/?q={}&status__exact=failed">failed ones</a>',
            subscription.id,
            subscription.id,
        )

    @admin.action(description="Send a test event", permissions=["operate"])
    def send_test(self, request: HttpRequest, queryset: QuerySet) -> None:
        sent = [delivery_send_test(subscription=s).id for s in queryset.filter(deleted_at__isnull=True)]
        self.message_user(request, f"Sent {len(sent)} test event(s): {', '.join(sent)}.", messages.SUCCESS)

    @admin.action(description="Pause (stop sending)", permissions=["operate"])
    def pause(self, request: HttpRequest, queryset: QuerySet) -> None:
        for subscription in queryset.filter(deleted_at__isnull=True, active=True):
            subscription_update(subscription=subscription, changes={"active": False})
        self.message_user(request, "Paused. Pending deliveries to them stop within seconds.", messages.SUCCESS)

    @admin.action(description="Re-enable", permissions=["operate"])
    def reenable(self, request: HttpRequest, queryset: QuerySet) -> None:
        for subscription in queryset.filter(deleted_at__isnull=True, active=False):
            subscription_update(subscription=subscription, changes={"active": True})
        self.message_user(request, "Re-enabled.", messages.SUCCESS)

    @admin.action(description="Rotate the signing secret (shows it once)", permissions=["rotate"])
    def rotate_secret(self, request: HttpRequest, queryset: QuerySet) -> None:
        for subscription in queryset.filter(deleted_at__isnull=True):
            secret = subscription_rotate_secret(subscription=subscription)
            self.message_user(
                request,
                f"New secret for {subscription.id}, shown once: {secret} (the old one keeps signing for 24 hours).",
                messages.WARNING,
            )

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("webhooks.operate_subscription")

    def has_rotate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("webhooks.rotate_secret_subscription")

    def has_add_permission(self, request) -> bool:
        return False  # tenants create subscriptions through the API

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
