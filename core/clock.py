"""The database's clock: due times and leases are compared across hosts, so they are all read from one clock."""

from __future__ import annotations

from datetime import datetime

from django.db import connection
from django.utils import timezone


def database_now() -> datetime:
    """The database's current time (PostgreSQL's statement_timestamp(); SQLite runs on this host anyway)."""
    if connection.vendor != "postgresql":
        return timezone.now()
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement_timestamp()")
        return cursor.fetchone()[0]
