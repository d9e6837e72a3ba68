"""GET /v1/events and /v1/events/{id}: every subscription that wanted an event is accounted for."""

from __future__ import annotations

from datetime import timedelta

import pytest

from deliveries.models import Event, EventSkip
from deliveries.services import event_publish

SCOPES = ["audit:read", "events:write"]


@pytest.fixture
def events_api(alice, client_for):
    return client_for(alice, SCOPES)


@pytest.fixture
def five_kinds(alice, make_subscription):
    """A live subscription of each kind the accounting has to tell apart, all but two wanting invoice.paid."""
    deleted = make_subscription(alice, events=["invoice.*"])
    deleted.soft_delete()
    return {
        "active": make_subscription(alice, events=["invoice.*"]),
        "paused": make_subscription(alice, events=["*"], active=False),
        "disabled": make_subscription(
            alice, events=["invoice.paid"], active=False, disabled_reason="Disabled automatically: 410 Gone."
        ),
        "other type": make_subscription(alice, events=["customer.created"]),
        "other type, paused": make_subscription(alice, events=["customer.*"], active=False),
        "deleted": deleted,
    }


def test_it_accounts_for_every_subscription_whose_patterns_matched(events_api, five_kinds):
    published = events_api.post("/v1/events", {"type": "invoice.paid", "data": {"n": 1}}, format="json").json()

    response = events_api.get(f"/v1/events/{published['id']}")

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == published["id"] and body["type"] == "invoice.paid" and body["data"] == {"n": 1}
    assert [(d["subscription_id"], d["status"]) for d in body["deliveries"]] == [(five_kinds["active"].id, "pending")]
    assert body["deliveries"][0]["delivery_id"].startswith("dlv_")
    assert sorted((s["subscription_id"], s["reason"]) for s in body["skipped"]) == sorted(
        [(five_kinds["paused"].id, "paused"), (five_kinds["disabled"].id, "disabled")]
    )
    accounted = {d["subscription_id"] for d in body["deliveries"]} | {s["subscription_id"] for s in body["skipped"]}
    for kind in ("other type", "other type, paused", "deleted"):
        assert five_kinds[kind].id not in accounted, kind


def test_the_reason_is_the_one_at_publish_time(events_api, five_kinds):
    published = events_api.post("/v1/events", {"type": "invoice.paid", "data": {}}, format="json").json()
    paused = five_kinds["paused"]
    paused.active = False
    paused.disabled_reason = "Disabled automatically: no successful delivery for 120 hours."
    paused.save()

    skipped = events_api.get(f"/v1/events/{published['id']}").json()["skipped"]

    assert {s["subscription_id"]: s["reason"] for s in skipped}[paused.id] == "paused"


def test_a_publish_that_skips_nothing_writes_no_skip(alice, make_subscription):
    make_subscription(alice, events=["invoice.*"])
    event_publish(tenant=alice, event_type="invoice.paid", data={})
    assert EventSkip.objects.count() == 0


def test_another_tenants_event_is_a_404(events_api, charlie, make_subscription):
    make_subscription(charlie, active=False)
    theirs = event_publish(tenant=charlie, event_type="invoice.paid", data={})

    response = events_api.get(f"/v1/events/{theirs.id}")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}
    assert theirs.id not in str(events_api.get("/v1/events").json())


def test_the_list_pages_newest_first_with_filters(events_api, alice, charlie):
    start = Event.objects.create(tenant=alice, type="invoice.paid").created_at
    made = [start]
    for minutes, kind in [(1, "invoice.paid"), (2, "customer.created"), (3, "invoice.paid"), (4, "invoice.paid")]:
        made.append(
            Event.objects.create(tenant=alice, type=kind, created_at=start + timedelta(minutes=minutes)).created_at
        )
    Event.objects.create(tenant=charlie, type="invoice.paid", created_at=start + timedelta(minutes=5))
    newest_first = list(Event.objects.filter(tenant=alice).order_by("-created_at").values_list("id", flat=True))

    seen, url = [], "/v1/events?limit=2"
    while url:
        page = events_api.get(url).json()
        assert set(page) == {"next", "previous", "results"}
        assert len(page["results"]) <= 2
        seen += [e["id"] for e in page["results"]]
        url = page["next"]
    assert seen == newest_first

    def ids(query: str) -> list[str]:
        response = events_api.get(f"/v1/events?{query}")
        assert response.status_code == 200, response.content
        return [e["id"] for e in response.json()["results"]]

    invoices = [i for i in newest_first if Event.objects.get(pk=i).type == "invoice.paid"]
    assert ids("type=invoice.paid") == invoices
    assert ids("type=invoice") == []  # exact, not a prefix
    after = (start + timedelta(minutes=3)).isoformat().replace("+00:00", "Z")
    assert ids(f"created_after={after}") == newest_first[:2]
    assert ids(f"created_before={after}") == newest_first[2:]
    assert ids(f"type=invoice.paid&created_before={after}") == invoices[2:]


@pytest.mark.parametrize("query", ["created_after=yesterday", "created_before=2026-13-01T00:00:00Z", "limit=0"])
def test_a_bad_filter_is_a_400_naming_it(events_api, query):
    response = events_api.get(f"/v1/events?{query}")
    assert response.status_code == 400
    assert query.split("=")[0] in response.json()


@pytest.mark.parametrize("event_type", ["asiri.subscription.failing", "asiri.anything", "webhook.test"])
def test_publishing_a_reserved_type_is_a_400_naming_the_field(events_api, event_type):
    response = events_api.post("/v1/events", {"type": event_type, "data": {}}, format="json")
    assert response.status_code == 400
    assert "Reserved" in response.json()["type"][0]
    assert Event.objects.count() == 0


@pytest.mark.parametrize("event_type", ["asiri", "webhooks.created", "myasiri.thing"])
def test_names_outside_the_reserved_namespaces_still_publish(events_api, event_type):
    assert events_api.post("/v1/events", {"type": event_type, "data": {}}, format="json").status_code == 202


def test_an_event_outlives_the_subscriptions_it_went_to(events_api, alice, make_subscription):
    subscription = make_subscription(alice, events=["invoice.*"])
    event = event_publish(tenant=alice, event_type="invoice.paid", data={})
    subscription.soft_delete()

    response = events_api.get(f"/v1/events/{event.id}")

    assert response.status_code == 200
    assert [d["subscription_id"] for d in response.json()["deliveries"]] == [subscription.id]
