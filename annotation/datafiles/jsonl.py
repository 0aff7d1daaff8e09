"""Reading JSON lines files: one reader, errors that name the file and line.

The file is read one line at a time in binary and decoded per line, so memory is bounded by
the longest line, and bytes that are not UTF-8 are a `file:line` error rather than a
UnicodeDecodeError traceback. `storable=True` (the imports) also refuses what the database
cannot store: NUL characters, lone surrogates and nesting deeper than MAX_DEPTH.
"""

from __future__ import annotations

import codecs
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# The API's JSON parser allows the same depth (annotation/api/parsers.py).
MAX_DEPTH = 32


class JsonlError(ValueError):
    """A line is not valid JSON; the message is `<file>:<line>: <problem>`."""

    def __init__(self, path: str | Path, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path = str(path)
        self.line = line
        self.message = message


def decode_line(raw: bytes) -> str:
    """One line of a file as text; ValueError naming the column of the first bad byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
        ) from None


def iter_text_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of every line, streamed; raises JsonlError on bytes that are not UTF-8.

    A UTF-8 byte order mark opening the file (Excel's "CSV UTF-8", Windows editors) is not
    part of the first line.
    """
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            try:
                yield number, decode_line(raw)
            except ValueError as exc:
                raise JsonlError(path, number, str(exc)) from None


def storable_problem(value: Any, where: str = "the record", depth: int = 0) -> str | None:
    """Why a parsed JSON value cannot be stored, naming where in it (NUL, lone surrogate,
    nesting deeper than MAX_DEPTH), or None when it can."""
    if depth > MAX_DEPTH:
        return f"the record is nested deeper than {MAX_DEPTH} levels"
    if isinstance(value, str):
        if "\x00" in value:
            return f"{where} contains a NUL character (\\u0000)"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{where} is not valid Unicode (lone surrogate)"
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"{where} is not a finite number"
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{key!r}" if depth == 0 else f"{where}[{key!r}]"
            problem = storable_problem(key, f"key {inner}", depth + 1) or storable_problem(
                item, inner, depth + 1
            )
            if problem:
                return problem
    elif isinstance(value, list):
        for index, item in enumerate(value):
            problem = storable_problem(item, f"{where}[{index}]", depth + 1)
            if problem:
                return problem
    return None


def _not_json(constant: str) -> Any:
    raise ValueError(f"invalid JSON ({constant} is not a JSON number)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"invalid JSON ({text} is out of range for a number)")
    return value


def bounded_int(text: str) -> int:
    """A JSON integer; one too long for Python to convert (sys.get_int_max_str_digits(), 4300
    digits) is ValueError with a plain reason, not Python's advice to raise the limit."""
    try:
        return int(text)
    except ValueError:
        digits = len(text.lstrip("-"))
        raise ValueError(f"invalid JSON (a number of {digits} digits is too long)") from None


def parse_json_line(text: str) -> Any:
    """json.loads of one line; ValueError with a short reason (deep nesting included).

    NaN, Infinity and numbers too large for a float are refused, as by the API's parser:
    JSON has none of them and PostgreSQL's jsonb cannot store them. So are integers of more
    than 4300 digits (`bounded_int`).
    """
    try:
        return json.loads(
            text, parse_constant=_not_json, parse_float=_finite_float, parse_int=bounded_int
        )
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON ({exc.msg})") from None
    except RecursionError:
        raise ValueError(f"invalid JSON (nested deeper than {MAX_DEPTH} levels)") from None


def iter_jsonl(path: str | Path, *, storable: bool = False) -> Iterator[tuple[int, Any]]:
    """(line number, value) of every non-blank line, streamed; raises JsonlError on a bad line."""
    for number, line in iter_text_lines(path):
        if not line.strip():
            continue
        try:
            value = parse_json_line(line)
        except ValueError as exc:
            raise JsonlError(path, number, str(exc)) from None
        if storable:
            problem = storable_problem(value)
            if problem:
                raise JsonlError(path, number, problem)
        yield number, value


def read_jsonl(path: str | Path) -> list[Any]:
    """Every value of a JSON lines file (blank lines skipped); raises JsonlError on bad JSON."""
    return [value for _, value in iter_jsonl(path)]
