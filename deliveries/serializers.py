import json
from datetime import datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.api import MAX_JSON_DEPTH, StrictCharField, StrictSerializerMixin
from core.jsonfields import JsonObjectField
from deliveries.filters import parse_rfc3339
from deliveries.models import Attempt, Delivery, Event, EventSkip, Recovery, SkipReason
from deliveries.recovery import MAX_RECOVERY_DAYS
from webhooks.events import PUBLISHABLE_EVENT_NAME_REGEX, RESERVED_PREFIXES, FullMatchValidator, is_reserved
from webhooks.models import EventType


class AttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = Attempt
        fields = ("number", "started_at", "response_status_code", "duration_ms", "error")
        read_only_fields = fields


class AttemptDetailSerializer(AttemptSerializer):
    """An attempt with what the endpoint answered: only one delivery at a time is read this way."""

    response_headers = serializers.DictField(
        child=serializers.CharField(),
        read_only=True,
        help_text=(
            "A few of the response's headers, names lower-cased, each value at most 500 characters: "
            "content-type, content-length, location, retry-after, www-authenticate, x-request-id."
        ),
    )

    class Meta(AttemptSerializer.Meta):
        fields = (*AttemptSerializer.Meta.fields, "response_body", "response_headers")
        read_only_fields = fields
        extra_kwargs = {
            "response_body": {
                "help_text": "The first 20,000 bytes of the response body, as UTF-8 (invalid bytes replaced)."
            }
        }


class DeliverySerializer(serializers.ModelSerializer):
    """A delivery as the log shows it; `id` is the `webhook-id` header the receiver got."""

    event_id = serializers.CharField(read_only=True)
    attempts = AttemptSerializer(many=True, read_only=True)
    ordering_key = serializers.CharField(
        read_only=True, allow_null=True, help_text="The event's ordering key, if it had one."
    )
    waiting_on = serializers.CharField(
        read_only=True,
        allow_null=True,
        default=None,
        help_text=(
            "For an ordered delivery not yet sent: the id of the unfinished delivery before it in its ordering key, "
            "which must succeed or fail first."
        ),
    )

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
            "ordering_key",
            "waiting_on",
        )
        read_only_fields = fields


class DeliveryDetailSerializer(DeliverySerializer):
    """One delivery, each attempt with the response's body excerpt and headers."""

    attempts = AttemptDetailSerializer(many=True, read_only=True)


class PublishableEventNameValidator(FullMatchValidator):
    """An event name a tenant may publish: the namespaces ASIRI sends its own events in are refused by name."""

    def __call__(self, value) -> None:
        if isinstance(value, str) and is_reserved(value):
            prefixes = " and ".join(f"`{prefix}`" for prefix in RESERVED_PREFIXES)
            raise ValidationError(f"Reserved: {prefixes} events are ASIRI's own.", code="reserved")
        super().__call__(value)


class EventPublishSerializer(StrictSerializerMixin, serializers.Serializer):
    read_only_names = ("id", "deliveries")

    type = StrictCharField(
        max_length=200,
        trim_whitespace=False,  # " invoice.paid" is not an event name, as the pattern says
        validators=[
            PublishableEventNameValidator(
                PUBLISHABLE_EVENT_NAME_REGEX, "Must be an event name such as invoice.paid (no wildcards)."
            )
        ],
        help_text=(
            "The event type, e.g. `invoice.paid`: lowercase words separated by dots. Names starting `asiri.` or "
            "`webhook.` are reserved for ASIRI's own events."
        ),
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
    ordering_key = StrictCharField(
        max_length=200,
        required=False,
        trim_whitespace=False,  # opaque, like the idempotency key
        help_text=(
            "Events with the same key reach each subscription strictly in publish order: one is attempted only "
            "once the one before it succeeded or failed. Other keys, and events without one, are not held up."
        ),
    )


class EventPublishedSerializer(serializers.Serializer):
    id = serializers.CharField()
    type = serializers.CharField()
    deliveries = serializers.IntegerField(source="delivery_count", help_text="Deliveries created for this event.")


MAX_BATCH_EVENTS = 100


class EventBatchSerializer(StrictSerializerMixin, serializers.Serializer):
    """1 to 100 events, validated all or nothing; an error names the event by its index."""

    # A ListField, not many=True: its errors are keyed by index, and its bounds reach the OpenAPI document.
    events = serializers.ListField(
        child=EventPublishSerializer(),
        min_length=1,
        max_length=MAX_BATCH_EVENTS,
        allow_empty=False,
        help_text=(
            f"1 to {MAX_BATCH_EVENTS} events, each as `POST /v1/events` takes it (its `data` at most 256 KB); "
            "published in one transaction, in this order."
        ),
    )

    def validate_events(self, events: list[dict]) -> list[dict]:
        too_large = {
            str(index): {"data": [f"Must be at most {settings.ASIRI_MAX_EVENT_BYTES} bytes as JSON."]}
            for index, event in enumerate(events)
            if len(json.dumps(event["data"], separators=(",", ":")).encode()) > settings.ASIRI_MAX_EVENT_BYTES
        }
        if too_large:
            raise serializers.ValidationError(too_large)
        return events


class EventBatchPublishedSerializer(serializers.Serializer):
    results = EventPublishedSerializer(many=True, help_text="One entry per event, in the order they were given.")


class EventSerializer(serializers.ModelSerializer):
    """An event as it was published."""

    data = serializers.DictField(read_only=True, help_text="The payload every receiver got as `data`.")

    class Meta:
        model = Event
        fields = ("id", "type", "created_at", "data")
        read_only_fields = fields


class EventDeliverySerializer(serializers.ModelSerializer):
    delivery_id = serializers.CharField(source="id", read_only=True)
    subscription_id = serializers.CharField(read_only=True)

    class Meta:
        model = Delivery
        fields = ("subscription_id", "delivery_id", "status")
        read_only_fields = fields


class EventSkipSerializer(serializers.ModelSerializer):
    subscription_id = serializers.CharField(read_only=True)
    reason = serializers.ChoiceField(
        choices=SkipReason.choices,
        read_only=True,
        help_text=(
            "As it stood at publish time: `paused` (the tenant set `active` to false), `disabled` (the service "
            "disabled it), `filtered` (its payload filter refused the event), `subject` (an `asiri.` event about "
            "this subscription)."
        ),
    )

    class Meta:
        model = EventSkip
        fields = ("subscription_id", "reason")
        read_only_fields = fields


class EventAccountSerializer(EventSerializer):
    """An event and what became of it: every subscription whose patterns matched is in exactly one list."""

    deliveries = EventDeliverySerializer(many=True, read_only=True)
    skipped = EventSkipSerializer(source="skips", many=True, read_only=True)

    class Meta(EventSerializer.Meta):
        fields = (*EventSerializer.Meta.fields, "deliveries", "skipped")
        read_only_fields = fields


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

    since = Rfc3339Field(
        help_text=f"Start of the range (inclusive), in the past and at most {MAX_RECOVERY_DAYS} days ago."
    )
    until = Rfc3339Field(
        required=False, help_text="End of the range (exclusive), later than `since`; default (and at most) now."
    )

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


class TestSendSerializer(StrictSerializerMixin, serializers.Serializer):
    event_type = StrictCharField(
        max_length=200,
        required=False,
        trim_whitespace=False,
        help_text="A catalog event type whose `example` is sent as `data`; leave out for `webhook.test`.",
    )

    def validate_event_type(self, name: str) -> EventType:
        event_type = EventType.objects.filter(pk=name).first()
        if event_type is None:
            raise serializers.ValidationError("Not a registered event type (GET /v1/event-types lists them).")
        if event_type.example is None:
            raise serializers.ValidationError("This event type has no example to send.")
        return event_type
