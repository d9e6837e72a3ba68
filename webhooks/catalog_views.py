"""The event catalog API and the filter tester: read-only, global (not tenant-owned), `webhooks:read`."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import NameKeysetPagination, StrictSerializerMixin
from core.jsonfields import JsonObjectField
from core.openapi import error_responses
from webhooks.filter_fields import PayloadFilterField
from webhooks.filters import matches
from webhooks.models import EventType

EVENT_TYPE_NAME = OpenApiParameter(
    "name", str, OpenApiParameter.PATH, description="An event type's name, such as `invoice.paid`."
)


class EventTypeSerializer(serializers.ModelSerializer):
    schema = serializers.JSONField(help_text="JSON Schema (2020-12) of the event's `data`.")
    example = serializers.JSONField(help_text="A `data` object valid against the schema, or null.")

    class Meta:
        model = EventType
        fields = ("name", "description", "schema", "example", "deprecated", "created_at", "updated_at")
        read_only_fields = fields


@extend_schema_view(
    list=extend_schema(
        summary="List event types",
        operation_id="listEventTypes",
        description="The event catalog, by name. Scope: `webhooks:read`.",
        responses={200: EventTypeSerializer(many=True), **error_responses(400, 401, 403)},
    ),
    retrieve=extend_schema(
        summary="Fetch an event type",
        operation_id="getEventType",
        parameters=[EVENT_TYPE_NAME],
        description="One event type with its schema and example. Scope: `webhooks:read`.",
        responses={200: EventTypeSerializer, **error_responses(401, 403, 404)},
    ),
)
class EventTypeViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    queryset = EventType.objects.all()
    serializer_class = EventTypeSerializer
    pagination_class = NameKeysetPagination
    lookup_field = "name"
    lookup_value_regex = "[^/]+"
    http_method_names = ["get", "head"]
    required_scopes = {"list": "webhooks:read", "retrieve": "webhooks:read"}


class FilterTestSerializer(StrictSerializerMixin, serializers.Serializer):
    filter = PayloadFilterField(allow_null=True)
    payload = JsonObjectField(help_text='The envelope to match, as a subscription\'s filter sees it: {"type", "data"}.')


class FilterTestResultSerializer(serializers.Serializer):
    matches = serializers.BooleanField()


class FilterTestView(APIView):
    """POST /v1/webhooks/filter-test: whether a filter would let an event through, by the publish code."""

    required_scopes = "webhooks:read"
    http_method_names = ["post"]

    @extend_schema(
        summary="Try a payload filter",
        operation_id="testFilter",
        description=(
            'Whether `filter` lets `payload` (an envelope `{"type", "data"}`) through, exactly as publishing '
            "decides it. A filter that could not be saved on a subscription is a 400 naming its JSON Pointer. "
            "Scope: `webhooks:read`."
        ),
        request=FilterTestSerializer,
        responses={200: FilterTestResultSerializer, **error_responses(400, 401, 403, 413, 415)},
    )
    def post(self, request) -> Response:
        payload = FilterTestSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        return Response({"matches": matches(payload.validated_data["filter"], payload.validated_data["payload"])})
