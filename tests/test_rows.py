"""core.rows: instances made without Model.__init__ must be the instances Django itself makes."""

from __future__ import annotations

from django.db import connection
from django.utils import timezone

from core.bulk import insert_together
from core.rows import row_builder, unsaved_copy
from deliveries.models import Delivery, Event
from webhooks.models import Subscription

MATCHING = ["id", "tenant_id", "events", "active", "filter"]


def raw_row(subscription_id: str, fields) -> tuple:
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {columns} FROM webhooks_subscription WHERE id = %s", [subscription_id])  # noqa: S608
        return cursor.fetchone()


def assert_same_instance(got, want) -> None:
    assert type(got) is type(want)
    assert {k: v for k, v in vars(got).items() if k != "_state"} == {
        k: v for k, v in vars(want).items() if k != "_state"
    }
    assert (got._state.adding, got._state.db, got._state.fields_cache) == (
        want._state.adding,
        want._state.db,
        want._state.fields_cache,
    )
    assert got.get_deferred_fields() == want.get_deferred_fields()


def test_a_built_row_is_the_instance_a_queryset_loads(alice, make_subscription):
    subscription = make_subscription(alice, events=["invoice.*"], filter={"data.amount": {"$gt": 5}})
    Subscription.objects.filter(pk=subscription.pk).update(headers={"x-team": "billing"}, failing_since=timezone.now())
    build, fields = row_builder(Subscription)
    built = build(raw_row(subscription.pk, fields))
    assert_same_instance(built, Subscription.objects.get(pk=subscription.pk))
    assert built.headers == {"x-team": "billing"} and built.failing_since is not None


def test_a_row_of_some_fields_defers_the_rest_as_only_does(alice, make_subscription, django_assert_num_queries):
    subscription = make_subscription(alice, description="kept in the database")
    build, fields = row_builder(Subscription, MATCHING)
    built = build(raw_row(subscription.pk, fields))
    assert_same_instance(built, Subscription.objects.only(*MATCHING).get(pk=subscription.pk))
    with django_assert_num_queries(1):  # a deferred field is loaded on first use, as with only()
        assert built.description == "kept in the database"


def test_an_unsaved_copy_is_its_own_new_row(alice, make_subscription):
    first, second = make_subscription(alice), make_subscription(alice)
    now = timezone.now()
    event = Event(tenant=alice, type="invoice.paid", data={}, created_at=now)
    template = Delivery(
        tenant_id=alice.pk, event_id=event.pk, event_type=event.type, created_at=now, next_attempt_at=now
    )
    copies = [
        unsaved_copy(template, {"id": f"dlv_copy{n}", "subscription_id": s.pk}) for n, s in enumerate((first, second))
    ]
    assert all(c._state.adding and c._state is not template._state for c in copies)
    assert template.subscription_id is None and template.id not in {c.id for c in copies}
    insert_together([event], copies)
    for copy, subscription in zip(copies, (first, second), strict=True):
        stored = Delivery.objects.get(pk=copy.pk)
        assert (stored.subscription, stored.event_id, stored.tenant_id) == (subscription, event.pk, alice.pk)
        assert (stored.status, stored.attempt_count, stored.created_at) == ("pending", 0, now)
        assert copy.subscription == subscription  # the relation reads its own id, not the template's
