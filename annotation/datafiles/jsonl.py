"""Reading JSON lines files: one reader, errors that name the file and line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class JsonlError(ValueError):
    """A line is not valid JSON; the message is `<file>:<line>: <problem>`."""

    def __init__(self, path: str | Path, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path = str(path)
        self.line = line
        self.message = message


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, value) of every non-blank line, streamed; raises JsonlError on bad JSON."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise JsonlError(path, number, f"invalid JSON ({exc.msg})") from None
            yield number, value


def read_jsonl(path: str | Path) -> list[Any]:
    """Every value of a JSON lines file (blank lines skipped); raises JsonlError on bad JSON."""
    return [value for _, value in iter_jsonl(path)]
