from __future__ import annotations

import json

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from drf_spectacular.validation import validate_schema
from rest_framework.views import APIView

CONTRACT = {
    ("get", "/v1/webhooks/subscriptions"),
    ("post", "/v1/webhooks/subscriptions"),
    ("get", "/v1/webhooks/subscriptions/{id}"),
    ("patch", "/v1/webhooks/subscriptions/{id}"),
    ("delete", "/v1/webhooks/subscriptions/{id}"),
    ("get", "/v1/webhooks/subscriptions/{subscription_id}/deliveries"),
    ("post", "/v1/webhooks/subscriptions/{subscription_id}/test"),
    # beyond the seven: the delivery engine's operations
    ("post", "/v1/events"),
    ("post", "/v1/webhooks/subscriptions/{id}/rotate-secret"),
    ("get", "/v1/webhooks/subscriptions/{subscription_id}/deliveries/{delivery_id}"),
    ("post", "/v1/webhooks/subscriptions/{subscription_id}/deliveries/{delivery_id}/redeliver"),
    # accounting for every event
    ("get", "/v1/events"),
    ("get", "/v1/events/{event_id}"),
    # publishing in bulk
    ("post", "/v1/events/batch"),
    # issue #12: recover a time range
    ("post", "/v1/webhooks/subscriptions/{subscription_id}/recover"),
    ("get", "/v1/webhooks/subscriptions/{subscription_id}/recoveries/{recovery_id}"),
    # the event catalog and payload filters (issue #13)
    ("get", "/v1/event-types"),
    ("get", "/v1/event-types/{name}"),
    ("post", "/v1/webhooks/filter-test"),
}


@pytest.fixture(scope="module")
def document(django_db_blocker) -> dict:
    from rest_framework.test import APIClient

    with django_db_blocker.unblock():
        response = APIClient().get("/v1/openapi.json")
    assert response.status_code == 200
    return json.loads(response.content)


def served_operations() -> set[tuple[str, str]]:
    """(method, route) for every DRF view the URL conf serves under /v1/."""
    found = set()

    def walk(patterns, prefix: str) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                view_class = getattr(pattern.callback, "cls", None)
                route = prefix + str(pattern.pattern)
                if not (view_class and issubclass(view_class, APIView)) or not route.startswith("v1/"):
                    continue
                if route == "v1/openapi.json":
                    continue
                actions = getattr(pattern.callback, "actions", None) or {
                    m: m for m in view_class.http_method_names if hasattr(view_class, m) and m != "options"
                }
                for method in actions:
                    if method != "head":  # Django answers HEAD wherever GET is served
                        found.add((method, route))

    walk(get_resolver().url_patterns, "")
    return found


def test_it_is_valid_openapi_3(document):
    assert document["openapi"].startswith("3.")
    validate_schema(document)


def test_it_is_generated_without_a_warning(tmp_path):
    # A warning names something a client generator gets wrong: a name collision gave `Status20bEnum`.
    from django.core.management import call_command

    call_command("spectacular", "--fail-on-warn", "--file", str(tmp_path / "openapi.yaml"))


def test_its_enums_have_the_names_clients_are_generated_with(document):
    enums = {name for name, schema in document["components"]["schemas"].items() if "enum" in schema}
    assert {"DeliveryStatusEnum", "RecoveryStatusEnum"} <= enums


def test_it_lists_exactly_the_operations_the_url_conf_serves(document):
    documented = {(m, p) for p, ops in document["paths"].items() for m in ops}
    assert documented == CONTRACT
    assert len(served_operations()) == len(CONTRACT)


def test_every_operation_names_its_scope_and_errors(document):
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert operation["security"] == [{"ApiKey": []}], (method, path)
            assert "Scope: `" in operation["description"], (method, path)
            assert {"401", "403"} <= set(operation["responses"]), (method, path)
            if "{" in path:
                assert "404" in operation["responses"], (method, path)
    assert document["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"


def test_create_documents_the_409_at_the_limit(document):
    create = document["paths"]["/v1/webhooks/subscriptions"]["post"]
    assert "409" in create["responses"] and "409 when the tenant" in create["description"]


def test_it_states_how_deep_event_data_may_nest(document):
    data = document["components"]["schemas"]["EventPublishRequest"]["properties"]["data"]
    assert "nested at most 64 levels deep" in data["description"]


def test_the_docs_page_is_served_without_a_cdn(client):
    response = client.get("/docs")
    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html and "/static/drf_spectacular_sidecar/" in html
    assert "cdn." not in html and "unpkg" not in html and "jsdelivr" not in html
