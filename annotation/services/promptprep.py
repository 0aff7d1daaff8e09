"""Filter parsed prompt records before they are imported (rules in annotation/rules/promptprep.py).

`prompts_prepare` reads the project (which prompts are stored already) and writes nothing;
`prompts_import_prepared` imports the kept records and writes the removed ones to a side file
for review.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from django.db import transaction

from annotation.errors import ServiceValidationError
from annotation.models import Project, Prompt, messages_sha256
from annotation.rules.promptprep import FILTERS, PrepOptions, PromptFilter
from annotation.services.imports import (
    BULK_BATCH,
    ImportResult,
    PromptRecord,
    prompts_import_file,
)


@dataclass(frozen=True, slots=True)
class RemovedPrompt:
    record: PromptRecord
    filter: str
    detail: str

    def as_row(self) -> dict:
        return {
            "line": self.record.line,
            "filter": self.filter,
            "detail": self.detail,
            "external_id": self.record.external_id,
            "messages": self.record.messages,
            "metadata": self.record.metadata,
        }


@dataclass
class PrepResult:
    kept: list[PromptRecord]
    removed: list[RemovedPrompt]
    read: int
    redacted_rows: int = 0
    redacted: Counter = field(default_factory=Counter)

    def removed_by(self) -> Counter:
        return Counter(r.filter for r in self.removed)

    def table(self) -> list[tuple[str, int]]:
        """(filter, rows removed) in the order the filters run, then the totals."""
        counts = self.removed_by()
        rows = [("read", self.read)]
        rows += [(f"removed: {name}", counts[name]) for name in FILTERS]
        if self.redacted_rows:
            kinds = ", ".join(f"{k} x{n}" for k, n in sorted(self.redacted.items()))
            rows.append((f"redacted ({kinds})", self.redacted_rows))
        rows.append(("kept", len(self.kept)))
        return rows


def _stored_keys(project: Project, hashes: list[str]) -> set[tuple[str | None, str]]:
    """(external_id, content hash) of the stored prompts with one of `hashes`."""
    stored = set()
    for start in range(0, len(hashes), BULK_BATCH):
        stored.update(
            Prompt.objects.filter(
                project=project, content_hash__in=hashes[start : start + BULK_BATCH]
            ).values_list("external_id", "content_hash")
        )
    return stored


def prompts_prepare(
    *, project: Project, records: list[PromptRecord], options: PrepOptions
) -> PrepResult:
    """Run the filters over `records` in file order (deterministic); writes nothing."""
    stored_count = Prompt.objects.filter(project=project).count() if options.dedup == "near" else 0
    rules = PromptFilter(options, expected_rows=len(records) + stored_count)
    removed: list[RemovedPrompt] = []
    cleaned: list[PromptRecord] = []
    for record in records:
        decision = rules.clean(record.messages)
        if not decision.keep:
            removed.append(RemovedPrompt(record, decision.filter, decision.detail))
            continue
        if decision.redacted:
            record = replace(
                record,
                messages=decision.messages,
                content_hash=messages_sha256(decision.messages),
                metadata={
                    **record.metadata,
                    "pii_redacted": dict(sorted(decision.redacted.items())),
                },
            )
        cleaned.append(record)

    # A row the import will count unchanged (same external_id and content, or same content
    # and no external_id on either side) passes; any other copy of stored content is a
    # duplicate like a copy of an earlier row.
    stored_keys = _stored_keys(project, [r.content_hash for r in cleaned])
    stored_hashes = {content_hash for _, content_hash in stored_keys}
    if options.dedup == "near":
        for messages in (
            Prompt.objects.filter(project=project).values_list("messages", flat=True).iterator(2000)
        ):
            rules.add_stored(messages)
    kept: list[PromptRecord] = []
    for record in cleaned:
        decision = rules.dedupe(
            record.messages,
            source=record.source,
            has_external_id=record.external_id is not None,
            stored=(record.external_id, record.content_hash) in stored_keys,
            stored_copy=record.content_hash in stored_hashes,
        )
        if decision.keep:
            kept.append(record)
        else:
            removed.append(RemovedPrompt(record, decision.filter, decision.detail))
    removed.sort(key=lambda r: r.record.line)
    return PrepResult(
        kept=kept,
        removed=removed,
        read=len(records),
        redacted_rows=rules.redacted_rows,
        redacted=rules.redacted,
    )


def removed_file_check(path: Path, *, source: Path) -> None:
    """Refuse a removed-rows file that cannot be written, before any work: a folder, the
    input file itself, a path under a file, or a folder this process may not write.
    Missing folders are fine (they are created)."""
    if path.is_dir():
        raise ServiceValidationError(
            f"{path}: is a folder; the removed rows need a file name (--removed-out PATH)",
            {"removed_out": [str(path)]},
        )
    if path.exists() and source.exists() and os.path.samefile(path, source):
        raise ServiceValidationError(
            f"{path}: is the input file; the removed rows would overwrite it (give another "
            "--removed-out PATH)",
            {"removed_out": [str(path)]},
        )
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ServiceValidationError(
            f"{path}: {folder} is a file, not a folder", {"removed_out": [str(path)]}
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ServiceValidationError(
            f"{path}: cannot write the removed rows (folder {folder} is not writable); give "
            "--removed-out PATH in a writable folder",
            {"removed_out": [str(path)]},
        )


def _cannot_write(path: Path, exc: OSError) -> ServiceValidationError:
    return ServiceValidationError(
        f"{path}: cannot write the removed rows ({exc.strerror or exc}); give --removed-out "
        "PATH in a writable folder",
        {"removed_out": [str(path)]},
    )


def _removed_file_stage(removed: list[RemovedPrompt], path: Path) -> Path:
    """Write the removed rows as JSONL to a temporary file beside `path`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for row in removed:
                out.write(json.dumps(row.as_row(), ensure_ascii=False) + "\n")
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _cannot_write(path, exc) from None
        raise
    return Path(tmp)


def prompts_import_prepared(
    *, project: Project, path: Path, prep: PrepResult, removed_path: Path
) -> ImportResult:
    """Import the kept records of `path` and write the removed ones to `removed_path`.

    Both or neither: the removed rows go to a temporary file beside `removed_path` first,
    which is moved into place as the import's last step before its transaction commits, so a
    file that cannot be written leaves nothing imported. (Should the commit itself fail after
    the move, the file describes an import that did not happen; running it again replaces it.)
    """
    staged = None
    if prep.removed:
        removed_file_check(removed_path, source=path)
        staged = _removed_file_stage(prep.removed, removed_path)
    try:
        with transaction.atomic():
            result = prompts_import_file(
                project=project, path=path, records=prep.kept, source=path.name
            )
            if staged is not None:
                try:
                    os.replace(staged, removed_path)
                except OSError as exc:
                    raise _cannot_write(removed_path, exc) from None
    finally:
        if staged is not None:
            staged.unlink(missing_ok=True)  # gone once moved in
    return result
