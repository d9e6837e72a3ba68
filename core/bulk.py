"""Writing rows of several models at once."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from django.db import DEFAULT_DB_ALIAS, connection, connections, models
from django.db.models.sql import InsertQuery


def inserts_are_one_statement() -> bool:
    """Whether insert_together is one statement here, and so atomic without a transaction of its own."""
    return connection.vendor == "postgresql"


def insert_together(*groups: Sequence[models.Model]) -> bool:
    """Insert each group's new rows (one model per group; primary keys set, or all left to the database).

    On PostgreSQL it is one statement, the groups before the last as data-modifying CTEs, so it is
    atomic without a transaction of its own and costs one round trip (profiling a publish: its
    inserts, each through bulk_create, were a third of its time). Django's foreign keys are checked at
    commit (deferred), so a row may refer to one inserted beside it. Returns whether it was one statement;
    elsewhere (SQLite) each group is a bulk_create and the caller needs a transaction for them.
    """
    groups = [list(group) for group in groups if group]
    if not inserts_are_one_statement():
        for group in groups:
            type(group[0]).objects.bulk_create(group)
        return False
    statements, params = [], []
    for group in groups:
        model = type(group[0])
        for row in group:
            row._prepare_related_fields_for_save(operation_name="insert_together")
        fields = model._meta.concrete_fields
        if all(row.pk is None for row in group):  # the database numbers them (their pk stays unknown here)
            fields = [field for field in fields if not field.primary_key]
        sql, sql_params = _insert(model, fields, group)
        statements.append(sql)
        params.extend(sql_params)
    if not statements:
        return True
    *first, last = statements
    if first:
        last = "WITH " + ", ".join(f"inserted_{n} AS ({sql})" for n, sql in enumerate(first)) + " " + last
    with connection.cursor() as cursor:
        cursor.execute(last, params)
    for group in groups:
        for row in group:
            row._state.adding, row._state.db = False, connection.alias
    return True


def _insert(model: type[models.Model], fields: list[models.Field], rows: list[models.Model]) -> tuple[str, list]:
    """The INSERT of these rows and its parameters, the values prepared as Django's compiler prepares them but
    the statement's text cached by shape instead of compiled each time: compiling was a fifth of a single
    publish's time, and preparing every value of every row half of a 500-subscription fan-out's Python time
    (bench/RESULTS.md). Several rows go in through UNNEST (as Django's compiler does on PostgreSQL, to keep
    the planning short), with a column that is the same in every row (the event of a fan-out, the tenant, the
    defaults) as one parameter. Expressions and custom placeholders go through Django's compiler."""
    db = connections[DEFAULT_DB_ALIAS]  # once: each `connection.` goes through a thread-local proxy
    if not any(getattr(field, "get_placeholder", None) for field in fields):
        columns = [[field.pre_save(row, add=True) for row in rows] for field in fields]
        if not any(hasattr(value, "resolve_expression") for column in columns for value in column):
            if len(rows) == 1:
                values = [
                    field.get_db_prep_save(column[0], connection=db)
                    for field, column in zip(fields, columns, strict=True)
                ]
                return _one_row_insert(model, tuple(fields)), values
            varying = tuple(any(value != column[0] for value in column) for column in columns)
            if any(varying):
                constants, arrays = [], []
                for field, column, varies in zip(fields, columns, varying, strict=True):
                    if varies:
                        arrays.append([field.get_db_prep_save(value, connection=db) for value in column])
                    else:
                        constants.append(field.get_db_prep_save(column[0], connection=db))
                return _columns_insert(model, tuple(fields), varying), constants + arrays
    query = InsertQuery(model)
    query.insert_values(fields, rows)
    ((sql, sql_params),) = query.get_compiler(connection=db).as_sql()
    return sql, list(sql_params)


@lru_cache(maxsize=64)
def _one_row_insert(model: type[models.Model], fields: tuple[models.Field, ...]) -> str:
    db = connections[DEFAULT_DB_ALIAS]
    columns = ", ".join(db.ops.quote_name(field.column) for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    return f"INSERT INTO {db.ops.quote_name(model._meta.db_table)} ({columns}) VALUES ({placeholders})"  # noqa: S608


@lru_cache(maxsize=64)
def _columns_insert(model: type[models.Model], fields: tuple[models.Field, ...], varying: tuple[bool, ...]) -> str:
    """INSERT … SELECT: a constant column is one typed parameter, the others are arrays unnested side by side."""
    db = connections[DEFAULT_DB_ALIAS]
    names = ", ".join(db.ops.quote_name(field.column) for field in fields)
    select = ", ".join(
        f"u.c{n}" if varies else f"CAST(%s AS {field.db_type(db)})"
        for n, (field, varies) in enumerate(zip(fields, varying, strict=True))
    )
    # As Django's own UNNEST: the arrays' types without their length, so nothing is cut to fit a cast.
    arrays = ", ".join(
        f"CAST(%s AS {field.db_type(db).split('(')[0]}[])"
        for field, varies in zip(fields, varying, strict=True)
        if varies
    )
    aliases = ", ".join(f"c{n}" for n, varies in enumerate(varying) if varies)
    table = db.ops.quote_name(model._meta.db_table)
    return f"INSERT INTO {table} ({names}) SELECT {select} FROM UNNEST({arrays}) AS u({aliases})"  # noqa: S608
