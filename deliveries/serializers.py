from rest_framework import serializers

from core.api import MAX_JSON_DEPTH, StrictCharField, StrictSerializerMixin
from core.jsonfields import JsonObjectField
from deliveries.models import Attempt, Delivery
from webhooks.events import EVENT_NAME_RE, FullMatchValidator
from webhooks.models import EventType


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


class EventPublishSerializer(StrictSerializerMixin, serializers.Serializer):
    read_only_names = ("id", "deliveries")

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
