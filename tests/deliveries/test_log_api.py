from __future__ import annotations

import base64
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.utils import timezone

from deliveries import engine
from deliveries.models import Attempt, Delivery, DeliveryStatus, Event
from deliveries.services import event_publish


def log_url(subscription) -> str:
    return f"/v1/webhooks/subscriptions/{subscription.id}/deliveries"


def add_deliveries(subscription, count: int, *, start=None, event_type="invoice.paid", **fields) -> list[Delivery]:
    start = start or timezone.now() - timedelta(hours=1)
    rows = []
    for i in range(count):
        created = start + timedelta(seconds=i)
        event = Event.objects.create(tenant=subscription.tenant, type=event_type, data={"n": i}, created_at=created)
        rows.append(
            Delivery.objects.create(
                tenant=subscription.tenant,
                event=event,
                subscription=subscription,
                event_type=event_type,
                created_at=created,
                next_attempt_at=created,
                **fields,
            )
        )
    return rows


def walk(api, url: str, key: str = "next") -> list[list[str]]:
    pages = []
    while url:
        response = api.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        pages.append([item["id"] for item in body["results"]])
        url = body[key]
    return pages


def test_it_shows_each_delivery_with_its_attempts(api, alice, make_subscription):
    sub = make_subscription(alice)
    (delivery,) = add_deliveries(sub, 1, status=DeliveryStatus.FAILED, attempt_count=1, response_status_code=500)
    Attempt.objects.create(delivery=delivery, number=1, duration_ms=12, response_status_code=500, error="HTTP 500")
    item = api.get(log_url(sub)).json()["results"][0]
    assert item == {
        "id": delivery.id,
        "event_id": delivery.event_id,
        "event_type": "invoice.paid",
        "status": "failed",
        "attempt_count": 1,
        "attempts": [
            {
                "number": 1,
                "started_at": item["attempts"][0]["started_at"],
                "response_status_code": 500,
                "duration_ms": 12,
                "error": "HTTP 500",
            }
        ],
        "response_status_code": 500,
        "created_at": item["created_at"],
        "last_attempt_at": None,
        "next_attempt_at": item["next_attempt_at"],
        "ordering_key": None,
        "waiting_on": None,
    }
    assert item["id"].startswith("dlv_")


def test_it_pages_120_deliveries_newest_first_without_gaps_or_duplicates(api, alice, make_subscription):
    sub = make_subscription(alice)
    # Same timestamps in pairs, so ties between pages are exercised too.
    start = timezone.now() - timedelta(hours=1)
    rows = add_deliveries(sub, 60, start=start) + add_deliveries(sub, 60, start=start)
    expected = [d.id for d in sorted(rows, key=lambda d: (d.created_at, d.id), reverse=True)]
    pages = walk(api, log_url(sub) + "?limit=7")
    assert [len(p) for p in pages] == [7] * 17 + [1]
    assert [i for p in pages for i in p] == expected


def test_the_default_page_is_50_and_the_maximum_100(api, alice, make_subscription):
    sub = make_subscription(alice)
    add_deliveries(sub, 120)
    assert len(api.get(log_url(sub)).json()["results"]) == 50
    assert len(api.get(log_url(sub) + "?limit=100").json()["results"]) == 100


def test_paging_is_stable_while_new_deliveries_arrive(api, alice, make_subscription):
    sub = make_subscription(alice)
    old = add_deliveries(sub, 30)
    first = api.get(log_url(sub) + "?limit=10").json()
    add_deliveries(sub, 5, start=timezone.now())  # newer than everything: must not shift later pages
    rest = walk(api, first["next"])
    seen = [item["id"] for item in first["results"]] + [i for page in rest for i in page]
    assert seen == [d.id for d in reversed(old)]


def test_previous_links_walk_back_to_the_first_page(api, alice, make_subscription):
    sub = make_subscription(alice)
    rows = add_deliveries(sub, 25)
    first = api.get(log_url(sub) + "?limit=10").json()
    assert first["previous"] is None
    second = api.get(first["next"]).json()
    third = api.get(second["next"]).json()
    assert third["next"] is None
    back = api.get(third["previous"]).json()
    assert [i["id"] for i in back["results"]] == [i["id"] for i in second["results"]]
    back_again = api.get(back["previous"]).json()
    assert [i["id"] for i in back_again["results"]] == [d.id for d in reversed(rows)][:10]


@pytest.mark.parametrize("limit", ["0", "101", "-1", "abc", "1.5", "1e2", "٣", "%00", " 5"])
def test_it_rejects_a_bad_limit(api, alice, make_subscription, limit):
    sub = make_subscription(alice)
    response = api.get(log_url(sub) + f"?limit={limit}")
    assert response.status_code == 400
    assert "limit" in response.json()


@pytest.mark.parametrize("cursor", ["junk", "eyJhIjogMX0", "%00", "\u202e", "a" * 500, "cD0yMDIwLTAxLTAx"])
def test_it_rejects_a_cursor_it_did_not_issue(api, alice, make_subscription, cursor):
    sub = make_subscription(alice)
    add_deliveries(sub, 3)
    response = api.get(log_url(sub), {"cursor": cursor})
    assert response.status_code == 400
    assert "cursor" in response.json()


def test_a_cursor_cannot_be_tampered_with(api, alice, make_subscription):
    sub = make_subscription(alice)
    add_deliveries(sub, 3)
    next_url = api.get(log_url(sub) + "?limit=1").json()["next"]
    cursor = parse_qs(urlsplit(next_url).query)["cursor"][0]
    payload, signature = cursor.split(":", 1)
    forged = base64.urlsafe_b64encode(base64.urlsafe_b64decode(payload + "==").replace(b"false", b"true ")).rstrip(b"=")
    for tampered in (forged.decode() + ":" + signature, cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB")):
        assert api.get(log_url(sub), {"cursor": tampered}).status_code == 400


def test_an_empty_cursor_is_the_first_page(api, alice, make_subscription):
    sub = make_subscription(alice)
    rows = add_deliveries(sub, 3)
    response = api.get(log_url(sub) + "?cursor=&limit=")
    assert response.status_code == 200
    assert [i["id"] for i in response.json()["results"]] == [d.id for d in reversed(rows)]


def test_it_filters_by_status_type_and_time(api, alice, make_subscription):
    sub = make_subscription(alice)
    start = timezone.now() - timedelta(hours=2)
    paid = add_deliveries(sub, 3, start=start, status=DeliveryStatus.SUCCEEDED)
    failed = add_deliveries(
        sub, 2, start=start + timedelta(hours=1), event_type="invoice.failed", status=DeliveryStatus.FAILED
    )

    def ids(**params):
        response = api.get(log_url(sub), params)
        assert response.status_code == 200, response.content
        return {i["id"] for i in response.json()["results"]}

    assert ids(status="failed") == {d.id for d in failed}
    assert ids(event_type="invoice.paid") == {d.id for d in paid}
    assert ids(created_after=(start + timedelta(minutes=30)).isoformat()) == {d.id for d in failed}
    assert ids(created_before=(start + timedelta(minutes=30)).isoformat()) == {d.id for d in paid}
    assert ids(status="succeeded", event_type="invoice.failed") == set()


@pytest.mark.parametrize(
    "query",
    [
        "status=lost",
        "status=%00",
        "created_after=yesterday",
        "created_before=2026-13-45",
        "event_type=%00",
        "created_after=%00",
        "created_after=2026-01-31",  # ISO 8601, but not RFC 3339
    ],
)
def test_it_rejects_bad_filters_by_name(api, alice, make_subscription, query):
    sub = make_subscription(alice)
    response = api.get(f"{log_url(sub)}?{query}")
    assert response.status_code == 400, response.content
    assert query.split("=")[0] in response.json()


def test_it_shows_only_this_subscriptions_deliveries(api, alice, make_subscription):
    mine, other = make_subscription(alice), make_subscription(alice)
    add_deliveries(other, 2)
    assert api.get(log_url(mine)).json()["results"] == []


def test_the_log_costs_a_fixed_number_of_queries(api, alice, make_subscription, django_assert_max_num_queries):
    sub = make_subscription(alice)
    for delivery in add_deliveries(sub, 30):
        Attempt.objects.create(delivery=delivery, number=1)
    # key lookup, last_used write, subscription, page, attempts
    with django_assert_max_num_queries(5):
        assert len(api.get(log_url(sub)).json()["results"]) == 30


def test_the_log_says_the_same_for_a_name_that_does_not_resolve_and_one_that_resolves_privately(
    api, alice, make_subscription, django_capture_on_commit_callbacks
):
    # Stored behind the API's back, as if DNS changed after the subscriptions were created.
    private = make_subscription(alice, url="https://intranet.test/hook")
    missing = make_subscription(alice, url="https://does-not-exist.test/hook")
    with django_capture_on_commit_callbacks(execute=False):
        event_publish(tenant=alice, event_type="invoice.paid", data={})
    engine.pump(budget_seconds=5)  # the real send path (the suite stops any connection off loopback)
    logs = [api.get(log_url(subscription)).json()["results"] for subscription in (private, missing)]
    errors = [[attempt["error"] for delivery in log for attempt in delivery["attempts"]] for log in logs]
    assert errors[0] == errors[1] == ["Refused: Cannot be delivered to: does not resolve to a public address."]


def test_one_delivery_shows_each_attempts_body_and_headers_and_the_list_does_not(api, alice, make_subscription):
    sub = make_subscription(alice)
    (delivery,) = add_deliveries(sub, 1, status=DeliveryStatus.FAILED, attempt_count=1, response_status_code=503)
    headers = {"retry-after": "30", "content-type": "text/plain"}
    Attempt.objects.create(
        delivery=delivery, number=1, response_status_code=503, response_body="try later", response_headers=headers
    )
    (attempt,) = api.get(f"{log_url(sub)}/{delivery.id}").json()["attempts"]
    assert attempt["response_body"] == "try later" and attempt["response_headers"] == headers
    (listed,) = api.get(log_url(sub)).json()["results"][0]["attempts"]
    assert "response_body" not in listed and "response_headers" not in listed
