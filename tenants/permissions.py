from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from rest_framework import exceptions, permissions


class HasRequiredScope(permissions.BasePermission):
    """The request's API key carries the scope the view declares for this action.

    Views declare `required_scopes = {"list": "webhooks:read", ...}`. A view, or an action,
    that declares nothing fails closed: a configuration error, never an open door.
    """

    def has_permission(self, request, view) -> bool:
        if request.auth is None:
            raise exceptions.NotAuthenticated("Authentication credentials were not provided.")
        if getattr(view, "action", "") is None or request.method.lower() not in view.http_method_names:
            return True  # a method the view does not serve: its handler answers 405
        scope = required_scope(view)
        if scope not in request.auth.scopes:
            raise exceptions.PermissionDenied(
                {"detail": f"This API key lacks the scope '{scope}'.", "required_scope": scope}
            )
        return True


def required_scope(view) -> str:
    declared = getattr(view, "required_scopes", None)
    action = getattr(view, "action", None) or view.request.method.lower()
    if isinstance(declared, dict):
        scope = declared.get(action)
    else:
        scope = declared
    if not scope:
        raise ImproperlyConfigured(f"{type(view).__name__} declares no required scope for {action!r}.")
    return scope
