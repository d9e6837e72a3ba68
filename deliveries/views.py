from __future__ import annotations

from django.conf import settings
from django.db.models import Prefetch, QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import KeysetPagination, NoBodySerializer
from core.openapi import NO_NUL, LinkedAutoSchema, error_responses
from deliveries.filters import DeliveryFilter, EventFilter
from deliveries.models import Attempt, Delivery, DeliveryStatus, Event, EventSkip, Recovery
from deliveries.recovery import RecoveryConflict, RecoveryRangeError, subscription_recover
from deliveries.serializers import (
    DeliveryDetailSerializer,
    DeliverySerializer,
    EventAccountSerializer,
    EventBatchPublishedSerializer,
    EventBatchSerializer,
    EventPublishedSerializer,
    EventPublishSerializer,
    EventSerializer,
    RecoverSerializer,
    RecoverySerializer,
    TestSendSerializer,
)
from deliveries.services import (
    DeliveryConflict,
    IdempotencyConflict,
    NewEvent,
    delivery_redeliver,
    delivery_send_test,
    event_publish,
    event_publish_many,
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
EVENT_ID = OpenApiParameter("event_id", str, OpenApiParameter.PATH, description="An event id (`evt_…`).")
# The filters exactly as DeliveryFilter reads them; an empty value is the same as leaving one out.
_EMPTY = {"type": "string", "maxLength": 0}


def _time_range(what: str) -> list[OpenApiParameter]:
    """created_after and created_before, as the RFC 3339 filters read them."""
    moment = {"anyOf": [{"type": "string", "format": "date-time"}, _EMPTY]}
    return [
        OpenApiParameter("created_after", moment, description=f"Only {what} at or after this RFC 3339 date-time."),
        OpenApiParameter("created_before", moment, description=f"Only {what} before this RFC 3339 date-time."),
    ]


DELIVERY_FILTERS = [
    OpenApiParameter("status", enum=[*DeliveryStatus.values, ""], description="Only deliveries in this state."),
    OpenApiParameter(
        "event_type",
        {"type": "string", "maxLength": 200, "pattern": NO_NUL},
        description="Only deliveries of this event type (exactly).",
    ),
    *_time_range("deliveries created"),
]


EVENT_FILTERS = [
    OpenApiParameter(
        "type",
        {"type": "string", "maxLength": 200, "pattern": NO_NUL},
        description="Only events of this type (exactly).",
    ),
    *_time_range("events published"),
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
        description=(
            "One delivery with all its attempts, each with the response's body excerpt and a few of its "
            "headers (the list leaves those out). Scope: `audit:read`."
        ),
        parameters=[SUBSCRIPTION_ID, DELIVERY_ID],
        responses={200: DeliveryDetailSerializer, **error_responses(401, 403, 404)},
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
            "Sends the delivery again now, with the same `webhook-id`; the new attempts are appended to its "
            "log. A finished delivery (`succeeded`, `failed`) starts a new series of attempts; a `pending` or "
            "`retrying` one has its scheduled attempt made at once instead, in the same series (the scheduled "
            "retry no longer happens). 409 while an attempt is in flight (a worker is sending it right now) "
            "or when the subscription is disabled. Scope: `webhooks:write`."
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
            .with_waiting_on()
            .prefetch_related(Prefetch("attempts", queryset=Attempt.objects.order_by("number")))
        )

    def get_serializer_class(self) -> type[DeliverySerializer]:
        return DeliveryDetailSerializer if self.action == "retrieve" else DeliverySerializer

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


RECOVERY_ID = OpenApiParameter("recovery_id", str, OpenApiParameter.PATH, description="A recovery id (`rcv_…`).")


@extend_schema_view(
    recover=extend_schema(
        summary="Recover a time range",
        operation_id="recoverSubscription",
        description=(
            "Sends again every delivery of this subscription created in [`since`, `until`) that `failed` (a new "
            "series with the same `webhook-id`), and delivers every event of that range its `events` match but "
            "that it never got (published while it was paused, disabled or over a limit). Deliveries pending, "
            "retrying or succeeded are never touched, so recovering a range twice sends nothing twice. `since` "
            "may be at most 14 days ago; `until` defaults to now. Runs in a worker: the answer is the queued "
            "recovery, to fetch until its `status` is `done`. 409 while the subscription is paused or disabled. "
            "Scope: `webhooks:write`."
        ),
        parameters=[SUBSCRIPTION_ID],
        request=RecoverSerializer,
        responses={202: RecoverySerializer, **error_responses(400, 401, 403, 404, 409, 413, 415)},
    ),
    retrieve=extend_schema(
        summary="Fetch a recovery",
        operation_id="getRecovery",
        description="A recovery and, once it has run, how many deliveries it sent again. Scope: `webhooks:read`.",
        parameters=[SUBSCRIPTION_ID, RECOVERY_ID],
        responses={200: RecoverySerializer, **error_responses(401, 403, 404)},
    ),
)
class SubscriptionRecoveryViewSet(SubscriptionScopedMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    schema = LinkedAutoSchema()
    queryset = Recovery.objects.all()
    serializer_class = RecoverySerializer
    lookup_url_kwarg = "recovery_id"
    required_scopes = {"recover": "webhooks:write", "retrieve": "webhooks:read"}

    def get_queryset(self) -> QuerySet:
        return super().get_queryset().filter(subscription=self.get_subscription())

    @action(detail=False, methods=["post"])
    def recover(self, request, *args, **kwargs) -> Response:
        payload = RecoverSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            recovery = subscription_recover(subscription=self.get_subscription(), **payload.validated_data)
        except RecoveryRangeError as exc:
            raise ValidationError({exc.field: [str(exc)]}) from None
        except RecoveryConflict as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(RecoverySerializer(recovery).data, status=status.HTTP_202_ACCEPTED)


@extend_schema_view(
    list=extend_schema(
        summary="List events",
        operation_id="listEvents",
        description="The tenant's events, newest first. Scope: `audit:read`.",
        parameters=EVENT_FILTERS,
        responses={200: EventSerializer(many=True), **error_responses(400, 401, 403)},
    ),
    retrieve=extend_schema(
        summary="Account for an event",
        operation_id="getEvent",
        description=(
            "The event and what became of it: a delivery per subscription that got it, and every live "
            "subscription whose `events` matched but got none, with the reason as it stood when the event was "
            "published. Together the two lists account for every subscription that wanted it. Scope: `audit:read`."
        ),
        parameters=[EVENT_ID],
        responses={200: EventAccountSerializer, **error_responses(401, 403, 404)},
    ),
)
class EventViewSet(TenantScopedViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """/v1/events: how ASIRI's other services publish (POST), and the tenant's account of every event (GET)."""

    schema = LinkedAutoSchema()
    queryset = Event.objects.all()
    filterset_class = EventFilter
    pagination_class = KeysetPagination
    lookup_url_kwarg = "event_id"
    required_scopes = {"list": "audit:read", "retrieve": "audit:read", "publish": "events:write"}
    max_body_bytes = settings.ASIRI_MAX_EVENT_BYTES

    def get_queryset(self) -> QuerySet:
        queryset = super().get_queryset()
        if self.action == "retrieve":
            return queryset.prefetch_related(
                Prefetch("deliveries", queryset=Delivery.objects.order_by("created_at", "id")),
                Prefetch("skips", queryset=EventSkip.objects.order_by("subscription_id")),
            )
        return queryset

    def get_serializer_class(self):
        return EventAccountSerializer if self.action == "retrieve" else EventSerializer

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
            "Types starting `asiri.` or `webhook.` are ASIRI's own: 400. Scope: `events:write`."
        ),
        request=EventPublishSerializer,
        responses={202: EventPublishedSerializer, **error_responses(400, 401, 403, 413, 415, 422)},
    )
    def publish(self, request) -> Response:
        payload = EventPublishSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            event = event_publish(
                tenant=request.auth.tenant,
                event_type=payload.validated_data["type"],
                data=payload.validated_data["data"],
                idempotency_key=payload.validated_data.get("idempotency_key"),
                ordering_key=payload.validated_data.get("ordering_key"),
            )
        except EventRejected as exc:
            return Response(exc.errors, status=status.HTTP_400_BAD_REQUEST)
        except IdempotencyConflict as exc:
            return _idempotency_conflict(exc)
        return Response(EventPublishedSerializer(event).data, status=status.HTTP_202_ACCEPTED)


def _idempotency_conflict(exc: IdempotencyConflict) -> Response:
    return Response({"detail": str(exc), "conflicting_fields": exc.fields}, status=status.HTTP_422_UNPROCESSABLE_ENTITY)


class EventBatchView(APIView):
    """POST /v1/events/batch: up to 100 events in one request and one transaction, for bulk publishers."""

    required_scopes = "events:write"
    http_method_names = ["post"]

    @extend_schema(
        summary="Publish events in a batch",
        operation_id="publishEvents",
        description=(
            "Publishes 1 to 100 events as `POST /v1/events` would, validated all or nothing (a 400 names each bad "
            "event by its index) and stored in one transaction: each `idempotency_key` behaves as on the single "
            "call, and events with an `ordering_key` are sent in the order given. Answers with one result per "
            "event, in order. Scope: `events:write`."
        ),
        request=EventBatchSerializer,
        responses={202: EventBatchPublishedSerializer, **error_responses(400, 401, 403, 413, 415, 422)},
    )
    def post(self, request) -> Response:
        payload = EventBatchSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            events = event_publish_many(
                tenant=request.auth.tenant,
                events=[
                    NewEvent(e["type"], e["data"], e.get("idempotency_key"), e.get("ordering_key"))
                    for e in payload.validated_data["events"]
                ],
            )
        except EventRejected as exc:
            return Response({"events": {str(exc.index): exc.errors}}, status=status.HTTP_400_BAD_REQUEST)
        except IdempotencyConflict as exc:
            return _idempotency_conflict(exc)
        return Response({"results": EventPublishedSerializer(events, many=True).data}, status=status.HTTP_202_ACCEPTED)
