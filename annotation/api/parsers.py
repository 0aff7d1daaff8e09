"""A JSON parser that refuses text the database cannot store.

DRF's JSONParser lets deep nesting escape as RecursionError and accepts `\\u0000` and lone
surrogates, which PostgreSQL and UTF-8 encoding reject later with a 500. Refusing them here
turns all of these into a 400 before any view runs. The body size is bounded before parsing:
DRF reads JSON through `request.body`, which enforces DATA_UPLOAD_MAX_MEMORY_SIZE (the
exception handler answers 413).
"""

from __future__ import annotations

import codecs
import re

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser, JSONParser
from rest_framework.utils import json

from annotation.datafiles.jsonl import bounded_int

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
            data = json.loads(text, parse_constant=parse_constant, parse_int=bounded_int)
        except RecursionError:
            raise ParseError(f"JSON nested deeper than {MAX_DEPTH} levels.") from None
        except (ValueError, LookupError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        check_text(data)
        return data


# A lone surrogate escape (a high one not followed by a low one, or a low one alone). The
# streaming parser turns these into "?" instead of failing, so they are caught on the raw
# text. (A literal backslash before "ud800" trips it too: a 400 for a vanishingly rare
# text, never a silently changed one.)
_LONE_SURROGATE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<![0-9a-fA-F]{2})(?<!\\u[dD][89abAB])\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


class _SurrogateCheckingReader:
    """File-like wrapper that refuses lone surrogate escapes as the bytes stream by."""

    def __init__(self, stream):
        self.stream = stream
        self.tail = b""

    def read(self, size=-1):
        chunk = self.stream.read(size)
        window = self.tail + chunk
        # While more bytes may follow, a match in the last 12 bytes may be half a pair:
        # it is judged again with the next chunk (the tail carries it over).
        decided = len(window) - 12 if chunk else len(window)
        for match in _LONE_SURROGATE.finditer(window):
            if match.start() < decided:
                raise ParseError("JSON strings must be valid Unicode (no lone surrogates).")
        self.tail = window[-24:]
        return chunk


class BoundedJSONParser(BaseParser):
    """The strict JSON rules, for the bulk-import endpoints whose bodies may be large.

    A JSON text of tiny values costs ~50 times its size in Python objects (49 MiB of `{}`
    took a worker to 1.4 GB), so the document is built from a streaming parse (ijson) of
    the request stream that stops at `IMPORT_MAX_JSON_VALUES` values: memory stays bounded
    whatever the body holds. (Not a JSONParser subclass: DRF reads those via request.body.)
    """

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        import ijson

        budget = settings.IMPORT_MAX_JSON_VALUES
        stack: list = []  # containers being filled, innermost last
        keys: list = []  # the pending key of each dict on the stack
        root = None
        count = 0
        try:
            events = ijson.parse(_SurrogateCheckingReader(stream), use_float=True)
            for _prefix, event, value in events:
                if event == "map_key":
                    keys[-1] = value
                    continue
                count += 1
                if count > budget:
                    raise ParseError(f"JSON body holds more than {budget} values.")
                if event in ("end_map", "end_array"):
                    stack.pop()
                    keys.pop()
                    continue
                if event == "start_map":
                    value = {}
                elif event == "start_array":
                    value = []
                if stack:
                    parent = stack[-1]
                    if isinstance(parent, list):
                        parent.append(value)
                    else:
                        parent[keys[-1]] = value
                else:
                    root = value
                if event in ("start_map", "start_array"):
                    if len(stack) >= MAX_DEPTH:
                        raise ParseError(f"JSON nested deeper than {MAX_DEPTH} levels.")
                    stack.append(value)
                    keys.append(None)
        except (ijson.JSONError, UnicodeDecodeError) as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid JSON"
            raise ParseError(f"JSON parse error - {first_line.strip(chr(39) + 'b')}") from None
        check_text(root)
        return root
