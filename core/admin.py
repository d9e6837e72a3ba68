"""What every ASIRI model admin shares."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin import helpers
from django.contrib.admin.utils import get_fields_from_path
from django.core.exceptions import ValidationError
from django.db import models
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest


class ModelAdmin(admin.ModelAdmin):
    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        """Only the parameters the page's own filters put in its address.

        Django lets a list page's address filter on any field of its model: `?secret__startswith=whsec_N` on the
        subscriptions answered one row or none, so a support user could read a signing secret (or a hidden
        header's value, or a key's digest) a character at a time, which no page shows; and `?created_at__year=0`
        or `?id__regex=(` raised from the database. Anything else is Django's 400 (DisallowedModelAdminLookup).
        """
        return lookup in self.filter_parameters(request)

    def filter_parameters(self, request: HttpRequest | None) -> set[str]:
        """The parameter names of the list filters (as django.contrib.admin.filters names them)."""
        names: set[str] = set()
        for item in self.get_list_filter(request) if request is not None else self.list_filter:
            if isinstance(item, type) and issubclass(item, admin.SimpleListFilter):
                names.add(item.parameter_name)
                continue
            path = item[0] if isinstance(item, list | tuple) else item
            field = get_fields_from_path(self.model, path)[-1]
            if field.is_relation:
                names |= {f"{path}__{field.target_field.name}__exact", f"{path}__isnull"}
            elif isinstance(field, models.DateField):
                names |= {f"{path}__gte", f"{path}__lt", f"{path}__isnull"}
            else:
                names |= {f"{path}__exact", f"{path}__isnull"}
        if self.date_hierarchy:
            names |= {f"{self.date_hierarchy}__{part}" for part in ("year", "month", "day")}
        return names

    def response_action(self, request: HttpRequest, queryset) -> HttpResponse | None:
        """Django filters on the ids a list page posts as they come: one that cannot be this model's key (text
        for an integer key, a NUL that PostgreSQL refuses) raised while the action ran, a 500 for a form that was
        altered or copied from another list."""
        for value in request.POST.getlist(helpers.ACTION_CHECKBOX_NAME):
            try:
                if "\x00" in value:
                    raise ValidationError("NUL")
                self.model._meta.pk.to_python(value)
            except ValidationError:
                return HttpResponseBadRequest(
                    f"{value[:100]!r} is not the id of any {self.model._meta.verbose_name}.",
                    content_type="text/plain; charset=utf-8",
                )
        return super().response_action(request, queryset)
