from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cached_property

from django.db import connection, models
from django.db.models import Exists, OuterRef, Q, Subquery
from django.db.models.functions import Now
from django.utils import timezone

from tenants.ids import new_id
from tenants.models import Tenant
from webhooks.models import Subscription

TEST_EVENT_TYPE = "webhook.test"


def new_event_id() -> str:
    return new_id("evt")


def new_delivery_id() -> str:
    return new_id("dlv")


class EventQuerySet(models.QuerySet):
    def for_tenant(self, tenant: Tenant) -> EventQuerySet:
        return self.filter(tenant=tenant)


class Event(models.Model):
    id = models.CharField(primary_key=True, max_length=40, default=new_event_id, editable=False)
    # Not checked by the database: see Delivery.
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="events", db_constraint=False)
    type = models.CharField(max_length=200)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # Unique per tenant while set; cleared once older than the idempotency window so it can be reused.
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001 (unique when set)
    # Events with the same key reach each subscription strictly in publish order (docs/architecture.md).
    ordering_key = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001 (absent is not "")

    objects = EventQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="event_idempotency_key_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.type}"

    def payload(self) -> dict:
        """What every receiver gets as the request body."""
        timestamp = self.created_at.astimezone(UTC).isoformat(timespec="milliseconds")
        return {"id": self.id, "type": self.type, "timestamp": timestamp.replace("+00:00", "Z"), "data": self.data}

    @cached_property
    def body(self) -> bytes:
        """The payload as sent: encoded once per instance, since a fan-out sends it to every subscription.

        An event is never changed after it is published, so the cached bytes cannot go stale.
        """
        return json.dumps(self.payload(), separators=(",", ":"), ensure_ascii=False).encode()


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


IN_FLIGHT = (DeliveryStatus.PENDING, DeliveryStatus.RETRYING)


class DeliveryQuerySet(models.QuerySet):
    def for_tenant(self, tenant: Tenant) -> DeliveryQuerySet:
        return self.filter(tenant=tenant)

    def in_flight(self) -> DeliveryQuerySet:
        return self.filter(status__in=IN_FLIGHT)

    def stop_pending(self, subscription_ids, reason: str) -> int:
        """End the in-flight deliveries of these subscriptions as failed (test sends excepted)."""
        return (
            self.filter(subscription_id__in=subscription_ids, is_test=False)
            .in_flight()
            .update(status=DeliveryStatus.FAILED, next_attempt_at=None, failure_reason=reason)
        )

    def due(self, now: datetime) -> DeliveryQuerySet:
        """In flight and due. Claiming a delivery pushes next_attempt_at past the claim's lease,
        so a row a worker holds is not due again until that worker has had its time."""
        return self.in_flight().filter(next_attempt_at__lte=now)

    def sendable(self, now: datetime) -> DeliveryQuerySet:
        """Due, and if it has an ordering key, the first unfinished delivery of its (subscription, key).

        Asked as "the first one's position", ordered by position, rather than "no unfinished one ahead":
        delivery_ordered_in_flight gives that first row in one descent, and a claim makes the planner
        prefer it (execute_with_sorts_last). Left to its statistics, the planner walked a subscription's
        whole backlog (delivery_due_by_subscription) for each candidate: 250 ms a claim, and bench scenario 7
        drained ordered deliveries at a fourteenth of the unordered rate.
        """
        first_in_key = (
            self.model.objects.in_flight()
            .filter(subscription_id=OuterRef("subscription_id"), ordering_key=OuterRef("ordering_key"))
            .order_by("position")
            .values("position")[:1]
        )
        return self.due(now).filter(Q(ordering_key__isnull=True) | Q(position=Subquery(first_in_key)))

    def with_waiting_on(self) -> DeliveryQuerySet:
        """Annotate `waiting_on`: the unfinished delivery right before this one in its ordering key, if any."""
        return self.annotate(waiting_on=Subquery(self.in_flight_ahead().order_by("-position").values("id")[:1]))

    def in_flight_ahead(self) -> DeliveryQuerySet:
        """The unfinished deliveries before the outer query's row in its (subscription, ordering key)."""
        return self.model.objects.in_flight().filter(
            subscription_id=OuterRef("subscription_id"),
            ordering_key=OuterRef("ordering_key"),
            position__lt=OuterRef("position"),
        )

    def backlog(self, now: datetime) -> dict:
        """Unfinished deliveries, in one query the `delivery_due` partial index answers: how many
        are due, how many scheduled later, how many wait on an earlier delivery of their ordering key,
        and how long the oldest due one has waited (None if none)."""
        row = self.in_flight().aggregate(
            due=models.Count("next_attempt_at", filter=models.Q(next_attempt_at__lte=now)),
            scheduled=models.Count("next_attempt_at", filter=models.Q(next_attempt_at__gt=now)),
            waiting=models.Count(models.Value(1), filter=models.Q(next_attempt_at__isnull=True)),
            oldest_due=models.Min("next_attempt_at", filter=models.Q(next_attempt_at__lte=now)),
        )
        oldest = row.pop("oldest_due")
        return {**row, "oldest_due_seconds": (now - oldest).total_seconds() if oldest else None}


class Delivery(models.Model):
    """One event on its way to one subscription. Its id is the receiver's `webhook-id`."""

    id = models.CharField(primary_key=True, max_length=40, default=new_delivery_id, editable=False)
    # Only `subscription` is checked by the database. PostgreSQL checks a foreign key with a query of its own per
    # row inserted (and locks the parent row): three per delivery and one per event and attempt were half of a
    # publish's database time and a sixth of a drain's (bench/RESULTS.md). How the others are kept without:
    # docs/architecture.md, "References the database does not check"; claims._end_orphans is the safety net.
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="deliveries", db_constraint=False)
    # Indexed below without Django's varchar_pattern_ops copies (no LIKE ever reads an id): each index is
    # written on every claim and every outcome, since both move next_attempt_at. The subscription's
    # lookups and cascades use delivery_log, which starts with it.
    event = models.ForeignKey(
        Event, on_delete=models.CASCADE, related_name="deliveries", db_index=False, db_constraint=False
    )
    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="deliveries", db_index=False)
    event_type = models.CharField(max_length=200)  # copied from the event: filters need no join
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    is_test = models.BooleanField(default=False)
    attempt_count = models.PositiveIntegerField(default=0)
    response_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # attempt_count when the current series began (a redelivery starts a new one): the retry
    # schedule counts from here.
    series_start = models.PositiveIntegerField(default=0)
    failure_reason = models.TextField(blank=True, default="")
    # Copied from the event; `position` orders the deliveries of one (subscription, ordering_key), from
    # one sequence: a delivery is not sent while one before it is unfinished (a redelivery goes to the end).
    ordering_key = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001 (absent is not "")
    position = models.BigIntegerField(null=True, blank=True)

    objects = DeliveryQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "deliveries"
        permissions = [("redeliver_delivery", "Can redeliver a delivery")]
        indexes = [
            models.Index(fields=["event"], name="delivery_event"),
            models.Index(fields=["-created_at"], name="delivery_newest"),
            # Behind the admin's status and event type filters, newest first.
            models.Index(fields=["status", "-created_at"], name="delivery_status_newest"),
            models.Index(fields=["event_type", "-created_at"], name="delivery_type_newest"),
            models.Index(fields=["subscription", "-created_at", "-id"], name="delivery_log"),
            models.Index(
                fields=["next_attempt_at"],
                name="delivery_due",
                condition=Q(status__in=["pending", "retrying"]),
            ),
            # A rate-limited endpoint's due rows, oldest first, when a claim gives them send times;
            # its test sends apart, since they go first and are few among many.
            models.Index(
                fields=["subscription", "next_attempt_at"],
                name="delivery_due_by_subscription",
                condition=Q(status__in=["pending", "retrying"]),
            ),
            models.Index(
                fields=["subscription", "ordering_key", "position"],
                name="delivery_ordered_in_flight",
                condition=Q(status__in=["pending", "retrying"], ordering_key__isnull=False),
            ),
            models.Index(
                fields=["subscription", "next_attempt_at"],
                name="delivery_due_test_sends",
                condition=Q(status__in=["pending", "retrying"], is_test=True),
            ),
        ]

    def __str__(self) -> str:
        return self.id

    @property
    def is_final(self) -> bool:
        return self.status not in IN_FLIGHT


class SkipReason(models.TextChoices):
    PAUSED = "paused"  # the tenant set active=false
    DISABLED = "disabled"  # the system disabled it (disabled_reason says why)
    FILTERED = "filtered"  # its payload filter refused the event (reserved for payload filters)
    SUBJECT = "subject"  # an operational event about this very subscription is never sent to it


class EventSkip(models.Model):
    """A live subscription whose patterns matched an event that got no delivery, and why, as at publish time.

    Written only when something is skipped, so an event's deliveries and skips together account for
    every subscription that wanted it without costing a publish that skips nothing anything.
    """

    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="skips")
    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="skips")
    reason = models.CharField(max_length=16, choices=SkipReason.choices)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["event", "subscription"], name="event_skip_unique")]

    def __str__(self) -> str:
        return f"{self.event_id} skipped {self.subscription_id}: {self.reason}"


class AttemptQuerySet(models.QuerySet):
    # An attempt is written before its request is made; its outcome (a duration, or an error that says why there
    # is none) after. One with neither is in flight, or was cut short by a worker that died.
    def without_outcome(self) -> AttemptQuerySet:
        return self.filter(duration_ms__isnull=True, error="")

    def with_outcome(self) -> AttemptQuerySet:
        return self.exclude(duration_ms__isnull=True, error="")


class Attempt(models.Model):
    """One HTTP request for a delivery, written before the request is made."""

    # attempt_number_unique (delivery, number) is its index.
    # Not checked by the database, as Delivery.event is not: a claim inserts it beside its locked delivery.
    delivery = models.ForeignKey(
        Delivery, on_delete=models.CASCADE, related_name="attempts", db_index=False, db_constraint=False
    )
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    response_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.TextField(blank=True, default="")
    # deliveries.http.KEPT_RESPONSE_HEADERS, lower-cased names to capped values.
    response_headers = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True, default="")

    objects = AttemptQuerySet.as_manager()

    class Meta:
        ordering = ["number"]
        constraints = [models.UniqueConstraint(fields=["delivery", "number"], name="attempt_number_unique")]

    def __str__(self) -> str:
        return f"{self.delivery_id} #{self.number}"


class Pulse(models.Model):
    """When a periodic process last ran, on the database's clock: a dead beat must not be silent."""

    DISPATCHER = "dispatcher"

    name = models.CharField(primary_key=True, max_length=40)
    at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} at {self.at}"

    @classmethod
    def beat(cls, name: str) -> None:
        if not cls.objects.filter(name=name).update(at=Now()):
            cls.objects.update_or_create(name=name, defaults={"at": Now()})

    @classmethod
    def age_seconds(cls, name: str, now: datetime) -> float | None:
        """Seconds since `name` last ran, or None if it never has."""
        at = cls.objects.filter(name=name).values_list("at", flat=True).first()
        return None if at is None else max(0.0, (now - at).total_seconds())


POSITION_SEQUENCE = "deliveries_delivery_position"


def next_positions(count: int) -> list[int]:
    """`count` increasing positions for ordered deliveries, from one sequence shared by every process.

    PostgreSQL has a sequence for it (migration 0008); SQLite (the embedded default) serialises
    writers, so the largest position so far plus one cannot be taken twice.
    """
    if count <= 0:
        return []
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT nextval(%s) FROM generate_series(1, %s)", [POSITION_SEQUENCE, count])
            return [row[0] for row in cursor.fetchall()]
        cursor.execute("SELECT COALESCE(MAX(position), 0) FROM deliveries_delivery")
        start = cursor.fetchone()[0] + 1
    return list(range(start, start + count))


def deliveries_set_each(column: str, sql_type: str, rows: list[tuple[str, object]], *, in_flight_only: bool) -> None:
    """Give each delivery (id, value) its own value of `column`, in one UPDATE … FROM (VALUES …): a CASE with
    a WHEN per row is quadratic in the rows (a thousand took a claim 0.4 s under load, row locks held)."""
    if not rows:
        return
    table = Delivery._meta.db_table
    values = ", ".join([f"(%s, CAST(%s AS {sql_type}))"] * len(rows))
    still = f" AND {table}.status IN ('pending', 'retrying')" if in_flight_only else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET {connection.ops.quote_name(column)} = v.column2 "  # noqa: S608 (names are the model's)
            f"FROM (VALUES {values}) AS v WHERE {table}.id = v.column1{still}",
            [value for row in rows for value in row],
        )


def new_recovery_id() -> str:
    return new_id("rcv")


class RecoveryStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"


class RecoveryQuerySet(models.QuerySet):
    def for_tenant(self, tenant: Tenant) -> RecoveryQuerySet:
        return self.filter(tenant=tenant)


class Recovery(models.Model):
    """A time range of one subscription to send again: its failed deliveries and the events it missed."""

    id = models.CharField(primary_key=True, max_length=40, default=new_recovery_id, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="recoveries")
    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="recoveries")
    since = models.DateTimeField()
    until = models.DateTimeField()
    status = models.CharField(max_length=16, choices=RecoveryStatus.choices, default=RecoveryStatus.QUEUED)
    # null until the run starts; then added to batch by batch, so a run taken over after a crash keeps counting.
    redelivered = models.PositiveIntegerField(null=True, blank=True)
    recovered_missed = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = RecoveryQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "recoveries"
        permissions = [("recover_subscription", "Can recover a subscription's failed and missed deliveries")]
        indexes = [
            models.Index(fields=["subscription", "-created_at"], name="recovery_newest"),
            # The dispatcher's look for recoveries whose wake-up was lost: few rows, unfinished only.
            models.Index(fields=["created_at"], name="recovery_unfinished", condition=~Q(status="done")),
        ]

    def __str__(self) -> str:
        return self.id


# --- Ordered deliveries that wait (docs/architecture.md, "Per-key ordering") -----------------------------
# A delivery behind an unfinished one of its (subscription, ordering key) waits with no next_attempt_at: it is
# not due, so no claim reads it. Left due, every claim walked all of a key's followers before anything else
# while its head was retrying (a claim took 16 ms beside 0 and 122 ms beside 20,000: bench/RESULTS.md). The
# claim still checks the key's order (DeliveryQuerySet.sendable); waiting only keeps followers out of its way.


# A release's check, on the row it updates, that the delivery still waits (no claim can have taken it): written
# so that no index can answer it. Written `IS NULL`, the planner read every waiting delivery through
# delivery_due and kept the few it had found, rather than look those few up by primary key.
STILL_WAITING = "COALESCE({column}, '-infinity') = '-infinity'"

# Around a statement that looks up a key's first delivery in flight, on PostgreSQL (one round trip).
SORTS_OFF, SORTS_ON = "SET LOCAL enable_sort = off; ", "; SET LOCAL enable_sort = on"


def execute_with_sorts_last(cursor, sql: str, params: object) -> None:
    """Run one statement with sorts planned last, leaving the cursor on its result (PostgreSQL).

    A key's first delivery in flight comes from delivery_ordered_in_flight in its order, or from any index
    that leads with the subscription and a sort. Statistics lag behind every burst (and a new install has
    none): believing the subscription had hardly a delivery in flight, the planner chose the sort, and read
    the subscription's whole backlog for every key looked up, a claim in 250 ms and a batch of outcomes in
    over a minute (bench/RESULTS.md). A row comparison in the index's order did not stop it: the planner used
    the other index's first column and sorted. Only this statement: a claim's next one, planned so, took half
    a second.
    """
    cursor.execute(f"{SORTS_OFF}{sql}{SORTS_ON}", params)
    cursor.nextset()  # past the first SET's empty result


def _firsts_of_keys(table: str) -> str:
    """FROM and WHERE for the first delivery in flight (`first`) of each (subscription_id, name) in `key`,
    from the parameters `subscriptions` and `names` (PostgreSQL; run with execute_with_sorts_last)."""
    return f"""
        unnest(%(subscriptions)s::text[], %(names)s::text[]) AS key(subscription_id, name)
        CROSS JOIN LATERAL (
            SELECT id, subscription_id, ordering_key FROM {table}
            WHERE status IN ('pending', 'retrying') AND ordering_key IS NOT NULL
                AND (subscription_id, ordering_key) >= (key.subscription_id, key.name)
            ORDER BY subscription_id, ordering_key, position LIMIT 1
        ) AS first
        WHERE first.subscription_id = key.subscription_id AND first.ordering_key = key.name"""  # noqa: S608


def deliveries_keys_in_flight(keys: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of these (subscription, ordering key) pairs have a delivery in flight."""
    if not keys:
        return set()
    subscriptions, ordering_keys = zip(*keys, strict=True)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            execute_with_sorts_last(
                cursor,
                f"SELECT first.subscription_id, first.ordering_key FROM {_firsts_of_keys(Delivery._meta.db_table)}",  # noqa: S608
                {"subscriptions": list(subscriptions), "names": list(ordering_keys)},
            )
            return set(cursor.fetchall())
    found = (
        Delivery.objects.in_flight()
        .filter(subscription_id__in=set(subscriptions), ordering_key__in=set(ordering_keys))
        .values_list("subscription_id", "ordering_key")
        .distinct()
    )
    return set(found) & keys


def deliveries_wait_behind(delivery_ids: list[str]) -> int:
    """Of these in-flight deliveries, make those behind an unfinished one of their key wait (not due)."""
    return (
        Delivery.objects.filter(pk__in=delivery_ids, ordering_key__isnull=False)
        .in_flight()
        .filter(Exists(Delivery.objects.in_flight_ahead()))
        .update(next_attempt_at=None)
    )


def deliveries_release_next(keys: set[tuple[str, str]], now: datetime) -> int:
    """For each (subscription, ordering key), make its first delivery in flight due now if it waits.

    Called once a delivery of the key ended, in the same transaction (the one that ended is no longer first).

    On PostgreSQL the rows to update are found first and then by primary key (`= ANY(ARRAY(…))`): joined,
    the planner walked every waiting delivery and looked the keys up again for each.
    """
    if not keys:
        return 0
    table = Delivery._meta.db_table
    if connection.vendor == "postgresql":
        subscriptions, ordering_keys = zip(*keys, strict=True)
        with connection.cursor() as cursor:
            execute_with_sorts_last(
                cursor,
                f"""
                UPDATE {table} SET next_attempt_at = %(now)s
                WHERE id = ANY(ARRAY(SELECT first.id FROM {_firsts_of_keys(table)}))
                    AND {STILL_WAITING.format(column="next_attempt_at")} AND status IN ('pending', 'retrying')
                """,  # noqa: S608 (the table name is the model's)
                {"now": now, "subscriptions": list(subscriptions), "names": list(ordering_keys)},
            )
            return cursor.rowcount
    firsts = [
        Delivery.objects.in_flight()
        .filter(subscription_id=subscription_id, ordering_key=ordering_key)
        .order_by("position")
        .values_list("pk", flat=True)
        .first()
        for subscription_id, ordering_key in keys
    ]
    return (
        Delivery.objects.in_flight()
        .filter(pk__in=[pk for pk in firsts if pk is not None], next_attempt_at__isnull=True)
        .update(next_attempt_at=now)
    )


def deliveries_release_stranded(now: datetime) -> int:
    """Make due every waiting delivery with nothing unfinished ahead of it in its key.

    The dispatcher's safety net: a publish decides that a delivery waits on what it reads before it commits,
    so a predecessor ending in between releases nothing, and the follower would wait for ever.
    """
    if connection.vendor != "postgresql":
        waiting = Delivery.objects.in_flight().filter(next_attempt_at__isnull=True, ordering_key__isnull=False)
        return waiting.exclude(Exists(Delivery.objects.in_flight_ahead())).update(next_attempt_at=now)
    # The first delivery in flight of each key, one descent of delivery_ordered_in_flight per key (a skip
    # scan): the work grows with the keys in flight, not with how many deliveries wait in each. Asked as
    # "waiting, with nothing in flight ahead", the planner compared every waiting row of a key with every
    # other, 20 s for one key of 20,000.
    table, in_flight = Delivery._meta.db_table, "status IN ('pending', 'retrying') AND ordering_key IS NOT NULL"
    with connection.cursor() as cursor:
        execute_with_sorts_last(
            cursor,
            f"""
            WITH RECURSIVE firsts AS (
                (SELECT id, subscription_id, ordering_key, next_attempt_at FROM {table} WHERE {in_flight}
                 ORDER BY subscription_id, ordering_key, position LIMIT 1)
                UNION ALL
                SELECT following.* FROM firsts CROSS JOIN LATERAL (
                    SELECT id, subscription_id, ordering_key, next_attempt_at FROM {table}
                    WHERE {in_flight}
                        AND (subscription_id, ordering_key) > (firsts.subscription_id, firsts.ordering_key)
                    ORDER BY subscription_id, ordering_key, position LIMIT 1
                ) AS following
            )
            UPDATE {table} SET next_attempt_at = %s
            WHERE id = ANY(ARRAY(SELECT id FROM firsts WHERE next_attempt_at IS NULL))
                AND {STILL_WAITING.format(column="next_attempt_at")} AND status IN ('pending', 'retrying')
            """,  # noqa: S608 (the table name is the model's)
            [now],
        )
        return cursor.rowcount


def delivery_keys(delivery_ids: list[str]) -> set[tuple[str, str]]:
    """The (subscription, ordering key) pairs of these deliveries, the ordered ones."""
    if not delivery_ids:
        return set()
    return set(
        Delivery.objects.filter(pk__in=delivery_ids, ordering_key__isnull=False).values_list(
            "subscription_id", "ordering_key"
        )
    )
