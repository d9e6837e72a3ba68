"""django-axes' view of a login attempt (the AXES_* settings)."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest

# What axes' tables hold of a user name (AccessAttempt.username and the others are varchar(255)).
USERNAME_LENGTH = 255


def attempted_username(request: HttpRequest, credentials: dict | None = None) -> str | None:
    """The user name a login tried, as axes records it: cut to what its tables hold.

    Django's login form sets the field's length after the field is built, so nothing checks it, and axes
    stored the name as posted: a longer one (no user's can be: Django's hold 150) raised from PostgreSQL, a
    500 from the login page for anyone. Still recorded, so the client's address is locked out as usual.
    """
    source = credentials if credentials else getattr(request, "data", request.POST)
    username = source.get(settings.AXES_USERNAME_FORM_FIELD)
    if not isinstance(username, str):
        return username
    return username[:USERNAME_LENGTH]
