"""The API's shared conventions: JSON parsing with a size cap, error bodies, keyset paging."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core import signing
from django.db.models import Q, QuerySet
from django.http import Http404
from rest_framework import exceptions, serializers, status
from rest_framework.pagination import BasePagination
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

from core.outages import DATABASE_TRANSIENT
from core.unavailable import DATABASE_UNAVAILABLE, Unavailable, database_unavailable


class StrictCharField(serializers.CharField):
    """A string field that refuses numbers and booleans instead of quietly stringifying them."""

    def to_internal_value(self, data) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """An integer field that refuses strings, fractions and booleans (DRF takes "5", 5.5 and true).

    5.0 is the integer 5, as JSON Schema (and so the OpenAPI document) counts integers.
    """

    def to_internal_value(self, data) -> int:
        if isinstance(data, float) and data.is_integer():
            data = int(data)
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """A boolean field that takes only true and false (DRF also takes "yes", "on", 1, "0"...)."""

    def to_internal_value(self, data) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictSerializerMixin:
    """A request serializer that refuses what it would otherwise ignore: unknown and read-only fields.

    `read_only_names` lists the fields a client sees in responses but may not send (`id`, `secret`, …),
    so sending one says "read-only" rather than "unknown".
    """

    read_only_names: tuple[str, ...] = ()

    def to_internal_value(self, data):
        if isinstance(data, dict):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            errors = {
                name: ["This field is read-only."] if name in self.read_only_names else ["Unknown field."]
                for name in data
                if name not in writable
            }
            if errors:
                raise exceptions.ValidationError(errors)
        return super().to_internal_value(data)


class NoBodySerializer(StrictSerializerMixin, serializers.Serializer):
    """For operations that take no body: any member sent is a 400, not silently ignored."""


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body is too large."
    default_code = "payload_too_large"


# How deep a JSON value in a request may nest ({} and [] are one level each). Python's json module
# recurses, and gives up near 1,000 levels with a RecursionError; walks of client data must not.
MAX_JSON_DEPTH = 64
TOO_DEEP = f"Must not be nested more than {MAX_JSON_DEPTH} levels deep."
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}:]')


def _member_too_deep(text: str) -> str | None:
    """The top-level member of a JSON object whose value nests more than MAX_JSON_DEPTH levels.

    A token scan, not a parse: it serves when the json module itself cannot go that deep.
    """
    depth, member, last_string = 0, None, None
    for match in _JSON_TOKEN.finditer(text):
        symbol = match.group()
        if symbol in ("[", "{"):
            depth += 1
            if depth > MAX_JSON_DEPTH + 1:  # the body's own braces are not the member's
                return member
        elif symbol in ("]", "}"):
            depth -= 1
        elif symbol == ":":
            if depth == 1 and last_string is not None:
                member = json.loads(last_string)
        else:
            last_string = symbol
    return None


class BoundedJSONParser(JSONParser):
    """JSON parser that refuses bodies over a byte limit, too deep, or with strings PostgreSQL cannot store.

    asiri/limits.py refuses a body over ASIRI_MAX_REQUEST_BYTES before any view runs (and before
    Django's own, HTML, limit); a view may set a lower one here with `max_body_bytes`.
    Fields check MAX_JSON_DEPTH themselves; this answers for bodies the json module cannot read.
    """

    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        view = (parser_context or {}).get("view")
        limit = getattr(view, "max_body_bytes", settings.ASIRI_MAX_REQUEST_BYTES)
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise PayloadTooLarge(f"Request body is larger than {limit} bytes.")
        try:
            text = raw.decode("utf-8")
            data = json.loads(text)
            # Lone surrogates (\ud800) parse fine but cannot be encoded, stored or echoed back.
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except (ValueError, UnicodeError) as exc:
            raise exceptions.ParseError(f"Request body is not valid JSON: {exc}") from None
        except RecursionError:
            member = _member_too_deep(text)
            if member is None:
                raise exceptions.ParseError(f"Request body is nested more than {MAX_JSON_DEPTH} levels deep.") from None
            raise exceptions.ValidationError({member: [TOO_DEEP]}) from None
        return data


logger = logging.getLogger(__name__)

UNAUTHENTICATED = "Missing or invalid API key."


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's handler, with one 404 body whatever was missing and 401s that name the Bearer scheme."""
    # Imported here: rest_framework.views reads the parser setting, which names this module.
    from rest_framework.views import exception_handler as drf_exception_handler

    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    where = f"{context['request'].method} {context['request'].path}"
    if unavailable := database_unavailable(exc, where, logger):
        return _unavailable(unavailable)
    if isinstance(exc, DATABASE_TRANSIENT):
        # The database gave up on the statement (a deadlock, a timeout): nothing the client did, and worth trying
        # again, as a 503 says; a 500 would read as a bug here.
        logger.error("%s: the database gave up on the statement", where, exc_info=exc)
        return _unavailable(Unavailable(DATABASE_UNAVAILABLE, retry_after=5))
    response = drf_exception_handler(exc, context)
    if response is not None and response.status_code == status.HTTP_401_UNAUTHORIZED:
        # One body for a missing key and every kind of wrong one: the answer tells a caller nothing.
        response.data = {"detail": UNAUTHENTICATED}
        response["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


def _unavailable(unavailable: Unavailable) -> Response:
    from rest_framework.views import set_rollback

    set_rollback()
    response = Response({"detail": unavailable.detail}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
    response["Retry-After"] = str(unavailable.retry_after)
    # Said already (core.outages): not again by django.request, an ERROR per request (log_response).
    response._has_been_logged = True
    return response


_CURSOR_SALT = "asiri.api.cursor"  # unchanged since it lived in asiri/api.py: issued cursors stay valid


class KeysetPagination(BasePagination):
    """Cursor paging on (created_at, id), newest first.

    Unlike DRF's CursorPagination it never uses an offset, so page 1,000 costs what page 1
    costs, rows inserted between two requests neither repeat nor vanish, and a cursor the
    server did not sign is a 400 rather than a 404 or a silently wrong page.
    """

    page_size = 50
    max_page_size = 100
    cursor_query_param = "cursor"
    page_size_query_param = "limit"

    def paginate_queryset(self, queryset: QuerySet, request: Request, view=None) -> list:
        self.request = request
        self.limit = self._read_limit(request)
        position = self._read_cursor(request)
        self.has_next = self.has_previous = False
        if position is None:
            rows = list(queryset.order_by("-created_at", "-id")[: self.limit + 1])
            self.has_next = len(rows) > self.limit
            rows = rows[: self.limit]
        else:
            created_at, row_id, backwards = position
            if backwards:
                after = Q(created_at__gte=created_at) & (Q(created_at__gt=created_at) | Q(id__gt=row_id))
                rows = list(queryset.filter(after).order_by("created_at", "id")[: self.limit + 1])
                self.has_previous = len(rows) > self.limit
                rows = list(reversed(rows[: self.limit]))
                self.has_next = True
            else:
                before = Q(created_at__lte=created_at) & (Q(created_at__lt=created_at) | Q(id__lt=row_id))
                rows = list(queryset.filter(before).order_by("-created_at", "-id")[: self.limit + 1])
                self.has_next = len(rows) > self.limit
                rows = rows[: self.limit]
                self.has_previous = True
        self.rows = rows
        return rows

    def _read_limit(self, request: Request) -> int:
        raw = request.query_params.get(self.page_size_query_param, "")
        if raw == "":
            return self.page_size
        if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= self.max_page_size:
            raise exceptions.ValidationError(
                {self.page_size_query_param: [f"Must be a whole number from 1 to {self.max_page_size}."]}
            )
        return int(raw)

    def _read_cursor(self, request: Request) -> tuple[datetime, str, bool] | None:
        raw = request.query_params.get(self.cursor_query_param, "")
        if raw == "":
            return None
        try:
            created_at, row_id, backwards = signing.loads(raw, salt=_CURSOR_SALT)
            return datetime.fromisoformat(created_at), str(row_id), bool(backwards)
        except (signing.BadSignature, ValueError, TypeError):
            raise exceptions.ValidationError(
                {self.cursor_query_param: ["Invalid cursor: use the next or previous link of a listing."]}
            ) from None

    @staticmethod
    def cursor_for(row, backwards: bool = False) -> str:
        """The cursor of the page that starts after (or, backwards, before) this row."""
        return signing.dumps([row.created_at.isoformat(), row.id, backwards], salt=_CURSOR_SALT, compress=True)

    def _link(self, row, backwards: bool) -> str:
        token = self.cursor_for(row, backwards)
        url = self.request.build_absolute_uri()
        return replace_query_param(url, self.cursor_query_param, token)

    def get_next_link(self) -> str | None:
        return self._link(self.rows[-1], backwards=False) if self.has_next and self.rows else None

    def get_previous_link(self) -> str | None:
        if not self.has_previous:
            return None
        if not self.rows:
            return remove_query_param(self.request.build_absolute_uri(), self.cursor_query_param)
        return self._link(self.rows[0], backwards=True)

    def get_paginated_response(self, data: Sequence) -> Response:
        return Response({"next": self.get_next_link(), "previous": self.get_previous_link(), "results": data})

    def get_paginated_response_schema(self, schema: dict) -> dict:
        return {
            "type": "object",
            "required": ["next", "previous", "results"],
            "properties": {
                "next": {"type": ["string", "null"], "format": "uri"},
                "previous": {"type": ["string", "null"], "format": "uri"},
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view) -> list[dict]:
        return [
            {
                "name": self.cursor_query_param,
                "in": "query",
                "required": False,
                "description": "Opaque cursor from a previous page's `next` or `previous` link.",
                "schema": {"type": "string"},
            },
            {
                "name": self.page_size_query_param,
                "in": "query",
                "required": False,
                "description": f"Items per page, 1 to {self.max_page_size} (default {self.page_size}; so does empty).",
                "schema": {
                    "anyOf": [
                        {"type": "integer", "minimum": 1, "maximum": self.max_page_size},
                        {"type": "string", "maxLength": 0},
                    ],
                    "default": self.page_size,
                },
            },
        ]


class SubscriptionPagination(KeysetPagination):
    page_size = 100


class NameKeysetPagination(KeysetPagination):
    """Keyset paging on a unique name, in name order: for catalogs, where the order people read is A to Z."""

    page_size = 100
    key = "name"

    def paginate_queryset(self, queryset: QuerySet, request: Request, view=None) -> list:
        self.request = request
        self.limit = self._read_limit(request)
        position = self._read_cursor(request)
        self.has_next = self.has_previous = False
        if position is None:
            rows = list(queryset.order_by(self.key)[: self.limit + 1])
            self.has_next = len(rows) > self.limit
        else:
            name, backwards = position
            if backwards:
                rows = list(queryset.filter(**{f"{self.key}__lt": name}).order_by(f"-{self.key}")[: self.limit + 1])
                self.has_previous = len(rows) > self.limit
                rows = list(reversed(rows[: self.limit]))
                self.has_next = True
            else:
                rows = list(queryset.filter(**{f"{self.key}__gt": name}).order_by(self.key)[: self.limit + 1])
                self.has_next = len(rows) > self.limit
                self.has_previous = True
        self.rows = rows[: self.limit]
        return self.rows

    def _read_cursor(self, request: Request) -> tuple[str, bool] | None:  # type: ignore[override]
        raw = request.query_params.get(self.cursor_query_param, "")
        if raw == "":
            return None
        try:
            name, backwards = signing.loads(raw, salt=_CURSOR_SALT + ".name")
            return str(name), bool(backwards)
        except (signing.BadSignature, ValueError, TypeError):
            raise exceptions.ValidationError(
                {self.cursor_query_param: ["Invalid cursor: use the next or previous link of a listing."]}
            ) from None

    def _link(self, row, backwards: bool) -> str:
        token = signing.dumps([getattr(row, self.key), backwards], salt=_CURSOR_SALT + ".name", compress=True)
        return replace_query_param(self.request.build_absolute_uri(), self.cursor_query_param, token)
