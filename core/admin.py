"""What every ASIRI model admin shares."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin import helpers
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest


class ModelAdmin(admin.ModelAdmin):
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
