"""Querysets compiled once and run many times: the ORM writes the SQL, a hot path only binds its values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import models


@dataclass(frozen=True)
class Compiled:
    sql: str
    params: tuple
    slots: dict[str, int]  # a stand-in's name: its place among `params`

    def bind(self, **values: Any) -> list:
        """The parameters, with each named stand-in replaced by its value."""
        params = list(self.params)
        for name, value in values.items():
            params[self.slots[name]] = value
        return params


def compile_once(queryset: models.QuerySet, **stand_ins: Any) -> Compiled:
    """The queryset's SQL and parameters, built with stand-in values that `bind` later swaps for real ones.

    Each stand-in must be a value nothing else in the query equals, and must reach the parameters unchanged
    and exactly once (a backend that turns it into something else, as SQLite does a datetime, is refused here
    rather than bound wrongly later). For a hot path that would otherwise build and compile the same queryset
    every time: that was a tenth of a pump's CPU for its claim query (bench/RESULTS.md).
    """
    sql, params = queryset.query.sql_with_params()
    slots = {}
    for name, stand_in in stand_ins.items():
        # isinstance, not the type itself: on PostgreSQL Django hands an integer over as psycopg's Int4.
        places = [n for n, param in enumerate(params) if isinstance(param, type(stand_in)) and param == stand_in]
        if len(places) != 1:
            raise ValueError(f"the stand-in for {name!r} is among the query's parameters {len(places)} times, not once")
        slots[name] = places[0]
    return Compiled(sql, tuple(params), slots)
