"""A request the database cannot serve now, through no fault of the client: said once (core.outages), answered 503.

The API (core.api's exception handler) and every other page (asiri.errors, the admin and /docs) ask here, so an
outage or a deploy still waiting for `migrate` reads the same everywhere, and is never a 500 with a traceback per
request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import DatabaseError

from core.outages import DATABASE, unreachable
from core.schema import MIGRATIONS, missing_migrations

DATABASE_UNAVAILABLE = (
    "The service is briefly unavailable (its database cannot be reached): try again in a few seconds."
)
NOT_MIGRATED = "The service is being deployed (its database lacks migrations this version needs): try again shortly."


@dataclass(frozen=True)
class Unavailable:
    detail: str
    retry_after: int


def database_unavailable(error: BaseException, where: str, log: logging.Logger) -> Unavailable | None:
    """If `error` says the database is away or lacks this code's migrations, log it (once a minute) and say what to
    answer; None for any other error, which is the caller's to handle."""
    if not isinstance(error, DatabaseError):
        return None
    if unreachable(error):  # a restart, a failover, a lost connection
        DATABASE.failed(log, where, error)
        return Unavailable(DATABASE_UNAVAILABLE, retry_after=5)
    if missing := missing_migrations(error):  # started before the release step ran `migrate`
        MIGRATIONS.failed(log, where, missing)
        return Unavailable(NOT_MIGRATED, retry_after=30)
    return None
