"""Hand-written SQL that cannot drift from the models: names from `_meta`, values via Django.

The labeling hot path and the token lookup are plain statements (see
`annotation.selectors.queue`); these helpers keep them honest. `Table` spells every table
and column from the models' `_meta`, so renaming a field (or its `db_column`) renames the
SQL and a field that is gone fails at import. `instance` builds a model from exactly its
own columns, converted by the same field and backend converters the ORM applies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from django.db import connection
from django.db.models import Model

M = TypeVar("M", bound=Model)


class Table:
    """A model's table under an alias, for SQL templates.

    `{c}` reads "<table> c" and `{c.field}` "c.<column of field>" (`{c.pk}`: the primary key).
    """

    def __init__(self, model: type[Model], alias: str) -> None:
        self.model = model
        self.alias = alias

    def __str__(self) -> str:
        return f"{self.model._meta.db_table} {self.alias}"

    def __getattr__(self, name: str) -> str:
        if name.startswith("__"):  # copy, pickle and friends probe for dunders
            raise AttributeError(name)
        meta = self.model._meta
        # Raises FieldDoesNotExist for a field that is gone: the SQL fails at import, loudly.
        field = meta.pk if name == "pk" else meta.get_field(name)
        return f"{self.alias}.{field.column}"

    def columns(self) -> str:
        """Every concrete column, in `_meta` order: what `instance` expects back."""
        return ", ".join(f"{self.alias}.{f.column}" for f in self.model._meta.concrete_fields)


def converted(fields, values: Sequence) -> list:
    """Database values as the ORM would hand them over: Django's own converters, per field."""
    out = []
    for field, value in zip(fields, values):
        col = field.cached_col
        for convert in connection.ops.get_db_converters(col) + col.get_db_converters(connection):
            value = convert(value, col, connection)
        out.append(value)
    return out


def instance(model: type[M], values: Sequence) -> M:
    """A model instance from its concrete columns in `_meta` order (see `Table.columns`)."""
    fields = model._meta.concrete_fields
    return model.from_db(connection.alias, [f.attname for f in fields], converted(fields, values))


def fetchone(sql: str, params: list) -> tuple | None:
    """The first row of one statement, or None."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


def for_update(sql: str) -> str:
    """`sql` with FOR UPDATE where the database has row locks (SQLite serializes writers)."""
    return f"{sql} FOR UPDATE" if connection.features.has_select_for_update else sql
