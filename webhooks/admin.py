from django.contrib import admin

from webhooks.models import Subscription


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = ("id", "tenant", "url", "active", "disabled_reason", "created_at", "deleted_at")
    list_select_related = ("tenant",)
    list_filter = ("active",)
    search_fields = ("=id", "url", "tenant__slug")
    raw_id_fields = ("tenant",)
    show_full_result_count = False
    # The signing secret is deliberately absent: support staff rotate it, never read it.
    fields = (
        "id",
        "tenant",
        "url",
        "events",
        "description",
        "active",
        "disabled_reason",
        "metadata",
        "created_at",
        "updated_at",
        "deleted_at",
    )
    readonly_fields = ("id", "created_at", "updated_at", "deleted_at")
