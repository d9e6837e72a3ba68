"""Model instances made in bulk: from rows read with raw SQL, as a queryset would make them, and unsaved copies
of a template, as a fan-out makes hundreds.

Both make an instance the way unpickling does (Django's model_unpickle and Model.__setstate__): the class's
__new__ and the attributes, without Model.__init__, which walks every field, calls its default or its descriptor,
and sends pre_init and post_init, for each instance. That was most of the Python a claim spent building a
delivery and a fan-out spent making one (bench/RESULTS.md). What differs is only what nothing here uses: no
post_init receivers run (Django connects them only for image fields).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.models.base import ModelState

M = TypeVar("M", bound=models.Model)


def row_builder(
    model: type[models.Model], attnames: Sequence[str] | None = None
) -> tuple[Callable[[Sequence], models.Model], list[models.Field]]:
    """A function making an instance of `model` from a raw row of the given fields' columns (every concrete
    field if none are named), converted as a queryset would; and those fields, in the order the row must
    hold them (the model's). The converters are looked up once, not per row: a claim or a fan-out builds
    hundreds. Fields left out are deferred, as with QuerySet.only(): not in the instance's __dict__."""
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
        return loaded(model, zip(names, values, strict=True), db.alias)

    return build, fields


def loaded(model: type[M], values: Iterable[tuple[str, object]], alias: str = DEFAULT_DB_ALIAS) -> M:
    """An instance as a queryset loads it, from (attname, converted value) pairs; fields left out are deferred."""
    instance = model.__new__(model)
    instance.__dict__.update(values)
    instance._state = state = ModelState()
    state.adding, state.db = False, alias
    return instance


def unsaved_copy(template: M, changes: Mapping[str, object]) -> M:
    """A new, unsaved instance with the template's field values (attnames) but for `changes`, and no
    related instances cached. Values are shared, not copied: the template must hold no mutable one."""
    model = type(template)
    instance = model.__new__(model)
    instance.__dict__.update(template.__dict__)
    instance.__dict__.update(changes)
    instance._state = ModelState()
    return instance
