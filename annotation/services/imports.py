"""Bulk imports of prompts and candidates: all or nothing, idempotent, fast.

A file is parsed and validated completely before the first write; the first bad record
raises `ImportFileError` naming the file and line, and nothing is stored. Writes are
`bulk_create` in one transaction, so 100k prompts take seconds.
"""

from __future__ import annotations

import csv
import itertools
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from django.db import IntegrityError, transaction

from annotation.datafiles.jsonl import (
    JsonlError,
    iter_jsonl,
    iter_text_lines,
    parse_json_line,
    storable_problem,
)
from annotation.errors import ImportFileError, ServiceValidationError
from annotation.models import Candidate, Project, Prompt, messages_sha256, text_sha256

ROLES = {"system", "user", "assistant"}
MAX_TEXT_LENGTH = 200_000
BULK_BATCH = 2000
# Conflicting external_ids named in one refusal; the rest are counted ("and N more").
MAX_NAMED_CONFLICTS = 1000
# Ids are 64-bit signed integers in SQLite and PostgreSQL (BigAutoField): a larger one in a
# query is an OverflowError, not "no such prompt".
MAX_ID = 2**63 - 1


@dataclass
class ImportResult:
    created: int = 0
    unchanged: int = 0


@dataclass(slots=True)
class PromptRecord:
    line: int
    external_id: str | None
    messages: list[dict]
    is_chat: bool
    metadata: dict
    content_hash: str
    source: str | None = None  # the row's `source` (or metadata.source): the --max-per-source key


def record_id(value, name: str) -> int:
    """An id field of an imported record: an integer 1..MAX_ID, else ValueError naming it."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name!r} must be an integer")
    if not 1 <= value <= MAX_ID:
        raise ValueError(f"{name!r} must be an id from 1 to {MAX_ID}")
    return value


def check_storable(text: str, what: str) -> None:
    """Refuse text PostgreSQL cannot store (NUL) or that is not valid Unicode (lone surrogates)."""
    if "\x00" in text:
        raise ValueError(f"{what} contains a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid Unicode (lone surrogate)") from None


def validate_messages(messages) -> list[dict]:
    """Check a chat prompt: {role, content} turns, optional system first, then user/assistant
    alternating, starting and ending with a user turn. Returns a clean copy or raises ValueError."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list of {role, content}")
    clean = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ValueError(f"messages[{i}] must be an object with 'role' and 'content'")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise ValueError(f"messages[{i}].role must be one of system, user, assistant")
        if not isinstance(content, str) or not content.strip():
            raise ValueError(f"messages[{i}].content must be non-empty text")
        check_storable(content, f"messages[{i}].content")
        if len(content) > MAX_TEXT_LENGTH:
            raise ValueError(f"messages[{i}].content is longer than {MAX_TEXT_LENGTH} characters")
        clean.append({"role": role, "content": content})
    turns = clean[1:] if clean[0]["role"] == "system" else clean
    if not turns:
        raise ValueError("a chat needs at least one user message after the system message")
    for i, message in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if message["role"] != expected:
            raise ValueError(
                "wrong role order: after an optional system message, turns must alternate "
                "user/assistant starting with user"
            )
    if turns[-1]["role"] != "user":
        raise ValueError("wrong role order: a prompt must end with a user message")
    return clean


def prompt_record(raw, *, line: int) -> PromptRecord:
    """Normalise one imported prompt (`text` or `messages`, optional `external_id`, `metadata`)."""
    if not isinstance(raw, dict):
        raise ValueError("each record must be a JSON object")
    has_text, has_messages = raw.get("text") is not None, raw.get("messages") is not None
    if has_text and has_messages:
        raise ValueError("give either 'text' or 'messages', not both")
    if has_messages:
        messages, is_chat = validate_messages(raw["messages"]), True
    elif has_text:
        text = raw["text"]
        if not isinstance(text, str) or not text.strip():
            raise ValueError("'text' must be non-empty text")
        if len(text) > MAX_TEXT_LENGTH:
            raise ValueError(f"'text' is longer than {MAX_TEXT_LENGTH} characters")
        check_storable(text, "'text'")
        messages, is_chat = [{"role": "user", "content": text}], False
    else:
        raise ValueError("missing 'text' (or 'messages')")
    external_id = raw.get("external_id")
    if external_id is not None:
        if isinstance(external_id, bool) or not isinstance(external_id, (str, int)):
            raise ValueError("'external_id' must be a string or an integer")
        external_id = str(external_id).strip()
        if not external_id or len(external_id) > 255:
            raise ValueError("'external_id' must be 1-255 characters")
    metadata = raw.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ValueError("'metadata' must be an object")
    source = raw.get("source", metadata.get("source"))
    if source is not None:
        if not isinstance(source, str) or len(source) > 255:
            raise ValueError("'source' must be text of at most 255 characters")
        if "source" in raw:
            metadata = {**metadata, "source": source}
    return PromptRecord(
        line=line,
        external_id=external_id,
        messages=messages,
        is_chat=is_chat,
        metadata=metadata,
        content_hash=messages_sha256(messages),
        source=source,
    )


def read_records(path: str | Path, *, kind: str = "prompts") -> Iterator[tuple[int, object]]:
    """Yield (line number, raw record) from a .jsonl, .csv or datasets folder, streamed.

    Bad syntax, bytes that are not UTF-8, NUL characters, lone surrogates and nesting deeper
    than MAX_DEPTH raise ImportFileError naming the file and line (never a traceback). A CSV
    of `kind` "prompts" needs a text column (other columns become metadata); one of
    "candidates" has the JSONL record's columns.
    """
    path = Path(path)
    if path.is_dir():
        records = _read_dataset_folder(path)
    elif not path.exists():
        raise ImportFileError(path, None, "file not found")
    elif path.suffix.lower() in {".jsonl", ".ndjson", ".json"}:
        records = iter_jsonl(path)
    elif path.suffix.lower() == ".csv":
        records = _read_csv(path, _csv_row if kind == "prompts" else _csv_candidate_row)
    else:
        raise ImportFileError(path, None, "unknown format: use .jsonl, .csv or a datasets folder")
    try:
        for line, raw in records:
            problem = storable_problem(raw)
            if problem:
                raise ImportFileError(path, line, problem)
            yield line, raw
    except JsonlError as exc:
        raise ImportFileError(path, exc.line, exc.message) from None


def _read_csv(
    path: Path, to_record: Callable[[dict, Path, int], dict]
) -> Iterator[tuple[int, dict]]:
    start = [None]  # the line the row being read began on, for the csv module's errors

    def lines() -> Iterator[str]:
        for number, text in iter_text_lines(path):  # JsonlError names a non-UTF-8 line
            if start[0] is None and text.strip():
                start[0] = number
            yield text

    # strict: a quote left open is an error at the end of the file, and a quote closed
    # mid-cell one on the next quote, instead of swallowing the rows after it into one cell.
    reader = csv.DictReader(lines(), strict=True)
    try:
        if not reader.fieldnames or "text" not in reader.fieldnames:
            raise ImportFileError(path, 1, "a CSV file needs a 'text' column")
        if to_record is _csv_candidate_row and not {"prompt_external_id", "prompt_id"} & set(
            reader.fieldnames
        ):
            message = "a candidates CSV file needs a 'prompt_external_id' or 'prompt_id' column"
            raise ImportFileError(path, 1, message)
        start[0] = None
        for row in reader:
            extra = row.pop(None, None)  # DictReader's restkey: the cells past the header's
            if extra is not None:
                cells, header = len(reader.fieldnames) + len(extra), len(reader.fieldnames)
                message = f"{cells} cells, the header has {header}"
                raise ImportFileError(path, reader.line_num, message)
            yield reader.line_num, to_record(row, path, reader.line_num)
            start[0] = None
    except csv.Error as exc:  # e.g. an unclosed quote, a NUL byte on older Pythons
        line = start[0] if start[0] is not None else reader.line_num
        hint = "" if "field limit" in str(exc) else ": is a quote left open?"
        message = f"invalid CSV ({exc}) in the row that begins on this line{hint}"
        raise ImportFileError(path, line, message) from None


def _csv_row(row: dict, path: Path, line: int) -> dict:
    record = {"text": row.pop("text")}
    if row.get("external_id"):
        record["external_id"] = row.pop("external_id")
    row.pop("external_id", None)
    metadata_json = row.pop("metadata", None)
    metadata = {}
    if metadata_json:
        try:
            metadata = parse_json_line(metadata_json)
        except ValueError:
            raise ImportFileError(path, line, "the 'metadata' column must hold JSON") from None
        if not isinstance(metadata, dict):
            raise ImportFileError(path, line, "the 'metadata' column must hold a JSON object")
    metadata.update({k: v for k, v in row.items() if k and v not in (None, "")})
    record["metadata"] = metadata
    return record


def _csv_candidate_row(row: dict, path: Path, line: int) -> dict:
    """A candidates CSV row as its JSONL record: empty cells are absent, prompt_id a number,
    params JSON."""
    record = {k: v for k, v in row.items() if k and v not in (None, "")}
    for key in ("params", "generation_params"):
        if key in record:
            try:
                record[key] = parse_json_line(record[key])
            except ValueError:
                raise ImportFileError(path, line, f"the {key!r} column must hold JSON") from None
    prompt_id = record.get("prompt_id")
    if prompt_id is not None:
        digits = prompt_id.strip()
        if not (digits.isascii() and digits.isdigit()):
            raise ImportFileError(path, line, "'prompt_id' must be an integer")
        if len(digits.lstrip("0")) > 19:  # out of range (past 4300 digits int() refuses it)
            raise ImportFileError(path, line, f"'prompt_id' must be an id from 1 to {MAX_ID}")
        record["prompt_id"] = int(digits)
    return record


def _read_dataset_folder(path: Path) -> Iterator[tuple[int, dict]]:
    try:
        import datasets
    except ImportError:
        raise ImportFileError(
            path, None, "reading a datasets folder needs the [train] extra"
        ) from None
    try:
        dataset = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises several types for a folder it cannot read
        raise ImportFileError(path, None, f"not a datasets save_to_disk folder ({exc})") from None
    if isinstance(dataset, datasets.DatasetDict):
        if "train" not in dataset:
            raise ImportFileError(path, None, "a DatasetDict needs a 'train' split to import")
        dataset = dataset["train"]
    yield from enumerate(dataset, start=1)


def iter_prompt_file(path: str | Path, *, check_ids: bool = True) -> Iterator[PromptRecord]:
    """The prompt records of a file, one line at a time; a bad line, or (with `check_ids`)
    an external_id seen on an earlier line, raises ImportFileError naming it. Memory holds
    the ids seen, not the records."""
    seen_ids: dict[str, int] = {}
    for line, raw in read_records(path):
        try:
            record = prompt_record(raw, line=line)
        except ValueError as exc:
            raise ImportFileError(path, line, str(exc)) from None
        if check_ids and record.external_id is not None:
            if record.external_id in seen_ids:
                raise ImportFileError(
                    path,
                    line,
                    f"duplicate external_id {record.external_id!r} (first on line {seen_ids[record.external_id]})",
                )
            seen_ids[record.external_id] = line
        yield record


def parse_prompt_file(path: str | Path) -> list[PromptRecord]:
    """Parse and validate a whole prompt file; raises ImportFileError at the first bad line."""
    records = list(iter_prompt_file(path))
    if not records:
        raise ImportFileError(path, None, "no prompts in file")
    return records


def _bulk_create(model, objects: list, what: str, result: ImportResult) -> None:
    """bulk_create one batch and count it in `result` (the instances are dropped).
    A unique clash means a concurrent import won the race: the caller's transaction rolls
    back and nothing of ours is kept."""
    try:
        with transaction.atomic():
            created = model.objects.bulk_create(objects, batch_size=BULK_BATCH)
    except IntegrityError as exc:
        raise ServiceValidationError(f"{what} changed during the import; run it again.") from exc
    result.created += len(created)


def _stored_hashes(project: Project, external_ids: list[str]) -> dict[str, str]:
    """external_id -> content_hash of the project's prompts with these external_ids."""
    stored = {}
    for start in range(0, len(external_ids), BULK_BATCH):
        chunk = external_ids[start : start + BULK_BATCH]
        stored.update(
            Prompt.objects.filter(project=project, external_id__in=chunk).values_list(
                "external_id", "content_hash"
            )
        )
    return stored


def _conflicts(records: list[PromptRecord], stored: dict[str, str]) -> dict[int, str]:
    return {
        record.line: f"external_id {record.external_id!r} already exists with different content"
        for record in records
        if record.external_id in stored and stored[record.external_id] != record.content_hash
    }


def prompt_conflicts(*, project: Project, records: list[PromptRecord]) -> dict[int, str]:
    """line -> why, for each record whose external_id the project holds with other content.

    What `prompts_import` refuses; the API also asks it for the items of a payload that
    parsed when others did not, so one answer names every problem."""
    ids = [r.external_id for r in records if r.external_id is not None]
    return _conflicts(records, _stored_hashes(project, ids))


@transaction.atomic
def prompts_import(
    *, project: Project, records: Iterable[PromptRecord], source: str = ""
) -> ImportResult:
    """Store validated prompt records; existing ones (same external_id, or same content when
    there is no external_id) count as unchanged. Raises ServiceValidationError, keeping
    nothing, when an external_id already exists with different content.

    Records are read and stored a batch at a time, so an iterator of a file's records costs
    one batch of memory whatever the file's size. Every conflicting external_id is named at
    once (an API client fixes them in one go): after the first, nothing more is written and
    the rest of the records are only checked; the transaction then rolls back.
    """
    result = ImportResult()
    conflicts: dict[int, str] = {}
    conflict_count = 0
    records = iter(records)
    while batch := list(itertools.islice(records, BULK_BATCH)):
        stored = _stored_hashes(project, _external_ids(batch))
        found = _conflicts(batch, stored)
        conflict_count += len(found)
        for line, message in found.items():
            if len(conflicts) < MAX_NAMED_CONFLICTS:
                conflicts[line] = message
        if not conflict_count:
            _prompts_store(project, batch, stored, source, result)
    if conflicts:
        line, message = next(iter(conflicts.items()))
        more = f" (and {conflict_count - 1} more)" if conflict_count > 1 else ""
        raise ServiceValidationError(
            f"line {line}: {message}{more}",
            {"line": line, "external_id": message.split("'")[1], "conflicts": conflicts},
        )
    return result


def _external_ids(records: list[PromptRecord]) -> list[str]:
    return list({r.external_id for r in records if r.external_id is not None})


def _prompts_store(
    project: Project,
    records: list[PromptRecord],
    stored: dict[str, str],
    source: str,
    result: ImportResult,
) -> None:
    """One batch of `prompts_import`: skip the prompts stored already (`stored`: their
    external_ids; earlier batches of this import count, as they are in the same
    transaction), insert the rest."""
    existing_hashes = set(
        Prompt.objects.filter(
            project=project,
            external_id__isnull=True,
            content_hash__in={r.content_hash for r in records if r.external_id is None},
        ).values_list("content_hash", flat=True)
    )
    new: list[Prompt] = []
    for record in records:
        if record.external_id is not None:
            if record.external_id in stored:
                result.unchanged += 1
                continue
        elif record.content_hash in existing_hashes:
            result.unchanged += 1
            continue
        else:
            existing_hashes.add(record.content_hash)
        new.append(
            Prompt(
                project=project,
                external_id=record.external_id,
                messages=record.messages,
                is_chat=record.is_chat,
                content_hash=record.content_hash,
                metadata=record.metadata,
                source=source[:255],
            )
        )
    _bulk_create(Prompt, new, "Prompts", result)


@dataclass(slots=True)
class CandidateRecord:
    line: int
    prompt_ref: tuple[str, object]
    text: str
    model: str
    params: dict
    # `prompt_id` given beside `prompt_external_id`: they must name the same prompt.
    also_prompt_id: int | None = None


def candidate_record(raw, *, line: int) -> CandidateRecord:
    """Normalise one imported candidate: `prompt_external_id` or `prompt_id`, `text`, `model`."""
    if not isinstance(raw, dict):
        raise ValueError("each record must be a JSON object")
    prompt_id = raw.get("prompt_id")
    is_id = isinstance(prompt_id, int) and not isinstance(prompt_id, bool)
    also = None
    if raw.get("prompt_external_id") is not None:
        # Stripped as prompt external ids are, so a file copying them as written matches.
        ref = ("external_id", str(raw["prompt_external_id"]).strip())
        also = prompt_id if is_id else None  # anything else beside it is ignored, as it was
    elif prompt_id is not None:
        ref = ("id", record_id(prompt_id, "prompt_id"))
    else:
        raise ValueError("missing 'prompt_external_id' or 'prompt_id'")
    text = raw.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("'text' must be non-empty text")
    if len(text) > MAX_TEXT_LENGTH:
        raise ValueError(f"'text' is longer than {MAX_TEXT_LENGTH} characters")
    check_storable(text, "'text'")
    model = raw.get("model") or ""
    if not isinstance(model, str) or len(model) > 255:
        raise ValueError("'model' must be a name of at most 255 characters")
    params = raw.get("params") or raw.get("generation_params") or {}
    if not isinstance(params, dict):
        raise ValueError("'params' must be an object")
    return CandidateRecord(
        line=line, prompt_ref=ref, text=text, model=model, params=params, also_prompt_id=also
    )


def iter_candidate_file(path: str | Path) -> Iterator[CandidateRecord]:
    """The candidate records of a file, one line at a time; a bad one is ImportFileError."""
    for line, raw in read_records(path, kind="candidates"):
        try:
            yield candidate_record(raw, line=line)
        except ValueError as exc:
            raise ImportFileError(path, line, str(exc)) from None


@transaction.atomic
def candidates_import(
    *, project: Project, records: Iterable[CandidateRecord], model_version=None, where: str = "line"
) -> ImportResult:
    """Store candidates; a text already present for its prompt counts as unchanged.

    Every prompt reference must resolve inside the project, else nothing is written. Records
    are read and stored a batch at a time, so memory holds one batch whatever the file's
    size (a 360 MB file took 1.2 GB read whole); a refusal in any batch rolls back the
    transaction, the batches before it included.
    """
    result = ImportResult()
    records = iter(records)
    while batch := list(itertools.islice(records, BULK_BATCH)):
        _candidates_store(project, batch, model_version, where, result)
    return result


def _candidates_store(
    project: Project, records, model_version, where: str, result: ImportResult
) -> None:
    """One batch of `candidates_import`: resolve its prompts, skip stored texts, insert."""
    by_external = {r.prompt_ref[1] for r in records if r.prompt_ref[0] == "external_id"}
    by_id = {r.prompt_ref[1] for r in records if r.prompt_ref[0] == "id"}
    ext_map = dict(
        Prompt.objects.filter(project=project, external_id__in=by_external).values_list(
            "external_id", "id"
        )
    )
    id_set = set(Prompt.objects.filter(project=project, id__in=by_id).values_list("id", flat=True))
    resolved = []
    for record in records:
        kind, value = record.prompt_ref
        prompt_id = (
            ext_map.get(value) if kind == "external_id" else (value if value in id_set else None)
        )
        if prompt_id is None:
            field_name = "prompt_external_id" if kind == "external_id" else "prompt_id"
            raise ServiceValidationError(
                f"{where} {record.line}: no prompt with {field_name} {value!r} in project {project.slug}",
                {"line": record.line, field_name: value},
            )
        if record.also_prompt_id is not None and record.also_prompt_id != prompt_id:
            raise ServiceValidationError(
                f"{where} {record.line}: prompt_external_id {value!r} is prompt {prompt_id}, "
                f"but prompt_id says {record.also_prompt_id}: give one of them, or both of the "
                "same prompt",
                {"line": record.line, "prompt_id": record.also_prompt_id},
            )
        resolved.append((prompt_id, record, text_sha256(record.text)))
    # Stored texts of these prompts, earlier batches of this import included.
    existing = set(
        Candidate.objects.filter(prompt_id__in={p for p, _, _ in resolved}).values_list(
            "prompt_id", "text_hash"
        )
    )
    new = []
    for prompt_id, record, digest in resolved:
        if (prompt_id, digest) in existing:
            result.unchanged += 1
            continue
        existing.add((prompt_id, digest))
        new.append(
            Candidate(
                prompt_id=prompt_id,
                text=record.text,
                text_hash=digest,
                model_version=model_version,
                model_name=record.model or (model_version.name if model_version else ""),
                generation_params=record.params,
            )
        )
    _bulk_create(Candidate, new, "Candidates", result)


def prompts_import_file(
    *, project: Project, path: str | Path, records: Iterable[PromptRecord], source: str = ""
) -> ImportResult:
    """`prompts_import` of the records parsed from `path` (a list, or `iter_prompt_file`'s
    iterator): a refusal names file and line."""
    try:
        return prompts_import(project=project, records=records, source=source)
    except ImportFileError:
        raise
    except ServiceValidationError as exc:
        raise ImportFileError(path, exc.errors.get("line"), exc.detail.split(": ", 1)[-1]) from None


def candidates_import_file(*, project: Project, path: str | Path) -> ImportResult:
    """`candidates_import` of a file: a bad line anywhere (its shape or its prompt) is
    `file:line: reason` and nothing of the file is kept.

    Read twice, one line at a time: first to check every line's shape, touching no database
    (on SQLite the import's transaction holds the write lock, so parsing is kept out of it),
    then to store it batch by batch."""
    if not sum(1 for _ in iter_candidate_file(path)):  # every line checked
        raise ImportFileError(path, None, "no candidates in file")
    try:
        return candidates_import(project=project, records=iter_candidate_file(path))
    except ServiceValidationError as exc:
        raise ImportFileError(path, exc.errors.get("line"), exc.detail.split(": ", 1)[-1]) from None


def import_upload(
    *, project: Project, kind: str, name: str, chunks: Iterable[bytes]
) -> ImportResult:
    """Import an uploaded prompts or candidates file exactly as the commands import a path.

    The upload is written to a private temporary folder under its own base name, then read by
    the same parsers: all or nothing, and errors name `name:line`, not the temporary path.
    """
    if kind not in ("prompts", "candidates"):
        raise ServiceValidationError(
            f"unknown import kind {kind!r}", {"kind": ["prompts or candidates"]}
        )
    base = Path(name).name or "upload"
    with tempfile.TemporaryDirectory(prefix="import-") as folder:
        path = Path(folder) / base
        with path.open("wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
        try:
            if kind == "prompts":
                return _prompts_upload_import(project, path, base)
            return candidates_import_file(project=project, path=path)
        except ImportFileError as exc:
            raise ImportFileError(base, exc.line, exc.message) from None


def _prompts_upload_import(project: Project, path: Path, source: str) -> ImportResult:
    """A prompt file read twice, one line at a time, as `candidates_import_file` reads its
    file: every line checked first (no database: on SQLite the import's transaction holds
    the write lock), then stored a batch at a time. A web worker holds one batch and the
    first pass's external_ids, not the file's records (400k one-word prompts: 73 MB more
    at the peak instead of 357 MB, for a fifth more time)."""
    if not sum(1 for _ in iter_prompt_file(path)):
        raise ImportFileError(path, None, "no prompts in file")
    return prompts_import_file(
        project=project, path=path, records=iter_prompt_file(path, check_ids=False), source=source
    )
