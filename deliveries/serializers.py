from rest_framework import serializers

from deliveries.models import Attempt, Delivery


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
