"""URL converters; importing this module registers them (`<id:name>` in routes)."""

from __future__ import annotations

from django.urls import register_converter


class RowIdConverter:
    """A primary key: 1 to 18 digits, so every match fits a 64-bit integer column.

    Django's `int` converter takes any number of digits, and a SQLite lookup of an id
    past 2**63 - 1 raises OverflowError (a 500); such ids simply do not exist (404).
    """

    regex = "[0-9]{1,18}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        return str(value)


register_converter(RowIdConverter, "id")
