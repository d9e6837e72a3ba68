"""The Support group, as the migrations make it, for tests that sign in as support staff."""

from __future__ import annotations

import importlib

from django.contrib.auth.models import Group
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

# The data migrations that make the group and grant it its permissions, in order.
_MADE_BY = (("0004_support_group", "create_support_group"), ("0012_support_may_recover", "grant"))


def support_group() -> Group:
    """The group, made again if a transactional test's flush emptied the tables (permissions come back after a
    flush, data from migrations does not; under xdist a worker runs files in any order)."""
    group = Group.objects.filter(name="Support").first()
    if group is None:
        executor = MigrationExecutor(connection)
        apps = executor.loader.project_state(("deliveries", _MADE_BY[-1][0])).apps
        for module, function in _MADE_BY:
            getattr(importlib.import_module(f"deliveries.migrations.{module}"), function)(apps, None)
        group = Group.objects.get(name="Support")
    return group
