"""A JSON parser that refuses text the database cannot store.

DRF's JSONParser lets deep nesting escape as RecursionError and accepts `\\u0000` and lone
surrogates, which PostgreSQL and UTF-8 encoding reject later with a 500. Refusing them here
turns all of these into a 400 before any view runs. The body size is bounded before parsing:
DRF reads JSON through `request.body`, which enforces DATA_UPLOAD_MAX_MEMORY_SIZE (the
exception handler answers 413).
"""

from __future__ import annotations

import codecs

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.utils import json

MAX_DEPTH = 32


def check_text(value, depth: int = 0) -> None:
    """Raise ParseError for nesting deeper than MAX_DEPTH, NUL characters or lone surrogates."""
    if depth > MAX_DEPTH:
        raise ParseError(f"JSON nested deeper than {MAX_DEPTH} levels.")
    if isinstance(value, str):
        if "\x00" in value:
            raise ParseError("JSON strings must not contain NUL (\\u0000) characters.")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ParseError("JSON strings must be valid Unicode (no lone surrogates).") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, depth + 1)
            check_text(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            check_text(item, depth + 1)


class StrictJSONParser(JSONParser):
    """JSONParser that accepts bounded nesting and storable text only."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding") or settings.DEFAULT_CHARSET
        try:
            text = codecs.decode(stream.read(), encoding)
            parse_constant = json.strict_constant if self.strict else None
            data = json.loads(text, parse_constant=parse_constant)
        except RecursionError:
            raise ParseError(f"JSON nested deeper than {MAX_DEPTH} levels.") from None
        except (ValueError, LookupError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        check_text(data)
        return data
