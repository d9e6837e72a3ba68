from __future__ import annotations

from django.db.models import Prefetch, QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from asiri.api import KeysetPagination
from asiri.openapi import error_responses
from deliveries.filters import DeliveryFilter
from deliveries.models import Attempt, Delivery
from deliveries.serializers import DeliverySerializer
from deliveries.services import delivery_send_test
from webhooks.models import Subscription
from webhooks.tenancy import TenantScopedViewSetMixin, is_well_formed_id

SUBSCRIPTION_ID = OpenApiParameter(
    "subscription_id", str, OpenApiParameter.PATH, description="A subscription id (`sub_…`)."
)


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
        parameters=[SUBSCRIPTION_ID],
        responses={200: DeliverySerializer(many=True), **error_responses(400, 401, 403, 404)},
    ),
    test=extend_schema(
        summary="Send a test event",
        operation_id="sendTestEvent",
        description=(
            "Creates a `webhook.test` event for this subscription only (even when it is inactive) and "
            "hands it to a worker. Returns the new delivery. Scope: `webhooks:write`."
        ),
        parameters=[SUBSCRIPTION_ID],
        request=None,
        responses={202: DeliverySerializer, **error_responses(401, 403, 404)},
    ),
)
class SubscriptionDeliveryViewSet(SubscriptionScopedMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    queryset = Delivery.objects.all()
    serializer_class = DeliverySerializer
    filterset_class = DeliveryFilter
    pagination_class = KeysetPagination
    required_scopes = {"list": "audit:read", "test": "webhooks:write"}

    def get_queryset(self) -> QuerySet:
        return (
            super()
            .get_queryset()
            .filter(subscription=self.get_subscription())
            .prefetch_related(Prefetch("attempts", queryset=Attempt.objects.order_by("number")))
        )

    @action(detail=False, methods=["post"])
    def test(self, request, *args, **kwargs) -> Response:
        delivery = delivery_send_test(subscription=self.get_subscription())
        return Response(DeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)
