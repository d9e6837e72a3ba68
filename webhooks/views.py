from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from core.api import NoBodySerializer, SubscriptionPagination
from core.openapi import LinkedAutoSchema, error_responses
from tenants.tenancy import TenantScopedViewSetMixin
from webhooks.models import Subscription
from webhooks.serializers import SubscriptionCreatedSerializer, SubscriptionSerializer, SubscriptionWriteSerializer
from webhooks.services import (
    HeaderValueMissing,
    SubscriptionLimitReached,
    subscription_create,
    subscription_delete,
    subscription_rotate_secret,
    subscription_update,
)

SUBSCRIPTION_ID = OpenApiParameter("id", str, OpenApiParameter.PATH, description="A subscription id (`sub_…`).")


@extend_schema_view(
    list=extend_schema(
        summary="List subscriptions",
        operation_id="listSubscriptions",
        description="Newest first. Scope: `webhooks:read`.",
        responses={200: SubscriptionSerializer(many=True), **error_responses(401, 403, 400)},
    ),
    retrieve=extend_schema(
        summary="Fetch a subscription",
        operation_id="getSubscription",
        parameters=[SUBSCRIPTION_ID],
        description="Scope: `webhooks:read`.",
        responses={200: SubscriptionSerializer, **error_responses(401, 403, 404)},
    ),
    create=extend_schema(
        summary="Create a subscription",
        operation_id="createSubscription",
        description=(
            "Scope: `webhooks:write`. The response is the only one that shows `secret`. 409 when the tenant "
            "already has as many subscriptions as it may (`detail` names the limit)."
        ),
        request=SubscriptionWriteSerializer,
        responses={201: SubscriptionCreatedSerializer, **error_responses(400, 401, 403, 409, 413, 415)},
    ),
    partial_update=extend_schema(
        summary="Update a subscription",
        operation_id="updateSubscription",
        parameters=[SUBSCRIPTION_ID],
        description="Scope: `webhooks:write`. Send only the fields to change; a rejected "
        "update changes nothing. `active: true` clears `disabled_reason`. `headers` replaces the whole "
        "object: give a write-only header as null to keep its value.",
        request=SubscriptionWriteSerializer(partial=True),
        responses={200: SubscriptionSerializer, **error_responses(400, 401, 403, 404, 413, 415)},
    ),
    destroy=extend_schema(
        summary="Delete a subscription",
        operation_id="deleteSubscription",
        parameters=[SUBSCRIPTION_ID],
        description="Scope: `webhooks:write`. It stops receiving at once and answers 404 from then on.",
        responses={204: OpenApiResponse(description="Deleted."), **error_responses(401, 403, 404)},
    ),
    rotate_secret=extend_schema(
        summary="Rotate the signing secret",
        operation_id="rotateSubscriptionSecret",
        parameters=[SUBSCRIPTION_ID],
        description=(
            "Scope: `webhooks:write`. Returns the subscription with its new `secret` (shown this once). For the "
            "next 24 hours every send carries signatures with both the new and the old secret."
        ),
        request=None,
        responses={200: SubscriptionCreatedSerializer, **error_responses(400, 401, 403, 404)},
    ),
)
class SubscriptionViewSet(
    TenantScopedViewSetMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    schema = LinkedAutoSchema()
    queryset = Subscription.objects.live()
    serializer_class = SubscriptionSerializer
    pagination_class = SubscriptionPagination
    required_scopes = {
        "list": "webhooks:read",
        "retrieve": "webhooks:read",
        "create": "webhooks:write",
        "partial_update": "webhooks:write",
        "destroy": "webhooks:write",
        "rotate_secret": "webhooks:write",
    }

    def create(self, request, *args, **kwargs) -> Response:
        payload = SubscriptionWriteSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            subscription = subscription_create(tenant=self.tenant, **payload.validated_data)
        except SubscriptionLimitReached as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        except HeaderValueMissing as exc:
            return Response({"headers": [str(exc)]}, status=status.HTTP_400_BAD_REQUEST)
        return Response(SubscriptionCreatedSerializer(subscription).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request, *args, **kwargs) -> Response:
        subscription = self.get_object()
        payload = SubscriptionWriteSerializer(data=request.data, partial=True)
        payload.is_valid(raise_exception=True)
        try:
            subscription_update(subscription=subscription, changes=dict(payload.validated_data))
        except HeaderValueMissing as exc:
            return Response({"headers": [str(exc)]}, status=status.HTTP_400_BAD_REQUEST)
        return Response(SubscriptionSerializer(subscription).data)

    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request, *args, **kwargs) -> Response:
        subscription = self.get_object()
        NoBodySerializer(data=request.data).is_valid(raise_exception=True)
        subscription_rotate_secret(subscription=subscription)
        return Response(SubscriptionCreatedSerializer(subscription).data)

    def perform_destroy(self, instance: Subscription) -> None:
        subscription_delete(subscription=instance)
