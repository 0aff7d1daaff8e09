"""The preference export service: annotations in, an immutable Export snapshot out (SPEC 5).

Annotations stream out of the database ordered by comparison, `chunk_size` rows at a time,
with one extra query per chunk for the candidate texts; each comparison's annotations are
filtered (gold, flagged, agreement), optionally pooled into a consensus, expanded into pairs
by `annotation.rules.pairs`, and written incrementally by `annotation.datafiles.export`. Memory
therefore depends on the chunk size, not on the size of the project.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import json
import shutil
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import groupby
from pathlib import Path
from typing import Any, NamedTuple

from django.conf import settings
from django.db.models import F

from annotation.datafiles.digest import sha256_path
from annotation.datafiles.export import (
    FORMATS,
    MANIFEST_NAME,
    TABLE_FIELDS,
    ComparisonBlock,
    ExportResult,
    ExportWriter,
    table_filename,
)
from annotation.datafiles.rows import CandidateText, completion_value
from annotation.datafiles.sft import SFT_FILENAME, SFT_MANIFEST_NAME
from annotation.errors import ConflictError, ServiceValidationError, StorageError
from annotation.models import Annotation, Comparison, Export, Project, Prompt, TaskType
from annotation.rules.agreement import agreement_with_consensus
from annotation.rules.consensus import consensus_ranking
from annotation.rules.pairs import PAIRINGS
from annotation.rules.splits import DEFAULT_TEST_FRACTION, prompt_messages, split_for_prompt

AGGREGATES: tuple[str, ...] = ("none", "consensus")
CONSENSUS_LABELER = "consensus"
CHUNK_SIZE = 2000
PROGRESS_EVERY = 10_000
# Manifest counts always present, zero or not, so readers need no defaults.
COUNT_KEYS = (
    "comparisons_read",
    "excluded_gold",
    "excluded_flagged",
    "excluded_low_agreement",
    "excluded_agreement_unmeasured",
    "rankings_without_preference",
    "consensus_annotations",
    "edited_annotations",
    "edited_pairs",
)

# values_list columns of one annotation row, in this order. What belongs to the comparison
# (prompt, candidates, gold) comes once per comparison from the chunk's comparison query.
_ROW_FIELDS = ("id", "comparison_id", "labeler_id", "ranking", "flags", "edited_text")
_ID, _COMPARISON, _LABELER, _RANKING, _FLAGS, _EDITED = range(6)
# chosen_model of the pairs an edited best answer wins (allow_edit projects).
EDITED_MODEL = "labeler-edit"


class _ComparisonInfo(NamedTuple):
    is_gold: bool
    candidate_ids: list[int]
    messages: list[dict]


@dataclass(frozen=True)
class ExportOptions:
    """What to export and how (SPEC section 5); `as_dict` is stored on the Export row."""

    format: str = "jsonl"
    pairing: str = "all_pairs"
    aggregate: str = "none"
    include_flagged: bool = False
    include_gold: bool = False
    min_agreement: float | None = None
    test_fraction: float = DEFAULT_TEST_FRACTION

    def validate(self) -> None:
        """Raise ServiceValidationError naming every bad option."""
        errors: dict[str, list[str]] = {}
        if self.format not in FORMATS:
            errors["format"] = [f"Use one of {', '.join(FORMATS)}."]
        if self.pairing not in PAIRINGS:
            errors["pairing"] = [f"Use one of {', '.join(PAIRINGS)}."]
        if self.aggregate not in AGGREGATES:
            errors["aggregate"] = [f"Use one of {', '.join(AGGREGATES)}."]
        if self.min_agreement is not None and not (
            isinstance(self.min_agreement, int | float) and 0.0 <= self.min_agreement <= 1.0
        ):
            errors["min_agreement"] = ["A share between 0 and 1."]
        if not (isinstance(self.test_fraction, int | float) and 0.0 <= self.test_fraction <= 1.0):
            errors["test_fraction"] = ["A share between 0 and 1."]
        for name in ("include_flagged", "include_gold"):
            if not isinstance(getattr(self, name), bool):
                errors[name] = ["true or false."]
        if errors:
            name, messages = next(iter(errors.items()))
            raise ServiceValidationError(f"Invalid export option {name}: {messages[0]}", errors)

    def as_dict(self) -> dict[str, Any]:
        """The options as plain JSON."""
        return asdict(self)


@dataclass
class ExportProgress:
    """Running totals, handed to the progress callback."""

    annotations: int = 0
    pairs: int = 0
    rankings: int = 0
    counts: Counter = field(default_factory=Counter)


def labeler_pseudonym(*, project_id: int, labeler_id: int) -> str:
    """A stable per-project pseudonym: an HMAC of the ids under SECRET_KEY, not reversible."""
    message = f"{project_id}:{labeler_id}".encode()
    digest = hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).hexdigest()
    return f"labeler-{digest[:12]}"


def default_export_dir(project: Project) -> Path:
    """DATA_DIR/exports/<slug>-<UTC time>-<random>: unique without knowing the Export id."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path(settings.DATA_DIR) / "exports" / f"{project.slug}-{stamp}-{uuid.uuid4().hex[:8]}"


def _counted(project: Project):
    """The annotations an export reads: the latest of each assignment, not rejected."""
    return Annotation.objects.filter(
        comparison__project=project, superseded_by__isnull=True, rejected_at__isnull=True
    )


def _annotation_stream(project: Project, chunk_size: int) -> Iterator[tuple]:
    """Latest annotation of every assignment, ordered by comparison: one query, streamed."""
    return (
        _counted(project)
        .order_by("comparison_id", "id")
        .values_list(*_ROW_FIELDS)
        .iterator(chunk_size=chunk_size)
    )


def _exported_between(project: Project, low: int, high: int):
    """Ids (a subquery) of the comparisons low..high that `_annotation_stream` yields rows of.

    Not every comparison in the range: with priorities and later rounds the labeled ones lie
    scattered among thousands unlabeled, whose texts an export has no use for. Through every
    annotation, not only the counted ones: a reject or a correction that commits after the
    stream read a row must not hide that row's comparison from the lookup.
    """
    return Annotation.objects.filter(
        comparison__project=project, comparison_id__gte=low, comparison_id__lte=high
    ).values("comparison_id")


def _candidate_texts(project: Project, low: int, high: int) -> dict[int, CandidateText]:
    """Texts and model labels of the candidates of the exported comparisons low..high: one query."""
    through = Comparison.candidates.through
    rows = (
        through.objects.filter(comparison_id__in=_exported_between(project, low, high))
        .annotate(
            text=F("candidate__text"),
            version=F("candidate__model_version__name"),
            model=F("candidate__model_name"),
        )
        .values_list("candidate_id", "text", "version", "model")
    )
    return {cid: CandidateText(text, version or model or "") for cid, text, version, model in rows}


def _comparison_infos(project: Project, low: int, high: int) -> dict[int, _ComparisonInfo]:
    """Gold flag, candidate order and prompt of the exported comparisons low..high: one query."""
    rows = Comparison.objects.filter(id__in=_exported_between(project, low, high)).values_list(
        "id", "is_gold", "candidate_ids", "prompt__messages"
    )
    return {cid: _ComparisonInfo(gold, ids, messages) for cid, gold, ids, messages in rows}


def _comparison_groups(
    project: Project, chunk_size: int
) -> Iterator[tuple[list[tuple], _ComparisonInfo, dict[int, CandidateText]]]:
    """(annotation rows, comparison, candidate texts) per comparison, chunk by chunk.

    Rows are buffered until a chunk is full and the comparison changes, so a comparison is
    never split; then the comparisons and candidates of the buffered id range come in one
    query each. Queries per export: one, plus two per chunk, whatever the data.
    """
    buffer: list[list[tuple]] = []
    buffered = 0
    for _, group in groupby(_annotation_stream(project, chunk_size), key=lambda r: r[_COMPARISON]):
        rows = list(group)
        buffer.append(rows)
        buffered += len(rows)
        if buffered >= chunk_size:
            yield from _flush(project, buffer)
            buffer, buffered = [], 0
    if buffer:
        yield from _flush(project, buffer)


def _flush(project: Project, buffer: list[list[tuple]]):
    low, high = buffer[0][0][_COMPARISON], buffer[-1][0][_COMPARISON]
    infos = _comparison_infos(project, low, high)
    texts = _candidate_texts(project, low, high)
    for rows in buffer:
        yield rows, infos[rows[0][_COMPARISON]], texts


def _is_flagged(flags: Any) -> bool:
    return isinstance(flags, dict) and any(codes for codes in flags.values())


def edited_pairs(
    block: ComparisonBlock,
    *,
    edited_text: str,
    tiers: list[list[int]],
    annotation_id: int,
    labeler: str,
    chat: bool,
) -> list[dict]:
    """Pairs `edited > each candidate` of one annotation's rewrite of the best answer.

    The edit stands one tier above the labeler's best tier: margin = 1 + the candidate's tier
    index (Llama 3.1's edited > chosen > rejected). The edit counts once, like an annotation:
    its pairs' weights sum to 1. A candidate with the same text as the edit is no preference
    and is left out. Where the annotation's ranking has pairs too, the caller spreads the
    weight over both (`export_rows`).
    """
    position = {c: i for i, tier in enumerate(tiers) for c in tier}
    rivals = [c for c in block.order if block.candidates[c].text != edited_text]
    if not rivals:
        return []
    chosen = completion_value(edited_text, chat=chat)
    weight = 1.0 / len(rivals)
    return [
        {
            "prompt": block.prompt,
            "chosen": chosen,
            "rejected": completion_value(block.candidates[c].text, chat=chat),
            "margin": float(1 + position.get(c, 0)),
            "weight": weight,
            "split": block.split,
            "comparison_id": block.comparison_id,
            "annotation_id": annotation_id,
            "labeler": labeler,
            "chosen_model": EDITED_MODEL,
            "rejected_model": block.candidates[c].model,
        }
        for c in rivals
    ]


def _edit_pairs(block: ComparisonBlock, r: tuple, *, labeler: str, chat: bool) -> list[dict]:
    return edited_pairs(
        block,
        edited_text=r[_EDITED],
        tiers=r[_RANKING],
        annotation_id=r[_ID],
        labeler=labeler,
        chat=chat,
    )


def _write_edit_pairs(writer: ExportWriter, state: ExportProgress, counts, edits) -> None:
    for pairs in edits:
        if pairs:
            writer.write_pairs(pairs)
            state.pairs += len(pairs)
            counts["edited_pairs"] += len(pairs)
            counts["edited_annotations"] += 1


def export_rows(
    *,
    project: Project,
    options: ExportOptions,
    writer: ExportWriter,
    chat: bool,
    chunk_size: int = CHUNK_SIZE,
    progress: Callable[[ExportProgress], None] | None = None,
) -> ExportProgress:
    """Stream the project's annotations through the filters into `writer`; returns the totals."""
    state = ExportProgress()
    counts = state.counts
    for key in COUNT_KEYS:
        counts[key] = 0
    pseudonyms: dict[int, str] = {}
    next_report = PROGRESS_EVERY

    for rows, comparison, texts in _comparison_groups(project, chunk_size):
        comparison_id = rows[0][_COMPARISON]
        state.annotations += len(rows)
        counts["comparisons_read"] += 1
        if comparison.is_gold and not options.include_gold:
            counts["excluded_gold"] += len(rows)
            continue

        agreements: dict[int, float | None] = {}
        if options.min_agreement is not None:
            # Measured over every labeler of the comparison, flagged answers included: a flag
            # does not make an opinion less informative about the others.
            agreements = agreement_with_consensus({r[_ID]: r[_RANKING] for r in rows})
        kept = []
        for r in rows:
            if not options.include_flagged and (flags := r[_FLAGS]) and _is_flagged(flags):
                counts["excluded_flagged"] += 1
            elif options.min_agreement is not None and agreements[r[_ID]] is None:
                counts["excluded_agreement_unmeasured"] += 1
            elif options.min_agreement is not None and agreements[r[_ID]] < options.min_agreement:
                counts["excluded_low_agreement"] += 1
            else:
                kept.append(r)
        if not kept:
            continue

        messages = comparison.messages
        order = comparison.candidate_ids
        missing = [c for c in order if c not in texts]
        if missing:
            # Cannot happen through the services (candidates are never deleted while compared).
            raise ServiceValidationError(
                f"Comparison {comparison_id} names candidates {missing} that do not exist."
            )
        block = ComparisonBlock(
            prompt=prompt_messages(messages) if chat else messages[0]["content"],
            split=split_for_prompt(messages, test_fraction=options.test_fraction),
            comparison_id=comparison_id,
            order=order,
            candidates=texts,
        )

        # (tiers, annotation id, labeler, rows whose edit shares the ranking's weight)
        rankings: list[tuple[Any, int | None, str, list[tuple]]] = []
        if options.aggregate == "consensus":
            pooled = consensus_ranking([r[_RANKING] for r in kept], items=order)
            # The consensus row is nobody's annotation: each edit counts once on its own.
            rankings.append((pooled.tiers, None, CONSENSUS_LABELER, []))
            edits_alone = [r for r in kept if r[_EDITED]]
            counts["consensus_annotations"] += len(kept)
        else:
            edits_alone = []
            for r in kept:
                labeler = pseudonyms.get(r[_LABELER])
                if labeler is None:
                    labeler = pseudonyms[r[_LABELER]] = labeler_pseudonym(
                        project_id=project.pk, labeler_id=r[_LABELER]
                    )
                rankings.append((r[_RANKING], r[_ID], labeler, [r] if r[_EDITED] else []))

        for tiers, annotation_id, labeler, edited_rows in rankings:
            edits = [_edit_pairs(block, r, labeler=labeler, chat=chat) for r in edited_rows]
            extra = sum(len(e) for e in edits)
            written = writer.write_annotation(
                block,
                tiers=tiers,
                annotation_id=annotation_id,
                labeler=labeler,
                pairing=options.pairing,
                extra_pairs=extra,
            )
            if written:
                state.pairs += written
                state.rankings += 1
            else:
                # One tier (all tied, or "all bad"): states no preference, nothing to learn.
                counts["rankings_without_preference"] += 1
            if extra:
                # One annotation counts once (SPEC 5): its ranking's and its edit's pairs
                # share the weight.
                for row in (row for e in edits for row in e):
                    row["weight"] = 1.0 / (written + extra)
                _write_edit_pairs(writer, state, counts, edits)

        for r in edits_alone:
            labeler = pseudonyms.get(r[_LABELER]) or labeler_pseudonym(
                project_id=project.pk, labeler_id=r[_LABELER]
            )
            _write_edit_pairs(
                writer, state, counts, [_edit_pairs(block, r, labeler=labeler, chat=chat)]
            )

        if progress is not None and state.annotations >= next_report:
            progress(state)
            next_report = state.annotations + PROGRESS_EVERY
    return state


def export_create(
    *,
    project: Project,
    options: ExportOptions,
    created_by=None,
    out_dir: str | Path | None = None,
    chunk_size: int = CHUNK_SIZE,
    progress: Callable[[ExportProgress], None] | None = None,
) -> Export:
    """Write the project's preference data to files and record them as an immutable Export.

    `out_dir` defaults to a fresh folder under DATA_DIR/exports; a folder that already holds
    an export is refused. Nothing is published under a final name unless everything was
    written, and the files are removed again if the Export row cannot be stored.
    """
    options.validate()
    if project.task_type == TaskType.DEMONSTRATION:
        message = (
            f"Project {project.slug!r} collects demonstrations, not preferences: export it "
            "with export_demonstrations."
        )
        raise ServiceValidationError(message, {"project": [message]})
    folder = Path(out_dir) if out_dir is not None else default_export_dir(project)
    with removed_if_it_fails(folder):
        return _export_into(
            project=project,
            options=options,
            folder=folder,
            created_by=created_by,
            chunk_size=chunk_size,
            progress=progress,
        )


@contextlib.contextmanager
def removed_if_it_fails(folder: Path) -> Iterator[None]:
    """On any failure inside, remove the folders on the way to `folder` that did not exist
    before (empty ones only: rmdir spares a folder with files), so a failed export leaves
    no empty `--out` behind."""
    missing = list(itertools.takewhile(lambda p: not p.exists(), (folder, *folder.parents)))
    try:
        yield
    except BaseException:
        for path in missing:  # deepest first
            with contextlib.suppress(OSError):
                path.rmdir()
        raise


def _export_into(
    *,
    project: Project,
    options: ExportOptions,
    folder: Path,
    created_by,
    chunk_size: int,
    progress: Callable[[ExportProgress], None] | None,
) -> Export:
    chat = Prompt.objects.filter(project=project, is_chat=True).exists()
    try:
        writer = ExportWriter(folder, fmt=options.format, prompt_format="chat" if chat else "text")
    except FileExistsError as exc:
        raise ServiceValidationError(str(exc), {"out": [str(exc)]}) from None
    except ImportError as exc:
        message = f"Format {options.format} needs {exc.name}: pip install 'rlhf-studio[train]'."
        raise ServiceValidationError(message, {"format": [message]}) from None
    except OSError as exc:
        raise ServiceValidationError(
            f"Cannot write to {folder}: {exc.strerror or exc}", {"out": [str(exc)]}
        ) from None
    try:
        with writer:
            state = export_rows(
                project=project,
                options=options,
                writer=writer,
                chat=chat,
                chunk_size=chunk_size,
                progress=progress,
            )
            extra = {
                "annotations_read": state.annotations,
                **{k: state.counts[k] for k in sorted(state.counts)},
            }
            result = writer.finish(
                options={**options.as_dict(), "chunk_size": chunk_size},
                source={
                    "project": project.slug,
                    "project_id": project.pk,
                    "project_name": project.name,
                    "task_type": project.task_type,
                    "num_candidates": project.num_candidates,
                    "created_by": getattr(created_by, "username", None),
                },
                extra_counts=extra,
            )
    except OSError as exc:
        # The disk failed a write (full, read-only, gone). The writer removed its temporary
        # files and lock on the way out, and nothing is under a final name: the folder holds
        # no export, and the same export runs in it again once the disk has room.
        message = f"cannot write the export to {folder}: {exc.strerror or exc}"
        raise StorageError(message, {"out": [str(folder)]}) from None
    try:
        return Export.objects.create(
            project=project,
            options=options.as_dict(),
            format=options.format,
            path=str(folder.resolve()),
            rows=result.counts["pairs"],
            counts=result.counts,
            sha256=result.sha256["pairs"],
            created_by=created_by,
        )
    except BaseException:
        _unpublish(result)
        raise


def _unpublish(result: ExportResult) -> None:
    for path in (*result.files.values(), result.manifest_path):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


class ExportFilesMissing(FileNotFoundError):
    """An export's file is gone from this server (the API answers 404)."""


def export_files_verified(export: Export, which: str) -> list[tuple[Path, str]]:
    """The files of `which` ("pairs", "rankings", "manifest" or "all") as (path, name) pairs,
    after checking them against the manifest and the Export row.

    Only what the manifest lists is ever returned (never other files of the folder), and a
    table whose sha256 no longer matches the manifest -- or, for pairs, the Export row --
    raises ConflictError: edited bytes are not served as the recorded export. Names are
    relative to the export folder ("pairs/data-00000-of-00001.arrow" for an `hf` folder).
    """
    if export.kind == Export.Kind.SFT:
        return _sft_files_verified(export, which)
    root = Path(export.path)
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ExportFilesMissing(f"{MANIFEST_NAME} of export {export.pk} is missing")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        listed = {table: manifest["files"][table] for table in TABLE_FIELDS}
        recorded = {table: entry["sha256"] for table, entry in listed.items()}
    except (ValueError, KeyError, TypeError):
        raise ConflictError(
            f"Export {export.pk}: {MANIFEST_NAME} was modified after the export (not the "
            "manifest that was written); refusing to serve it."
        ) from None
    if recorded["pairs"] != export.sha256:
        raise ConflictError(
            f"Export {export.pk}: {MANIFEST_NAME} no longer matches the recorded export "
            f"(pairs sha256 {str(recorded['pairs'])[:12]}, recorded {export.sha256[:12]}); "
            "refusing to serve it."
        )
    tables = list(TABLE_FIELDS) if which == "all" else [t for t in TABLE_FIELDS if t == which]
    files: list[tuple[Path, str]] = (
        [(manifest_path, MANIFEST_NAME)] if which in ("all", "manifest") else []
    )
    for table in tables:
        name = table_filename(table, export.format)
        if listed[table].get("path") != name:
            raise ConflictError(
                f"Export {export.pk}: {MANIFEST_NAME} lists {listed[table].get('path')!r} for "
                f"{table}, expected {name!r}; refusing to serve it."
            )
        target = root / name
        if not target.exists():
            raise ExportFilesMissing(f"{name} of export {export.pk} is missing")
        actual = sha256_path(target)
        if actual != recorded[table]:
            raise ConflictError(
                f"Export {export.pk}: {name} was modified after the export (sha256 "
                f"{actual[:12]}, recorded {str(recorded[table])[:12]}); refusing to serve it.",
                {"file": [name]},
            )
        if target.is_dir():
            files.extend(
                (path, path.relative_to(root).as_posix())
                for path in sorted(target.rglob("*"))
                if path.is_file()
            )
        else:
            files.append((target, name))
    return files


def _sft_files_verified(export: Export, which: str) -> list[tuple[Path, str]]:
    """`export_files_verified` for an SFT export: `pairs` (the default) means its sft.jsonl,
    checked against the manifest and the Export row; it has no rankings."""
    root = Path(export.path)
    manifest_path, data_path = root / SFT_MANIFEST_NAME, root / SFT_FILENAME
    if which == "rankings":
        raise ExportFilesMissing(f"export {export.pk} holds SFT data: it has no rankings")
    for path in (manifest_path, data_path):
        if not path.is_file():
            raise ExportFilesMissing(f"{path.name} of export {export.pk} is missing")
    try:
        recorded = json.loads(manifest_path.read_text(encoding="utf-8"))["sha256"]
    except (ValueError, KeyError, TypeError):
        recorded = None
    actual = sha256_path(data_path)
    if recorded != export.sha256 or actual != export.sha256:
        raise ConflictError(
            f"Export {export.pk}: {SFT_FILENAME} or {SFT_MANIFEST_NAME} was modified after the "
            "export; refusing to serve it.",
            {"file": [SFT_FILENAME]},
        )
    files = [(manifest_path, SFT_MANIFEST_NAME)] if which in ("all", "manifest") else []
    if which in ("all", "pairs"):
        files.append((data_path, SFT_FILENAME))
    return files
