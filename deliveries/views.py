from __future__ import annotations

from django.conf import settings
from django.db.models import Prefetch, QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import KeysetPagination, NoBodySerializer
from core.openapi import NO_NUL, LinkedAutoSchema, error_responses
from deliveries.filters import DeliveryFilter
from deliveries.models import Attempt, Delivery, DeliveryStatus
from deliveries.serializers import (
    DeliverySerializer,
    EventPublishedSerializer,
    EventPublishSerializer,
    TestSendSerializer,
)
from deliveries.services import (
    DeliveryConflict,
    IdempotencyConflict,
    delivery_redeliver,
    delivery_send_test,
    event_publish,
)
from tenants.tenancy import TenantScopedViewSetMixin, is_well_formed_id
from webhooks.catalog import EventRejected
from webhooks.models import Subscription

SUBSCRIPTION_ID = OpenApiParameter(
    "subscription_id", str, OpenApiParameter.PATH, description="A subscription id (`sub_…`)."
)
DELIVERY_ID = OpenApiParameter(
    "delivery_id", str, OpenApiParameter.PATH, description="A delivery id (`dlv_…`, the receiver's `webhook-id`)."
)
# The filters exactly as DeliveryFilter reads them; an empty value is the same as leaving one out.
_EMPTY = {"type": "string", "maxLength": 0}
DELIVERY_FILTERS = [
    OpenApiParameter("status", enum=[*DeliveryStatus.values, ""], description="Only deliveries in this state."),
    OpenApiParameter(
        "event_type",
        {"type": "string", "maxLength": 200, "pattern": NO_NUL},
        description="Only deliveries of this event type (exactly).",
    ),
    OpenApiParameter(
        "created_after",
        {"anyOf": [{"type": "string", "format": "date-time"}, _EMPTY]},
        description="Only deliveries created at or after this RFC 3339 date-time.",
    ),
    OpenApiParameter(
        "created_before",
        {"anyOf": [{"type": "string", "format": "date-time"}, _EMPTY]},
        description="Only deliveries created before this RFC 3339 date-time.",
    ),
]


class SubscriptionScopedMixin(TenantScopedViewSetMixin):
    """Views under /subscriptions/{subscription_id}/: the subscription must be the tenant's and live."""

    def get_subscription(self) -> Subscription:
        if not hasattr(self, "_subscription"):
            subscription_id = self.kwargs["subscription_id"]
            subscription = None
            if is_well_formed_id(subscription_id):
                subscription = Subscription.objects.live().for_tenant(self.tenant).filter(pk=subscription_id).first()
            if subscription is None:
                raise NotFound()
            self._subscription = subscription
        return self._subscription


@extend_schema_view(
    list=extend_schema(
        summary="List a subscription's deliveries",
        operation_id="listDeliveries",
        description="The delivery log, newest first, with every attempt. Scope: `audit:read`.",
        parameters=[SUBSCRIPTION_ID, *DELIVERY_FILTERS],
        responses={200: DeliverySerializer(many=True), **error_responses(400, 401, 403, 404)},
    ),
    retrieve=extend_schema(
        summary="Fetch a delivery",
        operation_id="getDelivery",
        description="One delivery with all its attempts. Scope: `audit:read`.",
        parameters=[SUBSCRIPTION_ID, DELIVERY_ID],
        responses={200: DeliverySerializer, **error_responses(401, 403, 404)},
    ),
    test=extend_schema(
        summary="Send a test event",
        operation_id="sendTestEvent",
        description=(
            "Creates a `webhook.test` event for this subscription only (even when it is inactive) and "
            "hands it to a worker; with `event_type`, an event of that catalog type with its `example` as "
            "`data` instead (400 if the type is unknown or has no example). Returns the new delivery. "
            "Scope: `webhooks:write`."
        ),
        parameters=[SUBSCRIPTION_ID],
        request=TestSendSerializer,
        responses={202: DeliverySerializer, **error_responses(400, 401, 403, 404)},
    ),
    redeliver=extend_schema(
        summary="Redeliver",
        operation_id="redeliverDelivery",
        description=(
            "Starts a new series of attempts for a finished delivery, with the same `webhook-id`; the new "
            "attempts are appended to its log. 409 while it is still being attempted or the subscription is "
            "disabled. Scope: `webhooks:write`."
        ),
        parameters=[SUBSCRIPTION_ID, DELIVERY_ID],
        request=None,
        responses={202: DeliverySerializer, **error_responses(400, 401, 403, 404, 409)},
    ),
)
class SubscriptionDeliveryViewSet(
    SubscriptionScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    schema = LinkedAutoSchema()
    queryset = Delivery.objects.all()
    serializer_class = DeliverySerializer
    filterset_class = DeliveryFilter
    pagination_class = KeysetPagination
    lookup_url_kwarg = "delivery_id"
    required_scopes = {
        "list": "audit:read",
        "retrieve": "audit:read",
        "test": "webhooks:write",
        "redeliver": "webhooks:write",
    }
    # Both jump the queue (the priority worker): they share the lower per-key limit.
    rate_limit_setting = {"test": "ASIRI_TEST_RATE_LIMIT", "redeliver": "ASIRI_TEST_RATE_LIMIT"}

    def get_queryset(self) -> QuerySet:
        return (
            super()
            .get_queryset()
            .filter(subscription=self.get_subscription())
            .prefetch_related(Prefetch("attempts", queryset=Attempt.objects.order_by("number")))
        )

    @action(detail=False, methods=["post"])
    def test(self, request, *args, **kwargs) -> Response:
        subscription = self.get_subscription()
        payload = TestSendSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        delivery = delivery_send_test(subscription=subscription, event_type=payload.validated_data.get("event_type"))
        return Response(DeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)

    @action(detail=True, methods=["post"])
    def redeliver(self, request, *args, **kwargs) -> Response:
        delivery = self.get_object()
        NoBodySerializer(data=request.data).is_valid(raise_exception=True)
        try:
            delivery = delivery_redeliver(delivery=delivery)
        except DeliveryConflict as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(DeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)


class EventPublishView(APIView):
    """POST /v1/events: how ASIRI's other services publish."""

    required_scopes = "events:write"
    http_method_names = ["post"]
    max_body_bytes = settings.ASIRI_MAX_EVENT_BYTES

    @extend_schema(
        summary="Publish an event",
        operation_id="publishEvent",
        description=(
            "Stores the event and creates one delivery per active subscription of this tenant whose `events` "
            "match its type and whose `filter` lets it through. A type registered in the catalog "
            "(GET /v1/event-types) must have `data` valid against its schema: a 400 lists each error with its "
            "JSON Pointer. With `ASIRI_EVENT_CATALOG=strict`, an unregistered type is a 400. The same "
            "`idempotency_key` within 24 hours answers with the first event and creates nothing; with a "
            "different `type` or `data` it is a 422 naming them. Bodies over 256 KB are refused with 413. "
            "Scope: `events:write`."
        ),
        request=EventPublishSerializer,
        responses={202: EventPublishedSerializer, **error_responses(400, 401, 403, 413, 415, 422)},
    )
    def post(self, request) -> Response:
        payload = EventPublishSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            event = event_publish(
                tenant=request.auth.tenant,
                event_type=payload.validated_data["type"],
                data=payload.validated_data["data"],
                idempotency_key=payload.validated_data.get("idempotency_key"),
            )
        except EventRejected as exc:
            return Response(exc.errors, status=status.HTTP_400_BAD_REQUEST)
        except IdempotencyConflict as exc:
            return Response(
                {"detail": str(exc), "conflicting_fields": exc.fields}, status=status.HTTP_422_UNPROCESSABLE_ENTITY
            )
        return Response(EventPublishedSerializer(event).data, status=status.HTTP_202_ACCEPTED)
