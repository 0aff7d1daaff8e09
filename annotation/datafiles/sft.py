"""The SFT file: `sft.jsonl` of conversations and `manifest.json` beside it (issue 20).

One line per demonstration, `{"messages": [{"role", "content"}, ...]}` (trl's conversational
format, what SFTTrainer and `train_sft` read): the prompt's messages, then the written answer
as the last, assistant, message. Nothing else goes on a line, so the file loads unchanged with
`datasets.load_dataset("json", ...)`. Rows go to a temporary name and are renamed only when
everything was written, manifest last, like the preference export: a failure never leaves a
half file under a final name. Pure Python: no Django.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SFT_SCHEMA_VERSION = 1
SFT_FILENAME = "sft.jsonl"
SFT_MANIFEST_NAME = "manifest.json"
SFT_FORMAT = "sft"
ROLES = ("system", "user", "assistant")

_WRITE_BUFFER = 1 << 20
_encode_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def sft_row(prompt: Sequence[Mapping[str, Any]], answer: str) -> dict[str, list[dict[str, str]]]:
    """The SFT row of one answer: the prompt's messages, then the answer as the assistant turn."""
    messages = []
    for position, message in enumerate(prompt):
        role, content = message.get("role"), message.get("content")
        if role not in ROLES or not isinstance(content, str):
            raise ValueError(
                f"prompt message {position} must be {{role: system|user|assistant, content: "
                f"text}}, got role {role!r}"
            )
        messages.append({"role": role, "content": content})
    if not isinstance(answer, str) or not answer.strip():
        raise ValueError("the answer must be non-empty text")
    messages.append({"role": "assistant", "content": answer})
    return {"messages": messages}


@dataclass
class SftResult:
    """What an SFT export wrote: final paths, row count, hash and the manifest."""

    out_dir: Path
    path: Path
    manifest_path: Path
    rows: int
    sha256: str
    manifest: dict[str, Any]


class SftWriter:
    """Writes SFT rows incrementally; `finish` publishes `sft.jsonl` and `manifest.json`.

    Use as a context manager: an exception inside the block removes the temporary file and
    leaves nothing under the final names. The folder must be new or empty (an export is an
    immutable snapshot and owns its folder).
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        other = next(self.out_dir.iterdir(), None)
        if other is not None:
            raise FileExistsError(
                f"{self.out_dir} is not empty (it holds {other.name!r}); choose a new or "
                "empty output folder"
            )
        token = os.urandom(6).hex()
        self.path = self.out_dir / SFT_FILENAME
        self.manifest_path = self.out_dir / SFT_MANIFEST_NAME
        self._tmp = self.out_dir / f".{SFT_FILENAME}.{token}.tmp"
        self._manifest_tmp = self.out_dir / f".{SFT_MANIFEST_NAME}.{token}.tmp"
        self._file = open(self._tmp, "wb", buffering=_WRITE_BUFFER)  # noqa: SIM115 (closed in finish/abort)
        self._digest = hashlib.sha256()
        self.rows = 0
        self._closed = False

    def __enter__(self) -> SftWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self._closed:
            self.abort()

    def write(self, prompt: Sequence[Mapping[str, Any]], answer: str) -> None:
        """Append the row of one answer to `prompt` (see `sft_row`)."""
        data = (_encode_json(sft_row(prompt, answer)) + "\n").encode("utf-8")
        self._digest.update(data)
        self._file.write(data)
        self.rows += 1

    def finish(
        self,
        *,
        options: Mapping[str, Any] | None = None,
        source: Mapping[str, Any] | None = None,
        counts: Mapping[str, Any] | None = None,
        created_at: datetime | None = None,
    ) -> SftResult:
        """Close the file, write the manifest, and rename both to their final names."""
        if self._closed:
            raise RuntimeError("export already finished")
        self._file.close()
        sha = self._digest.hexdigest()
        manifest = {
            "schema_version": SFT_SCHEMA_VERSION,
            "format": SFT_FORMAT,
            "created_at": (created_at or datetime.now(UTC)).isoformat(),
            "rows": self.rows,
            "sha256": sha,
            "path": SFT_FILENAME,
            "fields": ["messages"],
            "source": dict(source or {}),
            "options": dict(options or {}),
            "counts": {"rows": self.rows, **dict(counts or {})},
        }
        self._manifest_tmp.write_text(
            json.dumps(manifest, indent=2, ensure_ascii=False, default=str) + "\n",
            encoding="utf-8",
        )
        try:
            os.replace(self._tmp, self.path)
            # The manifest goes last: its presence means the export is complete.
            os.replace(self._manifest_tmp, self.manifest_path)
        except BaseException:
            self.path.unlink(missing_ok=True)
            raise
        self._closed = True
        return SftResult(
            out_dir=self.out_dir,
            path=self.path,
            manifest_path=self.manifest_path,
            rows=self.rows,
            sha256=sha,
            manifest=manifest,
        )

    def abort(self) -> None:
        """Remove the temporary files; nothing under a final name was written yet."""
        # On a full disk the bytes still buffered fail this flush too; the file goes anyway.
        with contextlib.suppress(OSError):
            self._file.close()
        self._tmp.unlink(missing_ok=True)
        self._manifest_tmp.unlink(missing_ok=True)
        self._closed = True
