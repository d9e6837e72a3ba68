"""The event catalog: its API, schema validation at publish (open and strict), strict subscription
patterns, deprecated types, typed test sends' refusals, the loader command and the admin."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from deliveries.models import Delivery, Event
from webhooks.models import EventType

EVENTS = "/v1/events"
SUBSCRIPTIONS = "/v1/webhooks/subscriptions"
SHIPPED = Path(__file__).resolve().parents[2] / "webhooks" / "fixtures" / "event_types.json"
INVOICE_SCHEMA = {
    "type": "object",
    "required": ["invoice", "amount"],
    "properties": {"invoice": {"type": "string"}, "amount": {"type": "integer", "minimum": 0}},
}


@pytest.fixture
def catalog(db) -> None:
    EventType.objects.create(name="invoice.paid", schema=INVOICE_SCHEMA, example={"invoice": "in_1", "amount": 1})
    EventType.objects.create(name="invoice.legacy", schema={"type": "object"}, deprecated=True)
    EventType.objects.create(name="customer.created", schema={"type": "object"})


@pytest.fixture
def strict(settings) -> None:
    settings.ASIRI_EVENT_CATALOG = "strict"


@pytest.fixture
def publisher(alice, client_for):
    return client_for(alice, ["events:write"])


def publish(client, event_type: str, data: dict, **extra):
    return client.post(EVENTS, {"type": event_type, "data": data, **extra}, format="json")


# --- the API ---------------------------------------------------------------------------------------------
def test_it_lists_the_catalog_by_name_in_pages(api, catalog):
    first = api.get("/v1/event-types?limit=2").json()
    assert [t["name"] for t in first["results"]] == ["customer.created", "invoice.legacy"]
    assert first["previous"] is None
    second = api.get(first["next"]).json()
    assert [t["name"] for t in second["results"]] == ["invoice.paid"]
    assert second["next"] is None
    back = api.get(second["previous"]).json()
    assert [t["name"] for t in back["results"]] == ["customer.created", "invoice.legacy"]


def test_it_fetches_one_type_with_its_schema_and_example(api, catalog):
    body = api.get("/v1/event-types/invoice.paid").json()
    assert body["schema"] == INVOICE_SCHEMA and body["example"] == {"invoice": "in_1", "amount": 1}
    assert body["deprecated"] is False
    assert api.get("/v1/event-types/invoice.nope").status_code == 404


def test_a_cursor_it_did_not_sign_is_a_400(api, catalog):
    assert api.get("/v1/event-types?cursor=forged").status_code == 400


# --- publishing ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["open", "strict"])
def test_it_validates_a_registered_types_data_with_pointers(mode, settings, publisher, catalog):
    settings.ASIRI_EVENT_CATALOG = mode
    response = publish(publisher, "invoice.paid", {"invoice": 7, "amount": -1, "extra": True})
    assert response.status_code == 400
    assert response.json() == {
        "data": [
            {"pointer": "/amount", "message": "-1 is less than the minimum of 0"},
            {"pointer": "/invoice", "message": '7 is not of type "string"'},
        ]
    }
    missing = publish(publisher, "invoice.paid", {"invoice": "in_1"}).json()
    assert missing == {"data": [{"pointer": "", "message": '"amount" is a required property'}]}
    assert Event.objects.count() == 0


def test_valid_data_is_published(publisher, alice, make_subscription, catalog, django_capture_on_commit_callbacks):
    make_subscription(alice, events=["invoice.*"])
    with django_capture_on_commit_callbacks(execute=False):
        response = publish(publisher, "invoice.paid", {"invoice": "in_1", "amount": 4200})
    assert response.status_code == 202 and response.json()["deliveries"] == 1


def test_an_edited_schema_applies_at_once(publisher, catalog, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        assert publish(publisher, "invoice.paid", {"invoice": "in_1", "amount": 1}).status_code == 202
    paid = EventType.objects.get(pk="invoice.paid")
    paid.schema = {**INVOICE_SCHEMA, "properties": {**INVOICE_SCHEMA["properties"], "amount": {"maximum": 0}}}
    paid.save()
    assert publish(publisher, "invoice.paid", {"invoice": "in_1", "amount": 1}).status_code == 400


def test_open_mode_publishes_unregistered_types(publisher, catalog, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        assert publish(publisher, "order.shipped", {"anything": 1}).status_code == 202


def test_strict_mode_refuses_unregistered_types(strict, publisher, catalog):
    response = publish(publisher, "order.shipped", {})
    assert response.status_code == 400 and "Not a registered event type" in response.json()["type"][0]
    assert Event.objects.count() == 0


# --- subscriptions in strict mode ------------------------------------------------------------------------
@pytest.mark.parametrize("patterns", [["invoice.payed"], ["order.*"], ["invoice.paid", "invoic.*"]])
def test_strict_mode_refuses_a_pattern_that_matches_nothing(strict, api, catalog, patterns):
    response = api.post(SUBSCRIPTIONS, {"url": "https://hooks.example.com/a", "events": patterns}, format="json")
    assert response.status_code == 400
    (bad,) = [p for p in patterns if p not in ("invoice.paid",)]
    assert response.json()["events"] == [f"{bad!r} matches no registered event type (GET /v1/event-types lists them)."]


@pytest.mark.parametrize("patterns", [["invoice.paid"], ["invoice.*"], ["*"], ["customer.created", "invoice.*"]])
def test_strict_mode_takes_patterns_that_match_a_type(strict, api, catalog, patterns):
    response = api.post(SUBSCRIPTIONS, {"url": "https://hooks.example.com/a", "events": patterns}, format="json")
    assert response.status_code == 201, response.content


def test_strict_mode_checks_patterns_on_patch_too(strict, api, alice, make_subscription, catalog):
    subscription = make_subscription(alice, events=["invoice.paid"])
    response = api.patch(f"{SUBSCRIPTIONS}/{subscription.id}", {"events": ["invoice.payed"]}, format="json")
    assert response.status_code == 400 and "'invoice.payed'" in response.json()["events"][0]


def test_open_mode_takes_any_pattern(api, catalog):
    response = api.post(
        SUBSCRIPTIONS, {"url": "https://hooks.example.com/a", "events": ["invoice.payed"]}, format="json"
    )
    assert response.status_code == 201


def test_deprecated_types_are_accepted_and_flagged(strict, api, alice, make_subscription, catalog):
    response = api.post(
        SUBSCRIPTIONS, {"url": "https://hooks.example.com/a", "events": ["invoice.legacy"]}, format="json"
    )
    assert response.status_code == 201 and response.json()["deprecated_events"] == ["invoice.legacy"]
    make_subscription(alice, events=["customer.created"])
    listed = {s["events"][0]: s["deprecated_events"] for s in api.get(SUBSCRIPTIONS).json()["results"]}
    assert listed == {"invoice.legacy": ["invoice.legacy"], "customer.created": []}
    wildcard = api.post(SUBSCRIPTIONS, {"url": "https://hooks.example.com/b", "events": ["invoice.*"]}, format="json")
    assert wildcard.json()["deprecated_events"] == ["invoice.legacy"]


# --- typed test sends: what is refused (the send itself: tests/deliveries/test_worker_integration.py) ---------
def test_a_typed_test_send_uses_the_types_example(api, alice, make_subscription, catalog):
    subscription = make_subscription(alice)
    response = api.post(f"{SUBSCRIPTIONS}/{subscription.id}/test", {"event_type": "invoice.paid"}, format="json")
    assert response.status_code == 202 and response.json()["event_type"] == "invoice.paid"
    event = Delivery.objects.get(pk=response.json()["id"]).event
    assert (event.type, event.data) == ("invoice.paid", {"invoice": "in_1", "amount": 1})


@pytest.mark.parametrize(
    ("event_type", "message"),
    [("invoice.nope", "Not a registered event type"), ("customer.created", "has no example")],
)
def test_a_typed_test_send_needs_a_registered_type_with_an_example(
    api, alice, make_subscription, catalog, event_type, message
):
    subscription = make_subscription(alice)
    response = api.post(f"{SUBSCRIPTIONS}/{subscription.id}/test", {"event_type": event_type}, format="json")
    assert response.status_code == 400 and message in response.json()["event_type"][0]
    assert Delivery.objects.count() == 0


def test_a_test_send_without_a_body_is_webhook_test(api, alice, make_subscription):
    subscription = make_subscription(alice)
    response = api.post(f"{SUBSCRIPTIONS}/{subscription.id}/test")
    assert response.status_code == 202 and response.json()["event_type"] == "webhook.test"


# --- the loader ------------------------------------------------------------------------------------------
def load(path: Path, *args: str) -> str:
    out = StringIO()
    call_command("load_event_types", str(path), *args, stdout=out)
    return out.getvalue()


def test_the_shipped_catalog_loads_and_the_readme_walk_through_is_valid_against_it(
    db, publisher, alice, django_capture_on_commit_callbacks
):
    output = load(SHIPPED)
    assert "created   invoice.paid" in output
    with django_capture_on_commit_callbacks(execute=False):
        response = publish(publisher, "invoice.paid", {"invoice": "in_123", "amount": 4200})
    assert response.status_code == 202
    for entry in json.loads(SHIPPED.read_text()):
        if entry.get("example") is not None:
            assert not EventType.objects.get(pk=entry["name"]).deprecated


def test_loading_twice_changes_nothing_and_an_edit_is_an_update(db, tmp_path):
    entries = [{"name": "a.b", "schema": {"type": "object"}, "example": {}}, {"name": "c.d", "description": "x"}]
    path = tmp_path / "types.json"
    path.write_text(json.dumps(entries))
    assert load(path).splitlines()[-1] == "2 created, 0 updated, 0 unchanged, 0 removed"
    stamp = EventType.objects.get(pk="a.b").updated_at
    assert load(path).splitlines()[-1] == "0 created, 0 updated, 2 unchanged, 0 removed"
    assert EventType.objects.get(pk="a.b").updated_at == stamp
    entries[1]["deprecated"] = True
    path.write_text(json.dumps(entries))
    assert load(path).splitlines()[-1] == "0 created, 1 updated, 1 unchanged, 0 removed"
    exported = [
        {"name": t.name, "description": t.description, "schema": t.schema, "example": t.example}
        for t in EventType.objects.order_by("name")
    ]
    assert exported[0] == {"name": "a.b", "description": "", "schema": {"type": "object"}, "example": {}}
    assert EventType.objects.get(pk="c.d").deprecated is True


def test_prune_removes_the_types_the_file_does_not_list(db, tmp_path):
    EventType.objects.create(name="old.one")
    path = tmp_path / "types.json"
    path.write_text(json.dumps([{"name": "a.b"}]))
    load(path)
    assert EventType.objects.filter(pk="old.one").exists()
    output = load(path, "--prune")
    assert "removed   old.one" in output
    assert list(EventType.objects.values_list("name", flat=True)) == ["a.b"]


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([{"name": "a.b", "schema": {"type": "objekt"}}], "Not a valid JSON Schema 2020-12"),
        ([{"name": "a.b", "schema": {"type": "object", "required": ["x"]}, "example": {}}], '"x" is a required'),
        ([{"name": "a.*"}], "not an event name"),
        ([{"name": "a.b", "evnets": []}], "unknown fields evnets"),
        ([{"name": "a.b"}, {"name": "a.b"}], "listed twice"),
        ({"name": "a.b"}, "JSON array"),
        ([{"name": "a.b", "example": {"x": "\x00"}}], "example: Must not contain NUL"),
        ([{"name": "a.b", "description": "a\x00b"}], "description must be a string without NUL"),
        ('[{"name": "a.b", "example": {"x": NaN}}]', "NaN is not JSON"),
    ],
)
def test_a_bad_file_is_refused_with_the_reason_and_changes_nothing(db, tmp_path, entries, message):
    EventType.objects.create(name="keep.me")
    path = tmp_path / "types.json"
    path.write_text(
        entries.replace("[", '[{"name": "fine.one"}, ', 1)
        if isinstance(entries, str)
        else json.dumps([{"name": "fine.one"}, *entries] if isinstance(entries, list) else entries)
    )
    with pytest.raises(CommandError, match="Nothing was changed") as caught:
        load(path, "--prune")
    assert message in str(caught.value)
    assert list(EventType.objects.values_list("name", flat=True)) == ["keep.me"]


def test_a_schema_with_a_remote_reference_is_refused_without_fetching_it(db, tmp_path, connections):
    path = tmp_path / "types.json"
    path.write_text(json.dumps([{"name": "a.b", "schema": {"$ref": "https://schemas.example.com/a.json"}}]))
    with pytest.raises(CommandError, match="remote references are not fetched"):
        load(path)
    assert connections.hosts == []


def test_a_publish_reads_each_live_subscription_as_the_orm_would(alice, charlie, make_subscription):
    """events_check_and_subscriptions writes the live(), for_tenant() query out: same rows, same values."""
    from django.utils import timezone

    from webhooks.catalog import events_check_and_subscriptions
    from webhooks.models import MATCHING_FIELDS, Subscription

    make_subscription(alice, events=["invoice.*"])
    make_subscription(alice, events=["*"], filter={"data": {"amount": {"$gte": 10}}})
    paused = make_subscription(alice)
    Subscription.objects.filter(pk=paused.pk).update(active=False, disabled_reason="endpoint gone")
    gone = make_subscription(alice)
    Subscription.objects.filter(pk=gone.pk).update(deleted_at=timezone.now())
    make_subscription(charlie)
    now, live = events_check_and_subscriptions([("invoice.paid", {})], alice)
    expected = Subscription.objects.live().for_tenant(alice).values(*MATCHING_FIELDS)
    assert sorted(({f: getattr(s, f) for f in MATCHING_FIELDS} for s in live), key=lambda s: s["id"]) == sorted(
        expected, key=lambda s: s["id"]
    )
    assert len(live) == 3 and now is not None


def test_a_tenant_without_subscriptions_reads_none(alice, catalog):
    from webhooks.catalog import events_check_and_subscriptions

    now, live = events_check_and_subscriptions([("invoice.paid", {"invoice": "in_1", "amount": 1})], alice)
    assert live == [] and now is not None
