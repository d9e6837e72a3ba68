"""The base every tenant-facing API view goes through: scoping is structural, not remembered."""

from __future__ import annotations

import re

from django.db.models import QuerySet
from rest_framework.exceptions import NotFound

from tenants.models import Tenant

# Ids are `<prefix>_<base62>`; anything else cannot exist, so it is a 404 before any query
# (which also keeps NUL bytes and odd Unicode away from the database).
_ID_RE = re.compile(r"^[a-z]{2,4}_[A-Za-z0-9]{1,40}$")


def is_well_formed_id(value: str) -> bool:
    return bool(_ID_RE.match(value))


class TenantScopedViewSetMixin:
    """Narrows `queryset` to the key's tenant before any handler runs."""

    http_method_names = ["get", "post", "patch", "delete", "head"]
    lookup_value_regex = "[^/]+"

    @property
    def tenant(self) -> Tenant:
        return self.request.auth.tenant

    def get_queryset(self) -> QuerySet:
        return super().get_queryset().for_tenant(self.tenant)

    def get_object(self):
        lookup = self.kwargs.get(self.lookup_url_kwarg or self.lookup_field, "")
        if not is_well_formed_id(lookup):
            raise NotFound()
        return super().get_object()
