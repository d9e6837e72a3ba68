"""What the schemathesis fuzz (tests/fuzz) found, each pinned by a plain, deterministic test.

Each was a place where the OpenAPI document and the API disagreed, so a client that trusted the
document got an answer it did not promise. The document is read the way the fuzz reads it:
JSON Schema 2020-12 with formats asserted.
"""

from __future__ import annotations

import json

import jsonschema_rs
import pytest
from rest_framework.test import APIClient

from webhooks.models import Subscription

SUBSCRIPTIONS = "/v1/webhooks/subscriptions"
EVENTS = "/v1/events"


@pytest.fixture
def document(db) -> dict:
    return json.loads(APIClient().get("/v1/openapi.json").content)


def accepts(document: dict, schema: dict, value: object) -> bool:
    """Whether `schema` (a part of the document, refs and all) admits `value`."""
    root = {**schema, "components": document["components"]}
    return jsonschema_rs.Draft202012Validator(root, validate_formats=True).is_valid(value)


def request_property(document: dict, component: str, name: str) -> dict:
    return document["components"]["schemas"][component]["properties"][name]


def query_parameter(document: dict, path: str, name: str) -> dict:
    parameters = document["paths"][path]["get"]["parameters"]
    return next(p["schema"] for p in parameters if p["name"] == name)


# --- POST /v1/events: `data` with a NUL anywhere was refused, and the document allowed it --------


@pytest.mark.parametrize("data", [{"k": "a\x00b"}, {"k\x00": 1}, {"a": [{"b": ["\x00"]}]}])
def test_event_data_with_nul_is_refused_as_the_document_says(document, client_for, alice, data):
    schema = request_property(document, "EventPublishRequest", "data")
    assert not accepts(document, schema, data)
    response = client_for(alice, ["events:write"]).post(EVENTS, {"type": "a.b", "data": data}, format="json")
    assert response.status_code == 400 and "data" in response.json()


def test_event_data_the_document_allows_is_accepted(document, client_for, alice):
    data = {"s": "text", "n": -1.5e300, "i": 10**30, "b": False, "z": None, "l": [{"deep": ["x"]}], "": {}}
    assert accepts(document, request_property(document, "EventPublishRequest", "data"), data)
    response = client_for(alice, ["events:write"]).post(EVENTS, {"type": "a.b", "data": data}, format="json")
    assert response.status_code == 202, response.content


# --- POST/PATCH subscriptions: `url` "0" was refused, and the document allowed any string -------

URL_VERDICTS = [
    ("https://hooks.example.com/x?a=1#f", True),
    ("HTTPS://HOOKS.EXAMPLE.COM.:443/ünïcode/path", True),
    ("https://[2606:4700::1111]:8443/", True),
    ("https://xn--bcher-kva.example/", True),
    ("https://not_yet-in.dns.test", True),
    ("https://hooks.example.com:00443/", True),
    ("0", False),
    ("https://", False),
    ("https://bücher.example/", False),  # an IDN goes in its xn-- form
    ("https://hooks.example.com:65536/", False),
    ("https://a..b/", False),
    ("https://" + "a" * 64 + ".com/", False),
    ("https://[1:2]/", False),
    ("https://[v1.x]/", False),
    ("https://[::1]x/", False),
    ("https://user@hooks.example.com/", False),
    ("https://hooks.example.com/a\u2028b", False),
    ("https://hooks.example.com/\x85", False),
    ("http://hooks.example.com/", False),
]


@pytest.fixture
def every_name_resolves(settings) -> None:
    """About the grammar only: a name that does not resolve is refused, which no document can state."""
    settings.ASIRI_RESOLVER = "tests.support.resolver.public_resolve"


@pytest.mark.parametrize(("url", "valid"), URL_VERDICTS)
def test_the_url_grammar_is_the_one_the_document_states(document, api, every_name_resolves, url, valid):
    for component in ("SubscriptionWriteRequest", "PatchedSubscriptionWriteRequest"):
        assert accepts(document, request_property(document, component, "url"), url) is valid, component
    response = api.post(SUBSCRIPTIONS, {"url": url}, format="json")
    assert (response.status_code == 201) is valid, response.content


def test_the_documented_url_grammar_follows_the_https_setting(api, settings, every_name_resolves):
    settings.ASIRI_REQUIRE_HTTPS = False
    document = json.loads(APIClient().get("/v1/openapi.json").content)
    assert accepts(document, request_property(document, "SubscriptionWriteRequest", "url"), "http://a.example/")
    assert api.post(SUBSCRIPTIONS, {"url": "http://a.example/"}, format="json").status_code == 201


# --- GET .../deliveries: an empty filter was accepted, and the document called it a bad date ----

DELIVERIES = "/v1/webhooks/subscriptions/{subscription_id}/deliveries"


@pytest.mark.parametrize("name", ["status", "event_type", "created_after", "created_before", "limit", "cursor"])
def test_an_empty_query_parameter_is_documented_as_absent(document, api, alice, make_subscription, name):
    assert accepts(document, query_parameter(document, DELIVERIES, name), "")
    sub = make_subscription(alice)
    assert api.get(f"{SUBSCRIPTIONS}/{sub.id}/deliveries?{name}=").status_code == 200


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("2026-01-31T09:30:00Z", True),
        ("2026-01-31t09:30:00.123456789z", True),
        ("0001-01-01T00:00:00+01:00", True),  # before year 1 in UTC: a bound all the same
        ("0000-06-01T00:00:00Z", True),
        ("9999-12-31T23:59:59-05:00", True),
        ("2016-12-31T23:59:60Z", True),  # a leap second
        ("2026-01-31", False),  # ISO 8601, but not an RFC 3339 date-time
        ("2026-01-31 09:30:00Z", False),
        ("2026-01-31T09:30:00", False),
        ("20260131T093000Z", False),
        (" 2026-01-31T09:30:00Z", False),
        ("2026-02-29T00:00:00Z", False),
        ("2026-01-31T12:59:60Z", False),
        ("\uff12\uff10\uff12\uff16-01-31T09:30:00Z", False),  # full-width digits: \d would take them
    ],
)
def test_time_filters_read_exactly_rfc_3339(document, api, alice, make_subscription, value, valid):
    assert accepts(document, query_parameter(document, DELIVERIES, "created_after"), value) is valid
    sub = make_subscription(alice)
    response = api.get(f"{SUBSCRIPTIONS}/{sub.id}/deliveries", {"created_after": value, "created_before": value})
    assert (response.status_code == 200) is valid, response.content


def test_an_event_type_filter_is_not_trimmed(document, api, alice, make_subscription, make_failed_delivery):
    delivery = make_failed_delivery(make_subscription(alice))
    padded = " " + delivery.event_type + " " * 199
    assert not accepts(document, query_parameter(document, DELIVERIES, "event_type"), padded)
    response = api.get(f"{SUBSCRIPTIONS}/{delivery.subscription_id}/deliveries", {"event_type": padded})
    assert response.status_code == 400 and "event_type" in response.json()
    response = api.get(f"{SUBSCRIPTIONS}/{delivery.subscription_id}/deliveries", {"event_type": " invoice.paid"})
    assert response.json()["results"] == []


# --- rate_limit 2.0 was refused, though JSON Schema counts 2.0 as an integer ---------------------


def test_an_integral_number_is_an_integer(api, make_subscription, alice):
    sub = make_subscription(alice)
    response = api.patch(f"{SUBSCRIPTIONS}/{sub.id}", {"rate_limit": 2.0}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["rate_limit"] == 2
    assert api.patch(f"{SUBSCRIPTIONS}/{sub.id}", {"rate_limit": 2.5}, format="json").status_code == 400


# --- An Accept header with no JSON in it got an undocumented 406 ---------------------------------


def test_every_operation_documents_406(document):
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert "406" in operation["responses"], (method, path)


def test_an_unsatisfiable_accept_header_is_a_json_406(api):
    response = api.get(SUBSCRIPTIONS, HTTP_ACCEPT="text/html")
    assert response.status_code == 406
    assert response["Content-Type"] == "application/json" and "detail" in response.json()


# --- Event names and patterns were trimmed, so " invoice.paid" passed a pattern that refuses it --


@pytest.mark.parametrize("event_type", [" invoice.paid", "invoice.paid ", "invoice.paid\n"])
def test_an_event_type_is_taken_as_sent(document, client_for, alice, event_type):
    assert not accepts(document, request_property(document, "EventPublishRequest", "type"), event_type)
    response = client_for(alice, ["events:write"]).post(EVENTS, {"type": event_type, "data": {}}, format="json")
    assert response.status_code == 400 and "type" in response.json()


@pytest.mark.parametrize("pattern", [" invoice.*", "*\n", "invoice.paid\t"])
def test_an_event_pattern_is_taken_as_sent(document, api, pattern):
    assert not accepts(document, request_property(document, "SubscriptionWriteRequest", "events"), [pattern])
    response = api.post(SUBSCRIPTIONS, {"url": "https://hooks.example.com/", "events": [pattern]}, format="json")
    assert response.status_code == 400 and "events" in response.json()
    assert not Subscription.objects.exists()


def test_an_idempotency_key_is_taken_as_sent(document, client_for, alice):
    publisher = client_for(alice, ["events:write"])
    first = publisher.post(EVENTS, {"type": "a.b", "data": {}, "idempotency_key": "k"}, format="json")
    padded = publisher.post(EVENTS, {"type": "a.b", "data": {}, "idempotency_key": " k "}, format="json")
    assert padded.status_code == 202 and padded.json()["id"] != first.json()["id"]
    blank = publisher.post(EVENTS, {"type": "a.b", "data": {}, "idempotency_key": "  "}, format="json")
    assert accepts(document, request_property(document, "EventPublishRequest", "idempotency_key"), "  ")
    assert blank.status_code == 202


# --- Strings with NUL are refused everywhere; the document now says so -------------------------


@pytest.mark.parametrize(
    ("component", "name", "value"),
    [
        ("SubscriptionWriteRequest", "description", "a\x00b"),
        ("SubscriptionWriteRequest", "metadata", {"k": "\x00"}),
        ("SubscriptionWriteRequest", "metadata", {"\x00": "v"}),
        ("EventPublishRequest", "idempotency_key", "\x00"),
    ],
)
def test_nul_is_refused_as_documented(document, component, name, value):
    assert not accepts(document, request_property(document, component, name), value)


# --- `active` took "yes", 1 and "0" though the document says boolean (found reading, not fuzzing) --


@pytest.mark.parametrize("active", ["true", "yes", "on", 1, 0, "0", None])
def test_active_is_a_json_boolean(document, api, active):
    assert not accepts(document, request_property(document, "SubscriptionWriteRequest", "active"), active)
    response = api.post(SUBSCRIPTIONS, {"url": "https://hooks.example.com/", "active": active}, format="json")
    assert response.status_code == 400 and "active" in response.json()
