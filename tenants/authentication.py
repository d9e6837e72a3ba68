from __future__ import annotations

from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from core.api import UNAUTHENTICATED
from tenants.models import ApiKey, parse_key

INVALID_KEY = UNAUTHENTICATED  # core.api.exception_handler gives a missing key this body too


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer asiri_…`; request.user and request.auth are the ApiKey.

    Every way a key can be wrong (malformed, unknown lookup, wrong secret, revoked, expired,
    inactive tenant) gives the same 401, so the answer tells an attacker nothing.
    """

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[ApiKey, ApiKey] | None:
        header = authentication.get_authorization_header(request)
        if not header:
            return None
        try:
            scheme, _, credentials = header.decode("latin-1").partition(" ")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed(INVALID_KEY) from None
        if scheme.lower() != self.keyword.lower():
            return None
        plain = credentials.strip()
        lookup = parse_key(plain)
        if lookup is None:
            raise exceptions.AuthenticationFailed(INVALID_KEY)
        api_key = ApiKey.objects.select_related("tenant").filter(lookup=lookup).first()
        now = timezone.now()
        if api_key is None or not api_key.matches(plain) or not api_key.is_usable(now):
            raise exceptions.AuthenticationFailed(INVALID_KEY)
        api_key.touch(now)
        return api_key, api_key

    def authenticate_header(self, request: Request) -> str:
        return f'{self.keyword} realm="api"'
