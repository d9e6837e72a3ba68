from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from asiri.dashboard import dashboard
from asiri.errors import api_not_found
from deliveries.views import EventBatchView, EventViewSet, SubscriptionDeliveryViewSet, SubscriptionRecoveryViewSet
from webhooks.catalog_views import EventTypeViewSet, FilterTestView
from webhooks.views import SubscriptionViewSet

router = SimpleRouter(trailing_slash=False)
router.register("webhooks/subscriptions", SubscriptionViewSet, basename="subscription")
router.register("event-types", EventTypeViewSet, basename="event-type")

subscription_children = [
    path("deliveries", SubscriptionDeliveryViewSet.as_view({"get": "list"}), name="subscription-deliveries"),
    path("deliveries/<str:delivery_id>", SubscriptionDeliveryViewSet.as_view({"get": "retrieve"}), name="delivery"),
    path(
        "deliveries/<str:delivery_id>/redeliver",
        SubscriptionDeliveryViewSet.as_view({"post": "redeliver"}),
        name="delivery-redeliver",
    ),
    path("test", SubscriptionDeliveryViewSet.as_view({"post": "test"}), name="subscription-test"),
    path("recover", SubscriptionRecoveryViewSet.as_view({"post": "recover"}), name="subscription-recover"),
    path(
        "recoveries/<str:recovery_id>",
        SubscriptionRecoveryViewSet.as_view({"get": "retrieve"}),
        name="subscription-recovery",
    ),
]

urlpatterns = [
    path("v1/webhooks/filter-test", FilterTestView.as_view(), name="filter-test"),
    path("v1/", include(router.urls)),
    path("v1/webhooks/subscriptions/<str:subscription_id>/", include(subscription_children)),
    path("v1/events", EventViewSet.as_view({"get": "list", "post": "publish"}), name="events"),
    path("v1/events/batch", EventBatchView.as_view(), name="events-batch"),
    path("v1/events/<str:event_id>", EventViewSet.as_view({"get": "retrieve"}), name="event"),
    path("v1/openapi.json", SpectacularJSONAPIView.as_view(), name="openapi"),
    re_path(r"^v1(?:/|$)", api_not_found),  # JSON, not Django's HTML page, for any other path under /v1, any method
    # "/" (and the admin's "View site") is the API reference, not a 404 page.
    path("", RedirectView.as_view(url="/docs", permanent=False), name="home"),
    path("docs", SpectacularSwaggerView.as_view(url_name="openapi"), name="docs"),
    path("admin/dashboard/", dashboard, name="admin-dashboard"),
    path("admin/", admin.site.urls),
]

handler400 = "asiri.errors.bad_request"
handler403 = "asiri.errors.permission_denied"
handler404 = "asiri.errors.not_found"
handler500 = "asiri.errors.server_error"
