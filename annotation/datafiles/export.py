"""Streaming writers for preference exports: pairs, rankings and a manifest (SPEC section 5).

An export directory holds `pairs.<ext>`, `rankings.<ext>` and `manifest.json`. Formats:
`jsonl` (default, written line by line), `parquet` (written in row groups) and `hf` (a
`datasets.save_to_disk` folder per table, named `pairs/` and `rankings/`). Rows go to temporary
names inside the directory and are renamed only once everything is written, manifest last, so a
failure never leaves a half file under a final name. pyarrow and datasets are imported lazily:
the web app can write JSONL without the ML stack.

Rows come in either as dicts (`write_pairs`, `write_rankings`: any producer) or as one ranking
of a `ComparisonBlock` (`write_annotation`: the exporter's fast path, which writes the same
bytes from JSON fragments encoded once per comparison).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

from annotation.datafiles.digest import sha256_file, sha256_tree
from annotation.datafiles.jsonl import iter_jsonl
from annotation.datafiles.rows import CandidateText, pair_rows, ranking_row
from annotation.rules.pairs import PAIRINGS, ordered_pairs
from annotation.rules.ranking import tier_of

SCHEMA_VERSION = 1
FORMATS: tuple[str, ...] = ("jsonl", "parquet", "hf")
MANIFEST_NAME = "manifest.json"

PAIR_FIELDS: tuple[str, ...] = (
    "prompt",
    "chosen",
    "rejected",
    "margin",
    "weight",
    "split",
    "comparison_id",
    "annotation_id",
    "labeler",
    "chosen_model",
    "rejected_model",
)
RANKING_FIELDS: tuple[str, ...] = (
    "prompt",
    "completions",
    "candidate_ids",
    "tiers",
    "weight",
    "split",
    "comparison_id",
    "annotation_id",
    "labeler",
    "models",
)
TABLE_FIELDS = {"pairs": PAIR_FIELDS, "rankings": RANKING_FIELDS}
# Fields that hold a conversation in chat exports and a string in text exports.
PROMPT_SHAPED = {"pairs": ("prompt", "chosen", "rejected"), "rankings": ("prompt",)}

DEFAULT_CHUNK_ROWS = 20_000
WRITE_BATCH_ROWS = 1000
_WRITE_BUFFER = 1 << 20
# json's own string encoder (C), as used by JSONEncoder(ensure_ascii=False).
_encode_str = json.encoder.encode_basestring


# Margins (tier gaps; K <= 9 keeps them below 9) as json writes them. A dict that fills
# itself, so a larger ranking still works.
class _MarginJson(dict):
    def __missing__(self, gap: int) -> str:
        self[gap] = text = float.__repr__(float(gap))
        return text


_MARGIN_JSON = _MarginJson()


def table_filename(table: str, fmt: str) -> str:
    """Final name of a table in an export directory: `pairs.jsonl`, `rankings.parquet`, `pairs`."""
    return table if fmt == "hf" else f"{table}.{fmt}"


def arrow_schema(table: str, prompt_format: str):
    """The pyarrow schema of a table; chat prompts are lists of {role, content} structs."""
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    conversation = pa.list_(message) if prompt_format == "chat" else pa.string()
    common = [
        ("weight", pa.float64()),
        ("split", pa.string()),
        ("comparison_id", pa.int64()),
        ("annotation_id", pa.int64()),
        ("labeler", pa.string()),
    ]
    if table == "pairs":
        fields = [
            ("prompt", conversation),
            ("chosen", conversation),
            ("rejected", conversation),
            ("margin", pa.float64()),
            *common,
            ("chosen_model", pa.string()),
            ("rejected_model", pa.string()),
        ]
    else:
        fields = [
            ("prompt", conversation),
            ("completions", pa.list_(pa.string())),
            ("candidate_ids", pa.list_(pa.int64())),
            ("tiers", pa.list_(pa.list_(pa.int64()))),
            *common,
            ("models", pa.list_(pa.string())),
        ]
    return pa.schema(fields)


# A table on its way (`.pairs.jsonl.<hex>.tmp`, for hf also its `.spool.jsonl` and `.cache`),
# renamed to its name once complete; the writer holds LOCK_NAME locked meanwhile.
_TMP_NAME = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp(\.spool\.jsonl|\.cache)?$")
LOCK_NAME = ".export.lock"


class _FolderLock:
    """An exclusive lock on an export folder while an export writes it (flock: the kernel
    drops it when the process ends, however it ends)."""

    def __init__(self, folder: Path) -> None:
        import fcntl

        self.path = folder / LOCK_NAME
        self._file = open(self.path, "a")  # noqa: SIM115 (closed in release)
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise FileExistsError(
                f"{folder} is being written by another export right now; wait for it, or "
                "choose another output folder"
            ) from None

    def release(self) -> None:
        if not self._file.closed:
            self.path.unlink(missing_ok=True)  # while still held: nobody takes a stale one
            self._file.close()


def _remove_leftovers(folder: Path) -> None:
    """Delete the temporary tables an export killed midway left (never published, they
    blocked the same export run again: "not empty"). Called holding the folder's lock, so no
    live export is writing them."""
    for entry in folder.iterdir():
        if _TMP_NAME.match(entry.name):
            _remove(entry)


class _Sink:
    """Rows of one table on their way to a temporary path."""

    def __init__(self, table: str, tmp: Path) -> None:
        self.table = table
        self.tmp = tmp

    def write(self, row: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def write_many(self, rows: list[Mapping[str, Any]]) -> None:
        for row in rows:
            self.write(row)

    def close(self, prompt_format: str | None) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        _remove(self.tmp)


# ensure_ascii=False keeps non-Latin text readable and the file smaller; NaN or infinity would
# make a line invalid JSON, so they raise instead.
_encode_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


class _JsonlSink(_Sink):
    def __init__(self, table: str, tmp: Path) -> None:
        super().__init__(table, tmp)
        self._file = open(tmp, "wb", buffering=_WRITE_BUFFER)  # noqa: SIM115 (closed in close/abort)
        self._digest = hashlib.sha256()
        self._fields = TABLE_FIELDS[table]
        self.sha256: str | None = None

    def write(self, row: Mapping[str, Any]) -> None:
        self.write_many([row])

    def write_many(self, rows: list[Mapping[str, Any]]) -> None:
        """One JSON line per row, fields in table order whatever the order of the dict."""
        fields = self._fields
        try:
            lines = [_encode_json({name: row[name] for name in fields}) + "\n" for row in rows]
        except KeyError as exc:
            raise ValueError(f"{self.table} row lacks field {exc.args[0]!r}") from None
        self.write_text("".join(lines))

    def write_text(self, text: str) -> None:
        """Append already-encoded lines (the fast path of `ExportWriter.write_annotation`)."""
        data = text.encode("utf-8")
        self._digest.update(data)
        self._file.write(data)

    def close(self, prompt_format: str | None) -> None:
        self._file.close()
        self.sha256 = self._digest.hexdigest()

    def abort(self) -> None:
        # On a full disk the bytes still buffered fail this flush too; the file goes anyway.
        with contextlib.suppress(OSError):
            self._file.close()
        super().abort()


class _ParquetSink(_Sink):
    def __init__(self, table: str, tmp: Path, chunk_rows: int) -> None:
        super().__init__(table, tmp)
        import pyarrow.parquet  # noqa: F401 (fail early when pyarrow is missing)

        self._rows: list[Mapping[str, Any]] = []
        self._chunk_rows = chunk_rows
        self._writer = None
        self.sha256: str | None = None

    def write(self, row: Mapping[str, Any]) -> None:
        self._rows.append(row)
        if len(self._rows) >= self._chunk_rows:
            self._flush(prompt_format=None)

    def _flush(self, prompt_format: str | None) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._writer is None:
            fmt = prompt_format or _prompt_format_of(self._rows[0]["prompt"] if self._rows else "")
            self._schema = arrow_schema(self.table, fmt)
            self._writer = pq.ParquetWriter(self.tmp, self._schema)
        if self._rows:
            self._writer.write_table(pa.Table.from_pylist(self._rows, schema=self._schema))
            self._rows = []

    def close(self, prompt_format: str | None) -> None:
        self._flush(prompt_format)
        self._writer.close()
        self.sha256 = sha256_file(self.tmp)

    def abort(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(OSError):  # as for JSONL: a full disk fails the close
                self._writer.close()
        super().abort()


class _HfSink(_Sink):
    """Spools rows to JSONL, then builds a Dataset from a generator over the spool."""

    def __init__(self, table: str, tmp: Path) -> None:
        super().__init__(table, tmp)
        import datasets  # noqa: F401 (fail early when datasets is missing)

        self._spool = _JsonlSink(table, tmp.with_name(tmp.name + ".spool.jsonl"))
        self.sha256: str | None = None

    def write(self, row: Mapping[str, Any]) -> None:
        self._spool.write(row)

    def close(self, prompt_format: str | None) -> None:
        import datasets

        self._spool.close(prompt_format)
        spool, cache = self._spool.tmp, self.tmp.with_name(self.tmp.name + ".cache")
        try:
            features = datasets.Features.from_arrow_schema(
                arrow_schema(self.table, prompt_format or "text")
            )
            if spool.stat().st_size == 0:
                # An empty table (e.g. no pairs: every ranking was all-bad or one tier) is a
                # valid empty dataset. from_generator fails on zero rows, and save_to_disk of
                # zero rows writes zero shards, which load_from_disk cannot read back: one
                # empty shard round-trips.
                dataset = datasets.Dataset.from_dict(
                    {name: [] for name in features}, features=features
                )
                dataset.save_to_disk(str(self.tmp), num_shards=1)
            else:
                dataset = datasets.Dataset.from_generator(
                    _spool_rows,
                    features=features,
                    cache_dir=str(cache),
                    gen_kwargs={"path": str(spool)},
                    # An explicit fingerprint spares datasets from hashing the generator.
                    fingerprint=self._spool.sha256,
                )
                dataset.save_to_disk(str(self.tmp))
            del dataset
        finally:
            _remove(spool)
            _remove(cache)
        self.sha256 = sha256_tree(self.tmp)

    def abort(self) -> None:
        self._spool.abort()
        _remove(self.tmp.with_name(self.tmp.name + ".cache"))
        super().abort()


def _spool_rows(path: str) -> Iterator[dict[str, Any]]:
    for _, row in iter_jsonl(path):
        yield row


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _prompt_format_of(prompt: Any) -> str:
    return "text" if isinstance(prompt, str) else "chat"


@dataclass
class ExportResult:
    """What an export wrote: final paths, row counts, hashes and the manifest."""

    out_dir: Path
    files: dict[str, Path]
    sha256: dict[str, str]
    counts: dict[str, Any]
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def manifest_path(self) -> Path:
        return self.out_dir / MANIFEST_NAME


@dataclass
class ComparisonBlock:
    """What every row from one comparison shares; the exporter builds one per comparison.

    `ExportWriter.write_annotation` turns one ranking of the block into its pair rows and its
    ranking row. The JSONL writer encodes the block's prompt, completions and ids once, keeps
    the fragments here, and joins them for every pair of every annotation of the comparison:
    encoding, not the database, is what bounds an export's speed.
    """

    prompt: str | list[dict[str, str]]
    split: str
    comparison_id: int
    order: Sequence[int]  # canonical candidate order: the ranking row's completions
    candidates: Mapping[int, CandidateText]
    _fragments: _BlockJson | None = field(default=None, init=False, repr=False)

    def fragments(self) -> _BlockJson:
        """The block's JSON fragments, encoded on first use."""
        if self._fragments is None:
            self._fragments = _BlockJson(self)
        return self._fragments


class _BlockJson:
    """JSON fragments of a ComparisonBlock, laid out in PAIR_FIELDS / RANKING_FIELDS order."""

    def __init__(self, block: ComparisonBlock) -> None:
        # Built by joining encoded strings: the same bytes as json.dumps of the lists and
        # dicts, without a JSONEncoder pass per value (checked against it in the tests).
        candidates = [block.candidates[c] for c in block.order]
        texts = [_encode_str(c.text) for c in candidates]
        models = [_str_json(c.model) for c in candidates]
        self.index = {c: i for i, c in enumerate(block.order)}
        self.position = {c: str(i) for c, i in self.index.items()}
        if isinstance(block.prompt, str):
            prompt = _encode_str(block.prompt)
            values = texts
        else:
            prompt = _encode_json(block.prompt)
            values = ['[{"role":"assistant","content":' + t + "}]" for t in texts]
        self.values = dict(zip(block.order, values))
        self.models = dict(zip(block.order, models))
        self.pair_head = '{"prompt":' + prompt + ',"chosen":'
        self.context = (
            ',"split":'
            + _encode_str(block.split)
            + ',"comparison_id":'
            + _int_json(block.comparison_id)
        )
        self.ranking_head = (
            '{"prompt":'
            + prompt
            + ',"completions":['
            + ",".join(texts)
            + '],"candidate_ids":['
            + ",".join(_int_json(c) for c in block.order)
            + '],"tiers":'
        )
        self.ranking_tail = ',"models":[' + ",".join(models) + "]}\n"


def _str_json(value: str) -> str:
    return _encode_str(value) if type(value) is str else _encode_json(value)


def _int_json(value: int) -> str:
    # type(value) is int, not isinstance: True would print as 1 instead of true.
    return int.__repr__(value) if type(value) is int else _encode_json(value)


class ExportWriter:
    """Writes pairs and rankings incrementally; `finish` publishes them with the manifest.

    Use as a context manager: an exception inside the block (or a failing `finish`) removes
    every temporary file and leaves nothing under the final names.
    """

    def __init__(
        self,
        out_dir: str | Path,
        *,
        fmt: str = "jsonl",
        prompt_format: str | None = None,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
        if prompt_format not in (None, "chat", "text"):
            raise ValueError("prompt_format must be 'chat', 'text' or None (from the first row)")
        self.out_dir = Path(out_dir)
        self.fmt = fmt
        self.prompt_format = prompt_format
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.final = {t: self.out_dir / table_filename(t, fmt) for t in TABLE_FIELDS}
        self._lock = _FolderLock(self.out_dir)
        try:
            self._claim_folder()
        except BaseException:
            self._lock.release()
            raise
        token = uuid.uuid4().hex[:12]
        self._sinks: dict[str, _Sink] = {}
        try:
            for table in TABLE_FIELDS:
                tmp = self.out_dir / f".{table_filename(table, fmt)}.{token}.tmp"
                if fmt == "jsonl":
                    self._sinks[table] = _JsonlSink(table, tmp)
                elif fmt == "parquet":
                    self._sinks[table] = _ParquetSink(table, tmp, chunk_rows)
                else:
                    self._sinks[table] = _HfSink(table, tmp)
        except BaseException:
            for sink in self._sinks.values():
                sink.abort()
            self._lock.release()
            raise
        self._manifest_tmp = self.out_dir / f".{MANIFEST_NAME}.{token}.tmp"
        self.counts: dict[str, Counter] = {t: Counter() for t in TABLE_FIELDS}
        self._checked: set[str] = set()
        self._closed = False

    def _claim_folder(self) -> None:
        taken = [p for p in (*self.final.values(), self.out_dir / MANIFEST_NAME) if p.exists()]
        if taken:
            # Exports are immutable snapshots: never overwrite one.
            raise FileExistsError(f"{taken[0]} already exists; choose an empty output folder")
        _remove_leftovers(self.out_dir)
        other = next((p for p in self.out_dir.iterdir() if p.name != LOCK_NAME), None)
        if other is not None:
            # An export owns its folder: other files in it would sit beside the export (and
            # look like part of it) even though the manifest does not list them.
            raise FileExistsError(
                f"{self.out_dir} is not empty (it holds {other.name!r}); choose a new or "
                "empty output folder"
            )

    def __enter__(self) -> ExportWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self._closed:
            self.abort()

    def _check(self, table: str, row: Mapping[str, Any]) -> None:
        expected = TABLE_FIELDS[table]
        if table not in self._checked:
            if set(row) != set(expected):
                missing = sorted(set(expected) - set(row))
                extra = sorted(set(row) - set(expected))
                raise ValueError(
                    f"{table} row fields differ: missing {missing}, unexpected {extra}"
                )
            self._checked.add(table)
        elif len(row) != len(expected):
            raise ValueError(f"{table} row has {len(row)} fields, expected {len(expected)}")
        if self.prompt_format is None:
            self.prompt_format = _prompt_format_of(row["prompt"])
        # A column mixing strings and lists cannot become an Arrow column: one kind per export.
        text = self.prompt_format == "text"
        for name in PROMPT_SHAPED[table]:
            if (type(row[name]) is str) is not text:
                raise ValueError(
                    f"{table} row {name!r} is {_prompt_format_of(row[name])} in a "
                    f"{self.prompt_format} export: an export is all-text or all-chat"
                )

    def _write(self, table: str, rows: Iterable[Mapping[str, Any]]) -> None:
        counts, sink = self.counts[table], self._sinks[table]
        iterator = iter(rows)
        # Bounded batches: a generator of any length is consumed in constant memory.
        while batch := list(islice(iterator, WRITE_BATCH_ROWS)):
            for row in batch:
                self._check(table, row)
                counts[row["split"]] += 1
            sink.write_many(batch)

    def write_pair(self, row: Mapping[str, Any]) -> None:
        """Append one pair row (fields PAIR_FIELDS)."""
        self._write("pairs", (row,))

    def write_pairs(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append pair rows, e.g. all pairs of one annotation (encoded as one batch)."""
        self._write("pairs", rows)

    def write_ranking(self, row: Mapping[str, Any]) -> None:
        """Append one ranking row (fields RANKING_FIELDS)."""
        self._write("rankings", (row,))

    def write_rankings(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append ranking rows."""
        self._write("rankings", rows)

    def write_annotation(
        self,
        block: ComparisonBlock,
        *,
        tiers: Sequence[Sequence[int]],
        annotation_id: int | None,
        labeler: str,
        pairing: str = "all_pairs",
        extra_pairs: int = 0,
    ) -> int:
        """Write one ranking of `block`: its pairs and its ranking row; returns the pair count.

        A ranking that states no preference (one tier) writes nothing and returns 0. The rows
        are exactly those of `rows.pair_rows` and `rows.ranking_row`; `extra_pairs` is as
        there (the annotation's edit pairs, written by the caller, share its weight).
        """
        if pairing not in PAIRINGS:
            raise ValueError(f"unknown pairing {pairing!r}: use one of {', '.join(PAIRINGS)}")
        named = tier_of(tiers)  # rejects a candidate named twice
        raw = ordered_pairs(tiers, pairing, check=False)
        if not raw:
            return 0
        if self.prompt_format is None:
            self.prompt_format = _prompt_format_of(block.prompt)
        if _prompt_format_of(block.prompt) != self.prompt_format:
            raise ValueError(
                f"comparison {block.comparison_id} has a {_prompt_format_of(block.prompt)} "
                f"prompt in a {self.prompt_format} export: an export is all-text or all-chat"
            )
        if self.fmt != "jsonl":
            common = dict(
                prompt=block.prompt,
                candidates=block.candidates,
                tiers=tiers,
                split=block.split,
                comparison_id=block.comparison_id,
                annotation_id=annotation_id,
                labeler=labeler,
            )
            self._write("pairs", pair_rows(pairing=pairing, extra_pairs=extra_pairs, **common))
            self._write("rankings", (ranking_row(order=block.order, **common),))
            return len(raw)

        frag = block.fragments()
        index = frag.index
        if named.keys() != index.keys():
            raise ValueError(
                f"ranking {tiers!r} does not name exactly the candidates {block.order}"
            )
        values, models, head = frag.values, frag.models, frag.pair_head
        who = (
            frag.context
            + ',"annotation_id":'
            + ("null" if annotation_id is None else _int_json(annotation_id))
            + ',"labeler":'
            + _encode_str(labeler)
        )
        weight = 1.0 / (len(raw) + extra_pairs)
        middle = ',"weight":' + float.__repr__(weight) + who + ',"chosen_model":'
        margins = _MARGIN_JSON
        # f-strings build each line in one allocation (a chain of + is 2-3x slower here).
        lines = [
            f'{head}{values[chosen]},"rejected":{values[rejected]},"margin":{margins[gap]}'
            f'{middle}{models[chosen]},"rejected_model":{models[rejected]}}}\n'
            for chosen, rejected, gap in raw
        ]
        position = frag.position
        tiers_json = (
            "[[" + "],[".join([",".join([position[c] for c in tier]) for tier in tiers]) + "]]"
        )
        self._sinks["pairs"].write_text("".join(lines))
        self._sinks["rankings"].write_text(
            frag.ranking_head + tiers_json + ',"weight":1.0' + who + frag.ranking_tail
        )
        self.counts["pairs"][block.split] += len(raw)
        self.counts["rankings"][block.split] += 1
        return len(raw)

    def finish(
        self,
        *,
        options: Mapping[str, Any] | None = None,
        source: Mapping[str, Any] | None = None,
        extra_counts: Mapping[str, Any] | None = None,
        created_at: datetime | None = None,
    ) -> ExportResult:
        """Close the tables, write the manifest, and rename everything to its final name."""
        if self._closed:
            raise RuntimeError("export already finished")
        for sink in self._sinks.values():
            sink.close(self.prompt_format)
        counts: dict[str, Any] = {table: sum(c.values()) for table, c in self.counts.items()} | {
            f"{table}_{split}": self.counts[table][split]
            for table in TABLE_FIELDS
            for split in ("train", "test")
        }
        counts.update(extra_counts or {})
        sha = {table: sink.sha256 for table, sink in self._sinks.items()}
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "created_at": (created_at or datetime.now(UTC)).isoformat(),
            "format": self.fmt,
            "prompt_format": self.prompt_format,
            "source": dict(source or {}),
            "options": dict(options or {}),
            "counts": counts,
            "files": {
                table: {
                    "path": self.final[table].name,
                    "sha256": sha[table],
                    "rows": counts[table],
                    "kind": "dir" if self.fmt == "hf" else "file",
                }
                for table in TABLE_FIELDS
            },
            "fields": {table: list(fields) for table, fields in TABLE_FIELDS.items()},
        }
        self._manifest_tmp.write_text(
            json.dumps(manifest, indent=2, ensure_ascii=False, default=str) + "\n",
            encoding="utf-8",
        )
        published: list[Path] = []
        try:
            for table, sink in self._sinks.items():
                os.replace(sink.tmp, self.final[table])
                published.append(self.final[table])
            # The manifest goes last: its presence means the export is complete.
            os.replace(self._manifest_tmp, self.out_dir / MANIFEST_NAME)
        except BaseException:
            for path in published:
                _remove(path)
            raise
        self._closed = True
        self._lock.release()
        return ExportResult(
            out_dir=self.out_dir,
            files=dict(self.final),
            sha256=sha,
            counts=counts,
            manifest=manifest,
        )

    def abort(self) -> None:
        """Remove every temporary file; nothing under a final name was written yet."""
        for sink in self._sinks.values():
            sink.abort()
        _remove(self._manifest_tmp)
        self._closed = True
        self._lock.release()
