"""How the OpenAPI document describes authentication, error bodies, NUL-free strings and links."""

from __future__ import annotations

from django.core.validators import RegexValidator
from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerFieldExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers

from core.api import StrictSerializerMixin

# DRF's CharField refuses NUL (PostgreSQL cannot store it in text or jsonb): strings in requests
# say so. ECMA-262 and Python read this pattern alike.
NO_NUL = "^[^\\u0000]*$"
NO_NUL_NONEMPTY = "^[^\\u0000]+$"

_DESCRIPTIONS = {
    400: "Invalid input: the body names each bad field or query parameter.",
    401: "Missing, malformed, unknown, revoked or expired API key (`WWW-Authenticate: Bearer`).",
    403: "The API key lacks the scope this operation needs; `required_scope` names it.",
    404: "No such object for this tenant.",
    406: "The `Accept` header admits no `application/json`.",
    409: "The object is not in a state that allows this.",
    413: "Request body too large.",
    415: "The body is not `application/json`.",
    422: "The idempotency key was used within 24 hours for a different event; `conflicting_fields` names how.",
    429: "Too many requests with this API key; `Retry-After` says when to try again.",
}

_DETAIL = inline_serializer("Error", {"detail": serializers.CharField()})
_SCOPE = inline_serializer("ScopeError", {"detail": serializers.CharField(), "required_scope": serializers.CharField()})
_CONFLICT = inline_serializer(
    "IdempotencyConflict",
    {"detail": serializers.CharField(), "conflicting_fields": serializers.ListField(child=serializers.CharField())},
)
_VALIDATION = {
    "type": "object",
    "description": (
        "Field or parameter name to a list of messages; `detail` or `non_field_errors` for the body as a whole."
    ),
    "additionalProperties": True,
}


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    responses = {}
    # Every operation negotiates the response type first, and is rate limited per key.
    for code in (*codes, 406, 429):
        body = {400: _VALIDATION, 403: _SCOPE, 422: _CONFLICT}.get(code, _DETAIL)
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


class NoNulStringField(OpenApiSerializerFieldExtension):
    """Every string field of a request states that NUL is refused, unless its pattern already does."""

    target_class = "core.api.StrictCharField"
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction) -> dict:
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        if direction == "request" and not any(isinstance(v, RegexValidator) for v in self.target.validators):
            # A pattern, not `not: {pattern: NUL}`: a generator cannot spell the complement of a
            # pattern, and schemathesis refused such a `not` in some schemas it derived (a red CI
            # run, at random). drf-spectacular wraps a blank-allowing field that has a pattern in
            # `oneOf: [that, {maxLength: 0}]`, so there the pattern leaves "" to the other branch.
            schema["pattern"] = NO_NUL_NONEMPTY if getattr(self.target, "allow_blank", False) else NO_NUL
        return schema


def _links(*targets: tuple[str, dict[str, str]]) -> dict[str, dict]:
    return {
        operation_id[0].upper() + operation_id[1:]: {"operationId": operation_id, "parameters": parameters}
        for operation_id, parameters in targets
    }


_NEW_SUBSCRIPTION = {"id": "$response.body#/id"}
_ITS_DELIVERIES = {"subscription_id": "$response.body#/id"}
_NEW_DELIVERY = {"subscription_id": "$request.path.subscription_id", "delivery_id": "$response.body#/id"}
# (operationId, status) -> what a client can do next with the object that response returned.
LINKS: dict[tuple[str, int], dict[str, dict]] = {
    ("createSubscription", 201): _links(
        ("getSubscription", _NEW_SUBSCRIPTION),
        ("updateSubscription", _NEW_SUBSCRIPTION),
        ("deleteSubscription", _NEW_SUBSCRIPTION),
        ("rotateSubscriptionSecret", _NEW_SUBSCRIPTION),
        ("sendTestEvent", _ITS_DELIVERIES),
        ("listDeliveries", _ITS_DELIVERIES),
        ("recoverSubscription", _ITS_DELIVERIES),
    ),
    ("sendTestEvent", 202): _links(("getDelivery", _NEW_DELIVERY), ("redeliverDelivery", _NEW_DELIVERY)),
    ("redeliverDelivery", 202): _links(("getDelivery", _NEW_DELIVERY)),
    ("publishEvent", 202): _links(("getEvent", {"event_id": "$response.body#/id"})),
    ("recoverSubscription", 202): _links(
        ("getRecovery", {"subscription_id": "$request.path.subscription_id", "recovery_id": "$response.body#/id"})
    ),
}


class LinkedAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema plus the response links in LINKS (which it has no decorator for), and
    `additionalProperties: false` on request bodies that refuse unknown members (StrictSerializerMixin)."""

    def _map_basic_serializer(self, serializer, direction) -> dict:
        schema = super()._map_basic_serializer(serializer, direction)
        if direction == "request" and isinstance(serializer, StrictSerializerMixin):
            schema["additionalProperties"] = False
        return schema

    def _get_response_for_code(self, serializer, status_code, media_types=None, direction="response") -> dict:
        response = super()._get_response_for_code(serializer, status_code, media_types, direction)
        links = LINKS.get((self.get_operation_id(), int(status_code)))
        return {**response, "links": links} if links else response
