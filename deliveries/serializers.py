from datetime import datetime

from drf_spectacular.extensions import OpenApiSerializerExtension, OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.api import MAX_JSON_DEPTH, TOO_DEEP, StrictCharField
from core.openapi import NO_NUL
from deliveries.filters import parse_rfc3339
from deliveries.models import Attempt, Delivery, Recovery
from deliveries.recovery import MAX_RECOVERY_DAYS
from webhooks.events import EVENT_NAME_RE, FullMatchValidator


class AttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = Attempt
        fields = ("number", "started_at", "response_status_code", "duration_ms", "error")
        read_only_fields = fields


class DeliverySerializer(serializers.ModelSerializer):
    """A delivery as the log shows it; `id` is the `webhook-id` header the receiver got."""

    event_id = serializers.CharField(read_only=True)
    attempts = AttemptSerializer(many=True, read_only=True)

    class Meta:
        model = Delivery
        fields = (
            "id",
            "event_id",
            "event_type",
            "status",
            "attempt_count",
            "attempts",
            "response_status_code",
            "created_at",
            "last_attempt_at",
            "next_attempt_at",
        )
        read_only_fields = fields


def _json_problem(value) -> str | None:
    """Why a JSON value cannot be taken, or None; a walk with its own stack, so depth cannot exhaust Python's."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "Must not contain NUL (\\u0000) characters."
        elif isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                return TOO_DEEP
            children = [*item, *item.values()] if isinstance(item, dict) else item  # keys are strings
            pending.extend((child, depth + 1) for child in children)
    return None


class JsonObjectField(serializers.JSONField):
    """Any JSON object without NUL characters, nested at most MAX_JSON_DEPTH levels."""

    def to_internal_value(self, data) -> dict:
        if not isinstance(data, dict):
            raise serializers.ValidationError("Must be a JSON object.")
        problem = _json_problem(data)
        if problem:
            raise serializers.ValidationError(problem)
        return super().to_internal_value(data)


class JsonObjectFieldSchema(OpenApiSerializerFieldExtension):
    """A JSON object whose keys and strings, at any depth, contain no NUL."""

    target_class = JsonObjectField

    def map_serializer_field(self, auto_schema, direction) -> dict:
        # Recursive, so a component: type-specific keywords apply only to values of that type.
        value = ResolvedComponent(
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
        auto_schema.registry.register_on_missing(value)
        return {"type": "object", "propertyNames": {"pattern": NO_NUL}, "additionalProperties": value.ref}


class EventPublishSerializer(serializers.Serializer):
    type = StrictCharField(
        max_length=200,
        trim_whitespace=False,  # " invoice.paid" is not an event name, as the pattern says
        validators=[
            FullMatchValidator(EVENT_NAME_RE.pattern, "Must be an event name such as invoice.paid (no wildcards).")
        ],
        help_text="The event type, e.g. `invoice.paid`: lowercase words separated by dots.",
    )
    data = JsonObjectField(
        help_text=(
            f"The event's payload, delivered as `data`: a JSON object nested at most {MAX_JSON_DEPTH} levels deep "
            '(`{}` is one level, `{"a": []}` two).'
        )
    )
    idempotency_key = StrictCharField(
        max_length=200,
        required=False,
        trim_whitespace=False,  # opaque: " k" and "k" are different keys
        help_text="Publishing again with the same key within 24 hours returns the first event and sends nothing.",
    )


class EventPublishedSerializer(serializers.Serializer):
    id = serializers.CharField()
    type = serializers.CharField()
    deliveries = serializers.IntegerField(source="delivery_count", help_text="Deliveries created for this event.")


class RecoverySerializer(serializers.ModelSerializer):
    """A recovery: `redelivered` and `recovered_missed` are null until it runs, then count up to the totals."""

    class Meta:
        model = Recovery
        fields = ("id", "status", "since", "until", "redelivered", "recovered_missed", "created_at")
        read_only_fields = fields


@extend_schema_field({"type": "string", "format": "date-time"})
class Rfc3339Field(serializers.Field):
    """An RFC 3339 date-time, exactly as the OpenAPI `date-time` format has it, as a UTC instant."""

    def to_internal_value(self, data) -> datetime:
        moment = parse_rfc3339(data) if isinstance(data, str) else None
        if moment is None:
            raise serializers.ValidationError("Must be an RFC 3339 date-time, such as 2026-01-31T09:30:00Z.")
        return moment

    def to_representation(self, value: datetime) -> str:
        return value.isoformat()


class RecoverSerializer(serializers.Serializer):
    """The body of a recover: a range, and nothing else (an unknown field is a 400 naming it)."""

    since = Rfc3339Field(help_text=f"Start of the range (inclusive), at most {MAX_RECOVERY_DAYS} days ago.")
    until = Rfc3339Field(required=False, help_text="End of the range (exclusive), later than `since`; default now.")

    def to_internal_value(self, data) -> dict:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({key[:200]: ["Unknown field."] for key in unknown})
        return super().to_internal_value(data)


class RecoverSchema(OpenApiSerializerExtension):
    """The document says what the serializer enforces: no member besides `since` and `until`."""

    target_class = RecoverSerializer

    def map_serializer(self, auto_schema, direction) -> dict:
        schema = auto_schema._map_basic_serializer(self.target, direction)
        return {**schema, "additionalProperties": False}
