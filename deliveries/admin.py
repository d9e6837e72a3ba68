from django.contrib import admin

from deliveries.models import Attempt, Delivery, Event


class AttemptInline(admin.TabularInline):
    model = Attempt
    extra = 0
    can_delete = False
    fields = ("number", "started_at", "duration_ms", "response_status_code", "error", "response_body")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "status",
        "event_type",
        "tenant",
        "subscription",
        "attempt_count",
        "response_status_code",
        "created_at",
    )
    list_select_related = ("tenant", "subscription")
    list_filter = ("status",)
    search_fields = ("=id", "=event__id", "=subscription__id")
    raw_id_fields = ("tenant", "event", "subscription")
    show_full_result_count = False
    inlines = [AttemptInline]

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ("id", "type", "tenant", "created_at")
    list_select_related = ("tenant",)
    search_fields = ("=id", "type")
    raw_id_fields = ("tenant",)
    show_full_result_count = False

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False
