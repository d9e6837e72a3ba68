"""JSON-valued request fields: any object PostgreSQL can store, nested no deeper than the API allows."""

from __future__ import annotations

import json

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import ResolvedComponent
from rest_framework import serializers

from core.api import MAX_JSON_DEPTH, TOO_DEEP
from core.openapi import NO_NUL


def json_problem(value) -> str | None:
    """Why a JSON value cannot be taken, or None; a walk with its own stack, so depth cannot exhaust Python's."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "Must not contain NUL (\\u0000) characters."
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:  # a lone surrogate (\ud800): the API's parser refuses it before this
                    return "Must not contain lone surrogates (\\ud800 to \\udfff)."
        elif isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                return TOO_DEEP
            children = [*item, *item.values()] if isinstance(item, dict) else item  # keys are strings
            pending.extend((child, depth + 1) for child in children)
    return None


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


class StrictJSONDecoder(json.JSONDecoder):
    """JSON as the API reads it: NaN and Infinity, which Python's json takes and jsonb refuses, are errors."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **{**kwargs, "parse_constant": _refuse_constant})


class JsonObjectField(serializers.JSONField):
    """Any JSON object without NUL characters, nested at most MAX_JSON_DEPTH levels."""

    def to_internal_value(self, data) -> dict:
        if not isinstance(data, dict):
            raise serializers.ValidationError("Must be a JSON object.")
        problem = json_problem(data)
        if problem:
            raise serializers.ValidationError(problem)
        return super().to_internal_value(data)


def json_value_component() -> ResolvedComponent:
    """Any JSON value without NUL; recursive, so a component: type-specific keywords apply only to that type."""
    return ResolvedComponent(
        name="JsonValue",
        type=ResolvedComponent.SCHEMA,
        object="JsonValue",
        schema={
            "description": "Any JSON value whose strings and object keys contain no NUL (\\u0000).",
            "pattern": NO_NUL,
            "propertyNames": {"pattern": NO_NUL},
            "items": {"$ref": "#/components/schemas/JsonValue"},
            "additionalProperties": {"$ref": "#/components/schemas/JsonValue"},
        },
    )


class JsonObjectFieldSchema(OpenApiSerializerFieldExtension):
    """A JSON object whose keys and strings, at any depth, contain no NUL."""

    target_class = JsonObjectField

    def map_serializer_field(self, auto_schema, direction) -> dict:
        value = json_value_component()
        auto_schema.registry.register_on_missing(value)
        return {"type": "object", "propertyNames": {"pattern": NO_NUL}, "additionalProperties": value.ref}
