"""The demonstrations export: written answers in, an SFT file and an Export row out (issue 20).

Rows come from the latest, non-rejected annotation of each assignment: the `demonstration` of
a demonstration project, and, with `include_edited`, the `edited_text` of a ranking project
with `allow_edit` (the labeler's rewrite of the best answer is a demonstration too). They
stream from one query ordered by comparison and are written line by line by
`annotation.datafiles.sft`, so memory stays flat whatever the size of the project.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from django.db.models import Q

from annotation.datafiles.sft import SftResult, SftWriter
from annotation.errors import ServiceValidationError, StorageError
from annotation.models import Annotation, Export, Project, TaskType
from annotation.services.exports import default_export_dir, removed_if_it_fails

CHUNK_SIZE = 2000
PROGRESS_EVERY = 10_000
# Manifest counts always present, zero or not.
SFT_COUNT_KEYS = ("annotations_read", "demonstrations", "edited", "excluded_gold")


@dataclass(frozen=True)
class DemonstrationExportOptions:
    """Which written answers go into the SFT file; `as_dict` is stored on the Export row."""

    include_edited: bool = False  # also the edited best answers of allow_edit ranking projects
    include_gold: bool = False  # keep answers to gold comparisons (left out like in section 5)

    def as_dict(self) -> dict[str, Any]:
        """The options as plain JSON."""
        return asdict(self)


def _answer_rows(project: Project, options: DemonstrationExportOptions, chunk_size: int):
    wanted = Q(demonstration__gt="")
    if options.include_edited:
        wanted |= Q(edited_text__gt="")
    return (
        Annotation.objects.filter(
            wanted,
            comparison__project=project,
            superseded_by__isnull=True,
            rejected_at__isnull=True,
        )
        .order_by("comparison_id", "id")
        .values_list(
            "comparison__is_gold", "comparison__prompt__messages", "demonstration", "edited_text"
        )
        .iterator(chunk_size=chunk_size)
    )


def demonstrations_export(
    *,
    project: Project,
    options: DemonstrationExportOptions | None = None,
    created_by=None,
    out_dir: str | Path | None = None,
    chunk_size: int = CHUNK_SIZE,
    progress: Callable[[int], None] | None = None,
) -> Export:
    """Write the project's demonstrations to `sft.jsonl` + `manifest.json`; record an Export.

    A ranking project has demonstrations only as edited best answers: it needs
    `include_edited` (else ServiceValidationError, nothing written). `out_dir` must be new or
    empty; it defaults to a fresh folder under DATA_DIR/exports.
    """
    options = options or DemonstrationExportOptions()
    if project.task_type != TaskType.DEMONSTRATION and not options.include_edited:
        message = (
            f"Project {project.slug!r} is a {project.task_type} project: its demonstrations are "
            "the edited best answers (allow_edit); pass include_edited (--include-edited)."
        )
        raise ServiceValidationError(message, {"include_edited": [message]})
    folder = Path(out_dir) if out_dir is not None else default_export_dir(project)
    with removed_if_it_fails(folder):
        return _export_into(project, options, folder, created_by, chunk_size, progress)


def _export_into(project, options, folder: Path, created_by, chunk_size, progress) -> Export:
    try:
        writer = SftWriter(folder)
    except FileExistsError as exc:
        raise ServiceValidationError(str(exc), {"out": [str(exc)]}) from None
    except OSError as exc:
        raise ServiceValidationError(
            f"Cannot write to {folder}: {exc.strerror or exc}", {"out": [str(exc)]}
        ) from None
    try:
        with writer:
            result = _write(project, options, writer, created_by, chunk_size, progress)
    except OSError as exc:  # a full disk: the writer removed its temporary files
        message = f"cannot write the export to {folder}: {exc.strerror or exc}"
        raise StorageError(message, {"out": [str(folder)]}) from None
    try:
        return Export.objects.create(
            project=project,
            kind=Export.Kind.SFT,
            options=options.as_dict(),
            format=Export.Format.JSONL,
            path=str(folder.resolve()),
            rows=result.rows,
            counts=result.manifest["counts"],
            sha256=result.sha256,
            created_by=created_by,
        )
    except BaseException:
        result.path.unlink(missing_ok=True)
        result.manifest_path.unlink(missing_ok=True)
        raise


def _write(project, options, writer: SftWriter, created_by, chunk_size, progress) -> SftResult:
    counts: Counter = Counter({key: 0 for key in SFT_COUNT_KEYS})
    next_report = PROGRESS_EVERY
    for is_gold, messages, demonstration, edited_text in _answer_rows(project, options, chunk_size):
        counts["annotations_read"] += 1
        if is_gold and not options.include_gold:
            counts["excluded_gold"] += 1
            continue
        if demonstration:
            writer.write(messages, demonstration)
            counts["demonstrations"] += 1
        elif edited_text:
            writer.write(messages, edited_text)
            counts["edited"] += 1
        if progress is not None and counts["annotations_read"] >= next_report:
            progress(writer.rows)
            next_report += PROGRESS_EVERY
    return writer.finish(
        options={**options.as_dict(), "chunk_size": chunk_size},
        source={
            "project": project.slug,
            "project_id": project.pk,
            "project_name": project.name,
            "task_type": project.task_type,
            "created_by": getattr(created_by, "username", None),
        },
        counts=dict(sorted(counts.items())),
    )
