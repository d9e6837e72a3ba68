"""How the OpenAPI document describes authentication and error bodies."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers

_DESCRIPTIONS = {
    400: "Invalid input: the body names each bad field or query parameter.",
    401: "Missing, malformed, unknown, revoked or expired API key (`WWW-Authenticate: Bearer`).",
    403: "The API key lacks the scope this operation needs; `required_scope` names it.",
    404: "No such object for this tenant.",
    409: "The object is not in a state that allows this.",
    413: "Request body too large.",
    429: "Too many requests with this API key; `Retry-After` says when to try again.",
}

_DETAIL = inline_serializer("Error", {"detail": serializers.CharField()})
_SCOPE = inline_serializer("ScopeError", {"detail": serializers.CharField(), "required_scope": serializers.CharField()})
_VALIDATION = {
    "type": "object",
    "description": (
        "Field or parameter name to a list of messages; `detail` or `non_field_errors` for the body as a whole."
    ),
    "additionalProperties": True,
}


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    responses = {}
    for code in (*codes, 429):  # every operation is rate limited per key
        body = {400: _VALIDATION, 403: _SCOPE}.get(code, _DETAIL)
        responses[code] = OpenApiResponse(response=body, description=_DESCRIPTIONS[code])
    return responses


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "tenants.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema) -> dict:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": (
                "An ASIRI API key: `Authorization: Bearer asiri_…`. Each operation names the scope it needs."
            ),
        }
