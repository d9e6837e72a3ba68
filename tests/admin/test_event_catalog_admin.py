"""The event catalog in the admin: superusers edit schemas and examples as formatted JSON, checked on save."""

from __future__ import annotations

import json

import pytest

from webhooks.models import EventType

INVOICE_SCHEMA = {
    "type": "object",
    "required": ["invoice", "amount"],
    "properties": {"invoice": {"type": "string"}, "amount": {"type": "integer", "minimum": 0}},
}
ADMIN = "/admin/webhooks/eventtype/"


def admin_form(**fields) -> dict:
    return {
        "name": "invoice.paid",
        "description": "Paid.",
        "schema": json.dumps(INVOICE_SCHEMA),
        "example": json.dumps({"invoice": "in_1", "amount": 5}),
        **fields,
    }


def test_a_superuser_creates_edits_and_deletes_a_type(superuser_client):
    response = superuser_client.post(f"{ADMIN}add/", admin_form())
    assert response.status_code == 302, response.content
    assert EventType.objects.get(pk="invoice.paid").example == {"invoice": "in_1", "amount": 5}
    page = superuser_client.get(f"{ADMIN}invoice.paid/change/").content.decode()
    assert '"required": [\n    "invoice",' in page.replace("&quot;", '"')  # shown indented
    response = superuser_client.post(f"{ADMIN}invoice.paid/change/", admin_form(deprecated="on"))
    assert response.status_code == 302 and EventType.objects.get(pk="invoice.paid").deprecated
    response = superuser_client.post(f"{ADMIN}invoice.paid/delete/", {"post": "yes"})
    assert response.status_code == 302 and not EventType.objects.exists()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"schema": json.dumps({"type": 5})}, "Not a valid JSON Schema 2020-12"),
        ({"example": json.dumps({"invoice": "in_1"})}, "&quot;amount&quot; is a required property"),
        ({"schema": "{not json"}, "Enter a valid JSON"),
        ({"name": "invoice.*"}, "Must be an event name"),
        # PostgreSQL's jsonb holds no \u0000: refused on the form, not a 500 from the database.
        ({"schema": json.dumps({**INVOICE_SCHEMA, "description": "a\x00b"})}, "Must not contain NUL"),
        ({"example": json.dumps({"invoice": "in_\x00", "amount": 5})}, "Must not contain NUL"),
        ({"example": json.dumps({"invoice": "in_1", "amount": 5, "\x00": 1})}, "Must not contain NUL"),
        # What jsonb refuses, and what Python's json module cannot read, each a 500 before.
        ({"schema": '{"type": "object", "const": NaN}'}, "NaN is not JSON"),
        ({"example": '{"invoice": "in_1", "amount": Infinity}'}, "Infinity is not JSON"),
        ({"schema": "[" * 5000 + "]" * 5000}, "nested more than"),
        ({"example": '{"invoice": "in_1", "amount": 5, "\\ud800": 1}'}, "lone surrogates"),
        ({"example": '"\\ud800"'}, "lone surrogates"),
    ],
)
def test_the_admin_refuses_a_bad_schema_or_example_with_the_reason(superuser_client, fields, message):
    response = superuser_client.post(f"{ADMIN}add/", admin_form(**fields))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not EventType.objects.exists()


def test_support_staff_cannot_edit_the_catalog(support_client):
    assert support_client.post(f"{ADMIN}add/", admin_form()).status_code == 403
