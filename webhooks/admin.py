"""The event catalog's admin. The Subscription admin is registered in asiri/admin.py: its actions reach into
deliveries."""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin
from django.forms.fields import InvalidJSONInput

from core.admin import ModelAdmin
from core.api import TOO_DEEP
from core.jsonfields import StrictJSONDecoder
from webhooks.catalog import event_type_problems
from webhooks.events import EVENT_NAME_RE
from webhooks.models import EventType


class FormattedJSONField(forms.JSONField):
    """JSON edited as indented text, so a schema reads like the file it came from.

    Read strictly (a 500 each before: NaN refused by jsonb, a RecursionError some thousand levels down); the
    strings PostgreSQL cannot hold are refused with the other checks (webhooks.catalog.event_type_problems).
    """

    widget = forms.Textarea(attrs={"rows": 16, "cols": 100, "style": "font-family: monospace"})

    def __init__(self, **kwargs) -> None:
        super().__init__(decoder=StrictJSONDecoder, **kwargs)

    def to_python(self, value):
        try:
            return super().to_python(value)
        except RecursionError:
            raise forms.ValidationError(TOO_DEEP, code="invalid") from None
        except ValueError as exc:  # not a JSONDecodeError, which Django answers itself
            raise forms.ValidationError(f"Enter a valid JSON: {exc}.", code="invalid") from None

    def bound_data(self, data, initial):
        try:
            return super().bound_data(data, initial)
        except (ValueError, RecursionError):
            return InvalidJSONInput(data)  # shown again as typed

    def prepare_value(self, value) -> str:
        if isinstance(value, InvalidJSONInput):
            return value
        text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate, refused on save: shown escaped, as it was typed
            text = json.dumps(value, indent=2, sort_keys=False)
        return text


class EventTypeForm(forms.ModelForm):
    schema = FormattedJSONField(help_text="JSON Schema (2020-12) of the event's data.")
    example = FormattedJSONField(required=False, help_text="A data object valid against the schema.")

    class Meta:
        model = EventType
        fields = ("name", "description", "schema", "example", "deprecated")

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if not EVENT_NAME_RE.fullmatch(name):
            raise forms.ValidationError("Must be an event name: lowercase words separated by dots, no wildcards.")
        return name

    def clean(self) -> dict:
        cleaned = super().clean()
        if "schema" in cleaned and "example" in cleaned:
            for field, problem in event_type_problems(schema=cleaned["schema"], example=cleaned["example"]).items():
                self.add_error(field, problem)
        return cleaned


@admin.register(EventType)
class EventTypeAdmin(ModelAdmin):
    """Superusers edit the catalog (no other permission is granted for it); schemas are checked on save."""

    form = EventTypeForm
    list_display = ("name", "deprecated", "description", "updated_at")
    list_filter = ("deprecated",)
    search_fields = ("name", "description")
    readonly_fields = ("created_at", "updated_at")

    def get_readonly_fields(self, request, obj=None) -> tuple[str, ...]:
        # The name is the key subscriptions and events use: renaming is a new type.
        return (*self.readonly_fields, "name") if obj is not None else self.readonly_fields
