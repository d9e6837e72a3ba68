"""Schemathesis fuzzes every operation against the API's own OpenAPI document, in process.

Every check schemathesis has runs on every response (`--checks all`), so the document has to state
every rule the API enforces and none it does not. `make test` runs ASIRI_FUZZ_EXAMPLES (default
100) examples per operation, the same ones every run; `make fuzz` runs 1000 new ones each time
(ASIRI_FUZZ_RANDOM=1). Requests go straight into Django's WSGI handler: nothing leaves the process,
and no task reaches a worker (see conftest.py), so no generated URL is ever contacted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import schemathesis
from django.core import signing
from django.core.exceptions import ValidationError
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.utils import timezone
from hypothesis import HealthCheck, reject, settings
from hypothesis import strategies as st
from schemathesis.core.errors import UnsupportedSchema
from schemathesis.core.parameters import ParameterLocation

from core.api import KeysetPagination
from deliveries.filters import parse_rfc3339
from deliveries.models import Delivery
from webhooks.addresses import UNDELIVERABLE
from webhooks.headers import is_secret
from webhooks.models import EventType
from webhooks.validators import validate_webhook_url

EXAMPLES = int(os.environ.get("ASIRI_FUZZ_EXAMPLES", "100"))
# Reproducible by default, so a red `make test` is red again on the next run.
RANDOM = os.environ.get("ASIRI_FUZZ_RANDOM", "") == "1"
_SCOPE = re.compile(r"Scope: `([a-z:]+)`")


class _InTestTransaction:
    """Django's WSGI handler without its per-request connection recycling.

    Like Django's own test client: the handler's request_started/finished signals would close the
    connection that holds the test's transaction, so every request would lose the rows before it.
    """

    def __init__(self) -> None:
        self.handler = WSGIHandler()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request_started.disconnect(close_old_connections)
        request_finished.disconnect(close_old_connections)
        try:
            response = self.handler(environ, start_response)
            try:
                return [b"".join(response)]
            finally:
                response.close()
        finally:
            request_started.connect(close_old_connections)
            request_finished.connect(close_old_connections)


APP = _InTestTransaction()
# Loaded while pytest collects; its request log line would land in the middle of the progress dots.
logging.getLogger("asiri.requests").disabled = True
try:
    schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", APP)
finally:
    logging.getLogger("asiri.requests").disabled = False
# No example database: nothing is written into the working tree.
schema.config.generation.update(max_examples=EXAMPLES, database="none", deterministic=not RANDOM)
schema.config.checks.update(included_check_names=["all"])


@st.composite
def _drawable(draw: st.DrawFn, body: st.SearchStrategy[Any]) -> Any:
    try:
        return draw(body)
    except UnsupportedSchema:
        reject()


@schema.hook
def before_generate_body(context: schemathesis.HookContext, strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A negative body schemathesis cannot draw is a case it does not make, not a red run.

    Negating a recursive definition (`not: {$ref: JsonValue}` inside PayloadFilter) has no spelled
    complement. Schemathesis declines such a mutation when it builds it at once, but one reached
    through a cycle is built lazily, during a draw, where its refusal escapes as UnsupportedSchema:
    rare and order-dependent, it turned a CI run red. Declined here as schemathesis declines it there.
    """
    return _drawable(strategy)


# Schemathesis builds some cases while collecting, before any key exists: they carry a stand-in
# naming the scope, which `prepare` swaps for the real key of that scope just before the call.
_STAND_IN = "scope-key-for:"


@schema.auth(refresh_interval=None)
class ScopedKey:
    """Each operation gets a key with exactly the scope its description names, and no other."""

    def get(self, case: schemathesis.Case, ctx: schemathesis.AuthContext) -> str:
        match = _SCOPE.search(case.operation.definition.raw.get("description", ""))
        assert match, f"{case.operation.label} names no scope"
        return match.group(1)

    def set(self, case: schemathesis.Case, data: str, ctx: schemathesis.AuthContext) -> None:
        case.headers["Authorization"] = f"Bearer {_STAND_IN}{data}"


@dataclass
class World:
    """What already exists when an operation is fuzzed: keys, a subscription and its deliveries."""

    keys: dict[str, str]
    subscription_id: str
    delivery_id: str
    event_id: str
    cursor: str
    name_cursor: str
    event_type: str


@pytest.fixture
def world(scoped_keys, alice, make_subscription, make_failed_delivery) -> World:
    subscription = make_subscription(alice)
    delivery: Delivery = make_failed_delivery(subscription)
    event_type = EventType.objects.create(name="invoice.paid", schema={"type": "object"}, example={"amount": 1})
    EventType.objects.create(name="invoice.voided", schema={"type": "object"}, example={"amount": 1})
    return World(
        keys=scoped_keys,
        subscription_id=subscription.id,
        delivery_id=delivery.id,
        event_id=delivery.event_id,
        cursor=KeysetPagination.cursor_for(subscription),
        name_cursor=signing.dumps([event_type.name, False], salt="asiri.api.cursor.name", compress=True),
        event_type=event_type.name,
    )


def prepare(case: schemathesis.Case, world: World, *, real_ids: bool = True) -> None:
    """Real keys, and real ids and cursors wherever the case means them to be valid.

    A generated id names nothing (404) and a generated cursor was not signed here (400): with only
    those, no valid request would ever reach a real subscription. Negated path parameters and
    query strings keep what was generated, so they still have to be refused. Along links the ids
    are the ones earlier responses gave, so `real_ids` is off there.
    """
    header = case.headers.get("Authorization", "")
    if header.startswith(f"Bearer {_STAND_IN}"):
        case.headers["Authorization"] = f"Bearer {world.keys[header.removeprefix(f'Bearer {_STAND_IN}')]}"
    negated = case.meta.is_negative_at if case.meta is not None else (lambda location: False)
    if real_ids and not negated(ParameterLocation.PATH):
        for name in ("id", "subscription_id"):
            if name in case.path_parameters:
                case.path_parameters[name] = world.subscription_id
        if "delivery_id" in case.path_parameters:
            case.path_parameters["delivery_id"] = world.delivery_id
        if "event_id" in case.path_parameters:
            case.path_parameters["event_id"] = world.event_id
        if "name" in case.path_parameters:
            case.path_parameters["name"] = world.event_type
    if not negated(ParameterLocation.QUERY) and case.query and "cursor" in case.query:
        by_name = case.operation.path.endswith("/event-types")
        case.query["cursor"] = world.name_cursor if by_name else world.cursor
    if not negated(ParameterLocation.BODY) and isinstance(case.body, dict):
        # A key reused with another body is a 422 by design (the history decides, not the document):
        # generated keys name their body, so a repeat is a true repeat; in a batch too.
        batch = case.body.get("events") if isinstance(case.body.get("events"), list) else [case.body]
        for event in batch:
            if isinstance(event, dict) and "idempotency_key" in event:
                body = json.dumps([event.get("type"), event.get("data")], sort_keys=True)
                event["idempotency_key"] = hashlib.sha256(body.encode()).hexdigest()
    if not negated(ParameterLocation.BODY) and isinstance(case.body, dict) and "event_type" in case.body:
        # Which names are registered is data, not something a document states: send a registered one.
        case.body["event_type"] = world.event_type
    if not negated(ParameterLocation.BODY) and _names_a_private_address(case.body):
        # Which hosts are private depends on DNS, so no document can say; tests/webhooks cover it.
        reject()
    if _header_rule_no_schema_states(case.body, negated=negated(ParameterLocation.BODY)):
        reject()
    if not negated(ParameterLocation.BODY) and case.operation.path.endswith("/recover"):
        _within_the_recovery_window(case.body)


def _header_rule_no_schema_states(body: object, *, negated: bool) -> bool:
    """Header names that differ only in case (refused), and null for a write-only header (accepted when
    there is a value to keep): JSON Schema can say neither; tests/webhooks/test_subscription_headers.py does."""
    headers = body.get("headers") if isinstance(body, dict) else None
    if not isinstance(headers, dict):
        return False
    if negated:
        return any(value is None and is_secret(name) for name, value in headers.items())
    return len({name.lower() for name in headers}) < len(headers)


def _within_the_recovery_window(body: object) -> None:
    """A generated range moved into the last 14 days where it is not: "in the past", "at most 14 days ago"
    and "since before until" are relative to now and to each other, which no schema can state."""
    if not isinstance(body, dict) or not isinstance(body.get("since"), str):
        return
    now = timezone.now()
    since, until = parse_rfc3339(body["since"]), parse_rfc3339(body.get("until") or "")
    if since is None or since < now - timedelta(days=13) or since >= min(until or now, now):
        body["since"] = (now - timedelta(hours=1)).isoformat()
        if until is not None and until <= now:
            body["until"] = now.isoformat()


def _names_a_private_address(body: object) -> bool:
    url = body.get("url") if isinstance(body, dict) else None
    if not isinstance(url, str):
        return False
    try:
        validate_webhook_url(url)
    except ValidationError as exc:
        return UNDELIVERABLE in exc.messages
    return False


@schema.parametrize()
# The keys, the rows and the test's transaction are meant to be shared by every example.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_every_operation_keeps_its_documented_contract(case: schemathesis.Case, world: World) -> None:
    prepare(case, world)
    case.call_and_validate()


class Workflow(schema.as_state_machine()):  # type: ignore[misc]
    """Sequences along the document's links: create, then fetch, update, test, rotate, delete, and
    read the deliveries it made, each response checked (use_after_free included) on the way."""

    world: World

    def before_call(self, case: schemathesis.Case) -> None:
        prepare(case, self.world, real_ids=False)


def test_linked_operations_keep_their_contract_in_sequence(world: World) -> None:
    Workflow.world = world
    Workflow.run(
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=8,
            deadline=None,
            database=None,
            derandomize=not RANDOM,
            suppress_health_check=list(HealthCheck),
        )
    )
