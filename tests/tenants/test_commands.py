from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from tenants.models import ApiKey, Tenant


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def works(key: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client.get("/v1/webhooks/subscriptions").status_code


def test_create_tenant_is_idempotent(db):
    assert "Created" in run("create_tenant", "acme", "--name", "Acme")
    assert "already exists" in run("create_tenant", "acme", "--name", "Other")
    assert Tenant.objects.get(slug="acme").name == "Acme"


def test_create_tenant_refuses_a_bad_slug(db):
    with pytest.raises(CommandError, match="slug"):
        run("create_tenant", "not a slug")


def test_create_api_key_prints_the_key_alone_on_the_last_line(alice):
    output = run(
        "create_api_key", "alice", "--scopes", "webhooks:read,audit:read", "--name", "ci", "--expires-in", "30"
    )
    key = output.strip().splitlines()[-1]
    assert key.startswith("asiri_") and " " not in key
    api_key = ApiKey.objects.find(key)
    assert api_key.scopes == ["audit:read", "webhooks:read"] and api_key.name == "ci"
    assert api_key.expires_at is not None
    assert works(key) == 200


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nobody", "--scopes", "webhooks:read"], "Unknown tenant"),
        (["alice", "--scopes", "webhooks:read,admin:all"], "admin:all"),
        (["alice", "--scopes", ","], "at least one scope"),
        (["alice", "--scopes", "webhooks:read", "--expires-in", "0"], "at least 1 day"),
    ],
)
def test_create_api_key_explains_what_is_wrong(alice, args, message):
    with pytest.raises(CommandError, match=message):
        run("create_api_key", *args)
    assert ApiKey.objects.count() == 0


def test_revoke_api_key_by_whole_key_or_visible_part(alice, make_key):
    first, second = make_key(alice), make_key(alice)
    run("revoke_api_key", first)
    run("revoke_api_key", ApiKey.objects.find(second).visible_part)
    assert works(first) == 401 and works(second) == 401


def test_revoke_api_key_refuses_an_unknown_key(db):
    with pytest.raises(CommandError, match="Unknown API key"):
        run("revoke_api_key", "asiri_AAAAAAAAAAAA")


def test_deactivate_tenant_turns_its_keys_off(alice, make_key):
    key = make_key(alice)
    run("deactivate_tenant", "alice")
    assert works(key) == 401
    with pytest.raises(CommandError, match="Unknown tenant"):
        run("deactivate_tenant", "nobody")


def test_commands_exit_1_on_errors(alice):
    """Operators script these: a CommandError must become exit status 1 from the shell."""
    import subprocess
    import sys

    from tests.support.processes import ROOT, service_env

    result = subprocess.run(
        [sys.executable, "manage.py", "create_api_key", "nobody", "--scopes", "webhooks:read"],
        cwd=ROOT,
        env=service_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "Unknown tenant" in result.stderr
