"""The `filter` request field and how the OpenAPI document states its grammar."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import ResolvedComponent
from rest_framework import serializers

from core.jsonfields import json_problem, json_value_component
from core.openapi import NO_NUL
from webhooks.filters import COMPARISONS, MAX_FILTER_BYTES, MAX_FILTER_DEPTH, OPERATORS, FilterError, validate_filter

FILTER_HELP = (
    'Only events whose envelope `{"type", "data"}` matches this are delivered (Hookdeck Outpost syntax): '
    "a plain value means equality (or, against an array, that the array holds it), objects walk into the "
    "payload (and into the objects of an array), operators `$eq $neq $gt $gte $lt $lte $in "
    f"$nin $exist $startsWith $endsWith $and $or $not`. At most {MAX_FILTER_BYTES} bytes and "
    f"{MAX_FILTER_DEPTH} levels; null for none."
)


class PayloadFilterField(serializers.JSONField):
    """A payload filter (webhooks/filters.py); errors name each problem by its JSON Pointer."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("help_text", FILTER_HELP)
        super().__init__(**kwargs)

    def to_internal_value(self, data) -> Any:
        if data is None:
            return None
        if isinstance(data, dict):
            problem = json_problem(data)
            if problem:
                raise serializers.ValidationError([{"pointer": "", "message": problem}])
        try:
            return validate_filter(data)
        except FilterError as exc:
            raise serializers.ValidationError(exc.errors) from None


SCALAR = {"type": ["string", "number", "boolean", "null"], "pattern": NO_NUL}


def filter_component(value_ref: dict) -> ResolvedComponent:
    ref = {"$ref": "#/components/schemas/PayloadFilter"}
    string = {"type": "string", "pattern": NO_NUL}
    properties: dict[str, Any] = {
        "$eq": value_ref,
        "$neq": value_ref,
        **{op: {"type": ["number", "string"], "pattern": NO_NUL} for op in COMPARISONS},
        "$in": {"type": "array", "items": SCALAR},
        "$nin": {"type": "array", "items": SCALAR},
        "$exist": {"type": "boolean"},
        "$startsWith": string,
        "$endsWith": string,
        "$and": {"type": "array", "items": ref},
        "$or": {"type": "array", "items": ref},
        "$not": ref,
    }
    assert set(properties) == set(OPERATORS)
    return ResolvedComponent(
        name="PayloadFilter",
        type=ResolvedComponent.SCHEMA,
        object="PayloadFilter",
        schema={
            "type": "object",
            "description": FILTER_HELP,
            # A key starting with $ is an operator; any other walks into the payload.
            "propertyNames": {"anyOf": [{"enum": list(OPERATORS)}, {"pattern": "^([^$\\u0000][^\\u0000]*)?$"}]},
            "properties": properties,
            "additionalProperties": {
                "anyOf": [
                    ref,
                    {"type": ["string", "number", "boolean", "null", "array"], "pattern": NO_NUL, "items": value_ref},
                ]
            },
        },
    )


class PayloadFilterFieldSchema(OpenApiSerializerFieldExtension):
    target_class = PayloadFilterField

    def map_serializer_field(self, auto_schema, direction) -> dict:
        if direction == "response":
            return {"description": "The payload filter, or null.", "type": ["object", "null"]}
        value = json_value_component()
        auto_schema.registry.register_on_missing(value)
        component = filter_component(value.ref)
        auto_schema.registry.register_on_missing(component)
        # null is allowed: drf-spectacular adds `{"type": "null"}` for an allow_null field itself.
        return {"anyOf": [component.ref], "description": FILTER_HELP}
