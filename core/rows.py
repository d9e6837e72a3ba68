"""Model instances from rows read with raw SQL, as a queryset would make them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from django.db import DEFAULT_DB_ALIAS, connections, models


def row_builder(
    model: type[models.Model], attnames: Sequence[str] | None = None
) -> tuple[Callable[[Sequence], models.Model], list[models.Field]]:
    """A function making an instance of `model` from a raw row of the given fields' columns (every concrete
    field if none are named), converted as a queryset would; and those fields, in the order the row must
    hold them (the model's: Model.from_db matches values to fields in that order). The converters are
    looked up once, not per row: a claim or a fan-out builds hundreds."""
    db = connections[DEFAULT_DB_ALIAS]  # the proxy `connection` costs a lookup per attribute
    fields = [f for f in model._meta.concrete_fields if attnames is None or f.attname in attnames]
    names = [f.attname for f in fields]
    converters = [
        (n, f.cached_col, [*db.ops.get_db_converters(f.cached_col), *f.get_db_converters(db)])
        for n, f in enumerate(fields)
    ]
    converters = [entry for entry in converters if entry[2]]

    def build(values: Sequence) -> models.Model:
        values = list(values)
        for n, column, functions in converters:
            for convert in functions:
                values[n] = convert(values[n], column, db)
        return model.from_db(db.alias, names, values)

    return build, fields
