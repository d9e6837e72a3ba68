"""Tenants and their API keys. A key is shown once, when created; revoking one is final."""

from __future__ import annotations

from datetime import datetime

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from core.admin import ModelAdmin
from tenants.models import SCOPES, ApiKey, Tenant


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    extra = 0
    can_delete = False
    fields = ("visible_part", "name", "scopes", "created_at", "last_used_at", "expires_at", "revoked_at")
    readonly_fields = fields
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Tenant)
class TenantAdmin(ModelAdmin):
    list_display = ("slug", "name", "is_active", "max_subscriptions", "created_at")
    list_filter = ("is_active",)
    search_fields = ("slug", "name")
    inlines = [ApiKeyInline]


class ApiKeyCreationForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=[(scope, f"{scope}: {text}") for scope, text in SCOPES.items()],
        widget=forms.CheckboxSelectMultiple,
    )

    def clean_expires_at(self) -> datetime | None:
        # A key issued already expired is shown once and never works: create_api_key refuses it too.
        expires_at = self.cleaned_data["expires_at"]
        if expires_at is not None and expires_at <= timezone.now():
            raise forms.ValidationError("Must be in the future.")
        return expires_at

    class Meta:
        model = ApiKey
        fields = ("tenant", "name", "scopes", "expires_at")


@admin.register(ApiKey)
class ApiKeyAdmin(ModelAdmin):
    list_display = (
        "visible_part",
        "tenant",
        "name",
        "scopes",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    )
    list_select_related = ("tenant",)
    list_filter = ("tenant",)
    search_fields = ("=lookup", "name", "=tenant__slug")
    actions = ["revoke"]
    # lookup and digest are never shown: the visible part is enough to name a key.
    readonly = ("visible_part", "tenant", "name", "scopes", "created_at", "last_used_at", "expires_at", "revoked_at")

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = ApiKeyCreationForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        return ("tenant", "name", "scopes", "expires_at") if obj is None else self.readonly

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly

    def save_model(self, request, obj: ApiKey, form, change: bool) -> None:
        issued, plain = ApiKey.issue(
            tenant=form.cleaned_data["tenant"],
            scopes=form.cleaned_data["scopes"],
            name=form.cleaned_data["name"],
            expires_at=form.cleaned_data["expires_at"],
        )
        obj.pk, obj.lookup = issued.pk, issued.lookup
        self.message_user(
            request, f"New API key for {issued.tenant.slug}, shown only this once: {plain}", messages.WARNING
        )

    @admin.action(description="Revoke the selected keys (cannot be undone)", permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: QuerySet) -> None:
        keys = list(queryset.filter(revoked_at__isnull=True))
        for api_key in keys:
            api_key.revoke()
        self.message_user(request, f"Revoked {len(keys)} key(s).", messages.SUCCESS)

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("tenants.revoke_apikey")

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
