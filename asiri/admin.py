"""The Subscription admin: it composes webhooks and deliveries, so it lives with the wiring."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.contrib.auth.models import Group, User
from django.core.exceptions import PermissionDenied
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from core.admin import ModelAdmin
from core.paginators import BoundedCountPaginator
from deliveries.admin import STATUS_COLOURS, badge
from deliveries.console import exact_time, short_id
from deliveries.models import Delivery, Recovery
from deliveries.recovery import (
    MAX_RECOVERY_DAYS,
    RecoveryConflict,
    RecoveryRangeError,
    recovery_check,
    recovery_preview,
    subscription_recover,
)
from deliveries.services import delivery_send_test
from webhooks.headers import shown
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


class RecoveryInline(admin.TabularInline):
    """A subscription's recoveries, newest first: read-only, started with the Recover… action."""

    model = Recovery
    extra = 0
    can_delete = False
    ordering = ("-created_at",)
    fields = ("id", "status", "since", "until", "redelivered", "recovered_missed", "created_at", "finished_at")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class UtcDateTimeField(forms.DateTimeField):
    """A moment as UTC, so the database never sees the offset it was typed with: Python takes offsets up to
    ±23:59 and PostgreSQL only to ±15:59, and near the ends of the calendar an offset can move it out of range."""

    def to_python(self, value) -> datetime | None:
        moment = super().to_python(value)
        if moment is None:
            return None
        try:
            return moment.astimezone(UTC)
        except OverflowError:
            raise forms.ValidationError("Out of range.", code="overflow") from None


class RecoverForm(forms.Form):
    since = UtcDateTimeField(help_text=f"UTC, e.g. 2026-01-31 09:30; at most {MAX_RECOVERY_DAYS} days ago.")
    until = UtcDateTimeField(required=False, help_text="UTC; empty or later: now.")


@admin.register(Subscription)
class SubscriptionAdmin(ModelAdmin):
    list_display = ("sub_id", "tenant", "url", "events", "state", "last_outcome", "failure_streak", "created_at")
    list_select_related = ("tenant",)
    list_filter = (StateFilter, FailingFilter, "tenant")
    search_fields = ("=id", "url", "=tenant__slug")
    search_help_text = "A subscription id, part of a URL, or a tenant's slug."
    show_full_result_count = False
    paginator = BoundedCountPaginator
    ordering = ("-created_at",)
    actions = ["send_test", "pause", "reenable", "recover", "rotate_secret"]
    inlines = [RecoveryInline]
    # The signing secret is deliberately absent: it is shown once, when a superuser rotates it.
    fields = (
        "id",
        "tenant",
        "url",
        "events",
        "description",
        "metadata",
        "header_lines",
        "payload_filter",
        "rate_limit",
        "state",
        "failure_streak",
        "deliveries",
        "recover_link",
        "created_at",
        "updated_at",
        "deleted_at",
    )
    readonly_fields = fields

    def get_urls(self):
        recover = self.admin_site.admin_view(self.recover_view)
        return [path("<path:object_id>/recover/", recover, name="webhooks_subscription_recover"), *super().get_urls()]

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

    @admin.display(description="headers")
    def header_lines(self, subscription: Subscription):
        # Names always; a write-only value never, whoever is looking: it is likely a credential.
        if not subscription.headers:
            return "-"
        return format_html(
            "<pre style='white-space:pre-wrap;max-width:60em'>{}</pre>",
            "\n".join(f"{name}: {value or '(write-only)'}" for name, value in shown(subscription.headers).items()),
        )

    @admin.display(description="filter")
    def payload_filter(self, subscription: Subscription):
        # "Why didn't my webhook arrive?" is often this: events it refuses are logged as `filtered` skips.
        if subscription.filter is None:
            return "- (every event of its types)"
        return format_html(
            "<pre style='white-space:pre-wrap;max-width:60em'>{}</pre>",
            json.dumps(subscription.filter, indent=2, ensure_ascii=False),
        )

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

    @admin.display(description="recover")
    def recover_link(self, subscription: Subscription):
        link = reverse("admin:webhooks_subscription_recover", args=[quote(subscription.id)])
        return format_html('<a href="{}">Recover a time range…</a> (failed deliveries and missed events)', link)

    @admin.action(
        description="Recover… (one subscription: failed deliveries and missed events)", permissions=["recover"]
    )
    def recover(self, request: HttpRequest, queryset: QuerySet):
        chosen = list(queryset.values_list("pk", "deleted_at")[:2])
        if len(chosen) != 1:
            self.message_user(request, "Recover one subscription at a time.", messages.ERROR)
            return None
        if chosen[0][1] is not None:
            self.message_user(request, "A deleted subscription cannot be recovered.", messages.ERROR)
            return None
        return HttpResponseRedirect(reverse("admin:webhooks_subscription_recover", args=[quote(chosen[0][0])]))

    def recover_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """A time range, then the counts it will touch, and only then the recovery itself."""
        if not self.has_recover_permission(request):
            raise PermissionDenied
        subscription = get_object_or_404(Subscription.objects.live(), pk=unquote(object_id))
        change_page = reverse("admin:webhooks_subscription_change", args=[quote(subscription.id)])
        now = timezone.now()
        form = RecoverForm(request.POST or None, initial={"since": now - timedelta(hours=1), "until": now})
        preview = None
        if request.method == "POST" and form.is_valid():
            since, until = form.cleaned_data["since"], form.cleaned_data["until"]
            try:
                if request.POST.get("confirmed") == "yes":
                    recovery = subscription_recover(subscription=subscription, since=since, until=until)
                    self.message_user(
                        request,
                        f"Recovery {recovery.id} queued: its counts appear below when it is done.",
                        messages.SUCCESS,
                    )
                    return HttpResponseRedirect(change_page)
                until = recovery_check(subscription=subscription, since=since, until=until, now=now)
                preview = {
                    "since": since,
                    "until": until,
                    **recovery_preview(subscription=subscription, since=since, until=until),
                }
            except RecoveryRangeError as exc:
                form.add_error(exc.field, str(exc))
            except RecoveryConflict as exc:
                form.add_error(None, str(exc))
        return TemplateResponse(
            request,
            "admin/webhooks/subscription/recover.html",
            {
                **self.admin_site.each_context(request),
                "title": f"Recover {subscription.id}",
                "subscription": subscription,
                "form": form,
                "preview": preview,
                "change_page": change_page,
                "opts": self.model._meta,
            },
        )

    @admin.action(description="Send a test event", permissions=["operate"])
    def send_test(self, request: HttpRequest, queryset: QuerySet) -> None:
        sent = [delivery_send_test(subscription=s).id for s in queryset.filter(deleted_at__isnull=True)]
        if sent:
            self.message_user(request, f"Sent {len(sent)} test event(s): {', '.join(sent)}.", messages.SUCCESS)
        self._left_as_they_were(request, queryset.count() - len(sent), "deleted")

    @admin.action(description="Pause (stop sending)", permissions=["operate"])
    def pause(self, request: HttpRequest, queryset: QuerySet) -> None:
        changed = list(queryset.filter(deleted_at__isnull=True, active=True))
        for subscription in changed:
            subscription_update(subscription=subscription, changes={"active": False})
        if changed:
            self.message_user(
                request,
                f"Paused {len(changed)} subscription(s). Pending deliveries to them stop within seconds.",
                messages.SUCCESS,
            )
        self._left_as_they_were(request, queryset.count() - len(changed), "already paused or disabled, or deleted")

    @admin.action(description="Re-enable", permissions=["operate"])
    def reenable(self, request: HttpRequest, queryset: QuerySet) -> None:
        changed = list(queryset.filter(deleted_at__isnull=True, active=False))
        for subscription in changed:
            subscription_update(subscription=subscription, changes={"active": True})
        if changed:
            self.message_user(request, f"Re-enabled {len(changed)} subscription(s).", messages.SUCCESS)
        self._left_as_they_were(request, queryset.count() - len(changed), "already active, or deleted")

    @admin.action(description="Rotate the signing secret (shows it once)", permissions=["rotate"])
    def rotate_secret(self, request: HttpRequest, queryset: QuerySet) -> None:
        rotated = 0
        for subscription in queryset.filter(deleted_at__isnull=True):
            secret = subscription_rotate_secret(subscription=subscription)
            rotated += 1
            self.message_user(
                request,
                f"New secret for {subscription.id}, shown once: {secret} (the old one keeps signing for 24 hours).",
                messages.WARNING,
            )
        self._left_as_they_were(request, queryset.count() - rotated, "deleted")

    def _left_as_they_were(self, request: HttpRequest, count: int, why: str) -> None:
        """An action that did nothing to some of the selection says so, rather than report success for all."""
        if count:
            self.message_user(request, f"{count} selected subscription(s) left as they were: {why}.", messages.WARNING)

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("webhooks.operate_subscription")

    def has_recover_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("deliveries.recover_subscription")

    def has_rotate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("webhooks.rotate_secret_subscription")

    def has_add_permission(self, request) -> bool:
        return False  # tenants create subscriptions through the API

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


# Django's and django-axes' own list pages, held to the same rules as ours (core.admin.ModelAdmin): filters only
# by their own filters (a password hash or an address could be probed otherwise, and `?ip_address=x` raised from
# the database), actions only on ids that can exist. The admin modules of the apps before this one are loaded.
for _model in [m for m in (User, Group, AccessAttempt, AccessLog, AccessFailureLog) if admin.site.is_registered(m)]:
    _theirs = type(admin.site.get_model_admin(_model))
    admin.site.unregister(_model)
    admin.site.register(_model, type(_theirs.__name__, (ModelAdmin, _theirs), {}))
