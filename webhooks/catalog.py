"""The event catalog's rules: schemas are valid JSON Schema 2020-12, examples and published data obey them,
and in strict mode only registered types are published and subscribed to.

Compiled validators are cached per (name, updated_at): an edit in the admin or a reload gets a fresh one
without any process having to be told. Data is validated by jsonschema_rs (Rust): 0.004 ms for a 1 KB invoice
where the pure-Python jsonschema took 0.48 ms (bench/RESULTS.md); jsonschema checks schemas against the 2020-12
meta-schema, where its messages read better. Remote `$ref`s are never fetched.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any

import jsonschema_rs
from django.conf import settings
from django.db import connection, transaction
from jsonschema import Draft202012Validator as MetaSchemaChecker
from jsonschema.exceptions import SchemaError

from core.clock import database_now
from core.jsonfields import json_problem
from core.rows import row_builder
from tenants.models import Tenant
from webhooks.events import EVENT_NAME_RE, pattern_matches
from webhooks.models import MATCHING_FIELDS, EventType, Subscription

MAX_REPORTED_ERRORS = 20


class EventRejected(ValueError):
    """Published data that the catalog refuses: `errors` is a field → list body for a 400."""

    def __init__(self, errors: dict[str, list], *, index: int = 0) -> None:
        super().__init__(str(errors))
        self.errors = errors
        self.index = index  # which of the events checked together


def pointer(path) -> str:
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def schema_problem(schema: Any) -> str | None:
    """Why this is not a usable JSON Schema 2020-12, or None."""
    if not isinstance(schema, dict | bool):
        return "Must be a JSON Schema: an object (or true/false)."
    try:
        MetaSchemaChecker.check_schema(schema)
    except SchemaError as exc:
        return f"Not a valid JSON Schema 2020-12 at {pointer(exc.absolute_path) or '/'}: {exc.message}"
    try:
        compile_schema(schema)
    except (jsonschema_rs.ValidationError, ValueError) as exc:
        return f"Not a usable JSON Schema 2020-12: {str(exc).splitlines()[0]}"
    return None


def _no_remote_references(uri: str):
    raise ValueError(f"remote references are not fetched ({uri}); put the definition in $defs")


def compile_schema(schema: Any) -> jsonschema_rs.Draft202012Validator:
    return jsonschema_rs.Draft202012Validator(schema, retriever=_no_remote_references)


def data_errors(schema: Any, data: Any, *, validator=None) -> list[dict[str, str]]:
    """Each way `data` breaks the schema, as {"pointer", "message"}, in document order."""
    validator = validator or compile_schema(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.instance_path])
    return [{"pointer": pointer(e.instance_path), "message": e.message} for e in errors[:MAX_REPORTED_ERRORS]]


def event_type_problems(*, schema: Any, example: Any) -> dict[str, str]:
    """What the admin and the loader refuse to store: a bad schema, or an example that does not obey it."""
    # What the API refuses in its JSON too: jsonb cannot hold NUL, and PostgreSQL's refusal was a 500.
    for field, value in (("schema", schema), ("example", example)):
        if problem := json_problem(value):
            return {field: problem}
    problem = schema_problem(schema)
    if problem:
        return {"schema": problem}
    if example is not None:
        if not isinstance(example, dict):
            return {"example": "Must be a JSON object (an event's data), or empty."}
        errors = data_errors(schema, example)
        if errors:
            return {
                "example": "Does not validate: " + "; ".join(f"{e['pointer'] or '/'}: {e['message']}" for e in errors)
            }
    return {}


@lru_cache(maxsize=1024)
def _compiled(name: str, updated_at: str) -> jsonschema_rs.Draft202012Validator:
    schema = EventType.objects.values_list("schema", flat=True).get(pk=name)
    return compile_schema(schema)


def _clock_and_versions(names: list[str]) -> tuple[datetime, dict[str, datetime]]:
    if connection.vendor != "postgresql":
        return database_now(), dict(EventType.objects.filter(pk__in=names).values_list("pk", "updated_at"))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT statement_timestamp(), array_agg(name), array_agg(updated_at) "  # noqa: S608 (the model's table)
            f"FROM {EventType._meta.db_table} WHERE name = ANY(%s)",
            [names],
        )
        now, found, stamps = cursor.fetchone()
    return now, dict(zip(found or [], stamps or [], strict=True))


def _clock_versions_and_subscriptions(
    names: list[str], tenant: Tenant
) -> tuple[datetime, dict[str, datetime], list[Subscription]]:
    """_clock_and_versions, and the tenant's live subscriptions with MATCHING_FIELDS, in one query on PostgreSQL."""
    if connection.vendor != "postgresql":
        now, versions = _clock_and_versions(names)
        return now, versions, list(Subscription.objects.live().for_tenant(tenant).only(*MATCHING_FIELDS))
    build, fields = row_builder(Subscription, MATCHING_FIELDS)
    columns = ", ".join(f"s.{connection.ops.quote_name(field.column)}" for field in fields)
    with connection.cursor() as cursor:
        # SubscriptionQuerySet.live() and for_tenant(), written out: a compiled queryset cost a publish more
        # than the round trip it shares here (bench/RESULTS.md).
        cursor.execute(
            f"SELECT statement_timestamp(), c.names, c.stamps, {columns} "  # noqa: S608 (the models' names)
            f"FROM (SELECT array_agg(name) AS names, array_agg(updated_at) AS stamps "
            f"FROM {EventType._meta.db_table} WHERE name = ANY(%s)) AS c "
            f"LEFT JOIN {Subscription._meta.db_table} AS s ON s.tenant_id = %s AND s.deleted_at IS NULL",
            [names, tenant.pk],
        )
        rows = cursor.fetchall()
    now, found, stamps = rows[0][:3]
    subscriptions = [build(row[3:]) for row in rows if row[3] is not None]  # None: the LEFT JOIN's row alone
    return now, dict(zip(found or [], stamps or [], strict=True)), subscriptions


def events_check_and_subscriptions(
    events: list[tuple[str, dict[str, Any]]], tenant: Tenant
) -> tuple[datetime, list[Subscription]]:
    """Raise EventRejected if the catalog refuses one of these events (`index` says which): data against a
    registered type's schema in either mode, an unregistered type in strict mode. Otherwise return all that
    a publish reads before it writes: the database's clock and the tenant's live subscriptions
    (MATCHING_FIELDS loaded), with the catalog in one query on PostgreSQL. Round trips and compiled querysets
    were most of a single publish's time (bench/RESULTS.md)."""
    now, versions, subscriptions = _clock_versions_and_subscriptions(sorted({t for t, _ in events}), tenant)
    _check(events, versions)
    return now, subscriptions


def _check(events: list[tuple[str, dict[str, Any]]], versions: dict[str, datetime]) -> None:
    for index, (event_type, data) in enumerate(events):
        updated_at = versions.get(event_type)
        if updated_at is None:
            if settings.ASIRI_EVENT_CATALOG == "strict":
                raise EventRejected(
                    {"type": ["Not a registered event type (GET /v1/event-types lists them)."]}, index=index
                )
            continue
        validator = _compiled(event_type, updated_at.isoformat())
        if not validator.is_valid(data):
            raise EventRejected({"data": data_errors(None, data, validator=validator)}, index=index)


def unmatched_patterns(patterns: list[str]) -> list[str]:
    """In strict mode, the patterns that match no registered event type (always none in open mode)."""
    if settings.ASIRI_EVENT_CATALOG != "strict":
        return []
    names = list(EventType.objects.values_list("name", flat=True))
    return [p for p in patterns if not any(pattern_matches(p, name) for name in names)]


def deprecated_matches(patterns: list[str], deprecated_names: list[str]) -> list[str]:
    """The deprecated event types these patterns would receive."""
    return [name for name in deprecated_names if any(pattern_matches(p, name) for p in patterns)]


def deprecated_names() -> list[str]:
    return list(EventType.objects.filter(deprecated=True).values_list("name", flat=True))


class CatalogFileError(ValueError):
    """A catalog file that cannot be loaded; nothing was changed."""


def event_types_load(entries: Any, *, prune: bool = False, progress=None) -> dict[str, int]:
    """Upsert the catalog from a list of {name, description, schema, example, deprecated}; with prune, delete
    the types not listed. All or nothing: every entry is checked before any row is written."""
    if not isinstance(entries, list):
        raise CatalogFileError("The file must hold a JSON array of event types.")
    allowed = {"name", "description", "schema", "example", "deprecated"}
    checked: dict[str, dict[str, Any]] = {}
    for index, entry in enumerate(entries):
        where = f"entry {index}"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise CatalogFileError(f"{where}: must be an object with a string name.")
        name = entry["name"]
        where = f"{where} ({name})"
        unknown = set(entry) - allowed
        if unknown:
            raise CatalogFileError(f"{where}: unknown fields {', '.join(sorted(unknown))}.")
        if not EVENT_NAME_RE.fullmatch(name):
            raise CatalogFileError(f"{where}: not an event name (lowercase words separated by dots, no wildcards).")
        if name in checked:
            raise CatalogFileError(f"{where}: listed twice.")
        fields = {
            "description": entry.get("description", ""),
            "schema": entry.get("schema", {}),
            "example": entry.get("example"),
            "deprecated": entry.get("deprecated", False),
        }
        if not isinstance(fields["description"], str) or "\x00" in fields["description"]:
            raise CatalogFileError(f"{where}: description must be a string without NUL (\\u0000) characters.")
        if not isinstance(fields["deprecated"], bool):
            raise CatalogFileError(f"{where}: deprecated must be true or false.")
        problems = event_type_problems(schema=fields["schema"], example=fields["example"])
        if problems:
            raise CatalogFileError(f"{where}: " + "; ".join(f"{k}: {v}" for k, v in problems.items()))
        checked[name] = fields
    counts = {"created": 0, "updated": 0, "unchanged": 0, "removed": 0}
    with transaction.atomic():
        existing = {row.name: row for row in EventType.objects.select_for_update()}
        for name, fields in checked.items():
            row = existing.get(name)
            if row is None:
                EventType.objects.create(name=name, **fields)
                outcome = "created"
            elif any(getattr(row, key) != value for key, value in fields.items()):
                for key, value in fields.items():
                    setattr(row, key, value)
                row.save()
                outcome = "updated"
            else:
                outcome = "unchanged"
            counts[outcome] += 1
            if progress:
                progress(f"{outcome:9} {name}")
        if prune:
            for name in sorted(set(existing) - set(checked)):
                existing[name].delete()
                counts["removed"] += 1
                if progress:
                    progress(f"removed   {name}")
    return counts
