"""Reading preference exports for reward-model training (no torch, no Django).

An export directory (SPEC section 5) holds a pairs file (one row per chosen/rejected pair),
a rankings file (one row per annotation, full tiers, for the K-wise loss) and
`manifest.json`. Each file may be JSON lines, Parquet, or a `datasets.save_to_disk` folder.
Everything here validates eagerly and fails with a `RewardDataError` naming the file (and
the line or row) and the problem, before any training starts or anything is written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from annotation.datafiles.digest import sha256_path
from annotation.datafiles.jsonl import JsonlError, iter_jsonl
from annotation.rules.pairs import index_pairs

Prompt = str | list[dict[str, Any]]

PAIR_COLUMNS = ("prompt", "chosen", "rejected")
RANKING_COLUMNS = ("prompt", "completions", "tiers")
SPLITS = ("train", "test")
FILE_SUFFIXES = (".jsonl", ".json", ".parquet")
# Files whose presence makes a directory a `datasets.save_to_disk` folder.
DATASETS_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


class RewardDataError(ValueError):
    """A preference export cannot be used for training; the message names the file and problem."""


class ExportModifiedError(RewardDataError):
    """An export table's sha256 differs from the one its manifest (or Export row) recorded."""


@dataclass
class PreferencePair:
    """One comparison: `chosen` beat `rejected` by `margin` tiers."""

    prompt: Prompt
    chosen: str
    rejected: str
    margin: float = 1.0
    weight: float = 1.0
    split: str = "train"


@dataclass
class Ranking:
    """One annotation: completions ordered into tiers, best first (a tier of several is a tie)."""

    prompt: Prompt
    completions: list[str]
    tiers: list[list[int]]
    weight: float = 1.0
    split: str = "train"

    def tier_of(self) -> list[int]:
        """Tier index (0 = best) of each completion."""
        out = [0] * len(self.completions)
        for t, tier in enumerate(self.tiers):
            for i in tier:
                out[i] = t
        return out


@dataclass
class PreferenceData:
    """What a training run consumes: pairs (pairwise loss) or rankings (K-wise), and provenance."""

    source: Path
    sha256: str
    pairs: list[PreferencePair] = field(default_factory=list)
    rankings: list[Ranking] = field(default_factory=list)
    manifest: dict[str, Any] | None = None
    skipped_ties: int = 0  # rows that are only a tie (margin 0, or one tier): nothing to learn
    # Digests that disagreed with a record of the export, kept when allow_modified: each
    # {"file", "sha256" (now), "recorded" (then), "by" ("manifest.json" or "Export N")}.
    modified: list[dict[str, str]] = field(default_factory=list)

    def check_digest(
        self, file: Path, actual: str, recorded: str, *, by: str, allow_modified: bool
    ) -> None:
        """Refuse a table whose bytes differ from what `by` recorded at export time."""
        if actual == recorded:
            return
        if not allow_modified:
            raise ExportModifiedError(
                f"{file}: modified after export (sha256 {actual[:12]}..., {by} recorded "
                f"{recorded[:12]}...); re-export it, or pass --allow-modified to train on it anyway"
            )
        # Resolved: one export given by id or by folder is one run (lineage's run_identity).
        self.modified.append(
            {"file": str(Path(file).resolve()), "sha256": actual, "recorded": recorded, "by": by}
        )

    def split_pairs(self, split: str) -> list[PreferencePair]:
        """Pairs of one split, derived from the rankings when the data is K-wise."""
        if self.rankings:
            return [p for r in self.rankings if r.split == split for p in pairs_from_ranking(r)]
        return [p for p in self.pairs if p.split == split]

    def split_rankings(self, split: str) -> list[Ranking]:
        """Rankings of one split."""
        return [r for r in self.rankings if r.split == split]


def ranking_pair_indexes(tier_of: list[int]) -> list[tuple[int, int, int]]:
    """All (better, worse, tier gap) index triples of a ranking; tied completions give no pair."""
    return index_pairs(tier_of)


def pairs_from_ranking(ranking: Ranking) -> list[PreferencePair]:
    """Expand a ranking into pairs, each weighted so that the ranking counts once in total."""
    triples = ranking_pair_indexes(ranking.tier_of())
    return [
        PreferencePair(
            prompt=ranking.prompt,
            chosen=ranking.completions[i],
            rejected=ranking.completions[j],
            margin=float(gap),
            weight=ranking.weight / len(triples),
            split=ranking.split,
        )
        for i, j, gap in triples
    ]


# --------------------------------------------------------------------------- locating files


def find_table(directory: Path, stem: str) -> Path | None:
    """The `stem` table in an export directory: stem.jsonl, stem.parquet or a stem/ datasets folder."""
    for suffix in FILE_SUFFIXES:
        if (candidate := directory / f"{stem}{suffix}").is_file():
            return candidate
    if (candidate := directory / stem).is_dir():
        return candidate
    return None


def _is_datasets_folder(path: Path) -> bool:
    return path.is_dir() and any((path / m).is_file() for m in DATASETS_MARKERS)


def resolve_table(data: str | Path, *, loss: str) -> Path:
    """The file to train on: the pairs file for "pairwise", the rankings file for "kwise".

    `data` is an export directory or a table (file or datasets folder). Pairwise training
    falls back to the rankings file when there is no pairs file; K-wise training given a
    pairs file looks for the rankings file beside it.
    """
    path = Path(data).expanduser()
    if not path.exists():
        raise RewardDataError(f"{path}: no such file or directory")
    if path.is_dir() and not _is_datasets_folder(path):
        pairs, rankings = find_table(path, "pairs"), find_table(path, "rankings")
        chosen = (pairs or rankings) if loss == "pairwise" else rankings
        if chosen is None:
            wanted = "rankings" if loss == "kwise" else "pairs or rankings"
            raise RewardDataError(
                f"{path}: no {wanted} file (.jsonl, .parquet or a datasets folder) in this export directory"
            )
        return chosen
    if path.is_file() and path.suffix not in FILE_SUFFIXES:
        raise RewardDataError(
            f"{path}: unknown format {path.suffix or '(no suffix)'!r}; use .jsonl, .parquet or a datasets folder"
        )
    if loss == "kwise" and path.stem != "rankings" and "completions" not in _column_names(path):
        beside = find_table(path.parent, "rankings")
        if beside is None:
            raise RewardDataError(
                f"{path}: the K-wise loss needs the rankings file; none found beside it in {path.parent}"
            )
        return beside
    return path


def _column_names(path: Path) -> set[str]:
    for _, row in _iter_rows(path):
        return set(row)
    return set()


# --------------------------------------------------------------------------- reading rows


def _iter_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (location, row) pairs; location is "file:line" or "file row N" for error messages."""
    if path.is_dir():
        yield from _iter_datasets_rows(path)
    elif path.suffix == ".parquet":
        yield from _iter_parquet_rows(path)
    else:
        try:
            for number, row in iter_jsonl(path):
                if not isinstance(row, dict):
                    raise RewardDataError(f"{path}:{number}: a row must be a JSON object")
                yield f"{path}:{number}", row
        except JsonlError as exc:
            raise RewardDataError(str(exc)) from None


def _iter_parquet_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise RewardDataError(f"{path}: not a readable Parquet file ({exc})") from None
    number = 0
    for batch in parquet.iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            number += 1
            yield f"{path} row {number}", row


def _iter_datasets_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises FileNotFoundError, ValueError, ... for a bad folder
        raise RewardDataError(f"{path}: not a readable datasets folder ({exc})") from None
    # A DatasetDict ("train"/"test" splits) gives rows their split from the split name.
    parts = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [(None, loaded)]
    for name, dataset in parts:
        for number, row in enumerate(dataset, start=1):
            if name in SPLITS and row.get("split") is None:
                row = {**row, "split": name}
            yield (f"{path} {name} row {number}" if name else f"{path} row {number}"), row


# --------------------------------------------------------------------------- validating rows


def _prompt(value: Any, where: str) -> Prompt:
    if isinstance(value, str):
        return value
    if (
        isinstance(value, list)
        and value
        and all(
            isinstance(m, dict)
            and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str)
            for m in value
        )
    ):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise RewardDataError(
        f"{where}: 'prompt' must be a string or a list of {{role, content}} messages"
    )


def _response(value: Any, column: str, where: str) -> str:
    if isinstance(value, str):
        return value
    # Conversational exports store a response as one assistant message (trl's format).
    if (
        isinstance(value, list)
        and len(value) == 1
        and isinstance(value[0], dict)
        and value[0].get("role") == "assistant"
        and isinstance(value[0].get("content"), str)
    ):
        return value[0]["content"]
    raise RewardDataError(
        f"{where}: {column!r} must be a string or a list of one assistant message"
    )


def _number(
    row: dict[str, Any], column: str, default: float, where: str, *, positive: bool
) -> float:
    value = row.get(column)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RewardDataError(f"{where}: {column!r} must be a finite number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise RewardDataError(
            f"{where}: {column!r} must be {'> 0' if positive else '>= 0'}, got {value!r}"
        )
    return float(value)


def _split(row: dict[str, Any], where: str) -> str:
    value = row.get("split") or "train"
    if value not in SPLITS:
        raise RewardDataError(f"{where}: 'split' must be 'train' or 'test', got {value!r}")
    return value


def _missing(row: dict[str, Any], required: tuple[str, ...], where: str) -> None:
    missing = [c for c in required if c not in row]
    if missing:
        names = ", ".join(repr(c) for c in missing)
        raise RewardDataError(f"{where}: missing column(s) {names} (found {sorted(row)})")


def parse_pair(row: dict[str, Any], where: str) -> PreferencePair:
    """Validate one pairs-file row."""
    _missing(row, PAIR_COLUMNS, where)
    return PreferencePair(
        prompt=_prompt(row["prompt"], where),
        chosen=_response(row["chosen"], "chosen", where),
        rejected=_response(row["rejected"], "rejected", where),
        margin=_number(row, "margin", 1.0, where, positive=False),
        weight=_number(row, "weight", 1.0, where, positive=True),
        split=_split(row, where),
    )


def parse_ranking(row: dict[str, Any], where: str) -> Ranking:
    """Validate one rankings-file row: tiers must name every completion exactly once."""
    _missing(row, RANKING_COLUMNS, where)
    completions = row["completions"]
    if not isinstance(completions, list) or len(completions) < 2:
        raise RewardDataError(f"{where}: 'completions' must be a list of at least 2 responses")
    texts = [
        _response(c if isinstance(c, str | list) else [c], "completions", where)
        for c in completions
    ]
    tiers = row["tiers"]
    if not isinstance(tiers, list) or not all(
        isinstance(t, list) and t and all(isinstance(i, int) and not isinstance(i, bool) for i in t)
        for t in tiers
    ):
        raise RewardDataError(f"{where}: 'tiers' must be a list of non-empty lists of indexes")
    flat = sorted(i for t in tiers for i in t)
    if flat != list(range(len(texts))):
        raise RewardDataError(
            f"{where}: 'tiers' must name each of the {len(texts)} completions exactly once, got {tiers}"
        )
    return Ranking(
        prompt=_prompt(row["prompt"], where),
        completions=texts,
        tiers=[list(t) for t in tiers],
        weight=_number(row, "weight", 1.0, where, positive=True),
        split=_split(row, where),
    )


def manifest_digest(manifest: dict[str, Any] | None, file: Path) -> str | None:
    """The sha256 an export manifest recorded for `file` (a table beside it), if it lists one."""
    files = (manifest or {}).get("files")
    if not isinstance(files, dict):
        return None
    for entry in files.values():
        if isinstance(entry, dict) and entry.get("path") == file.name:
            digest = entry.get("sha256")
            return digest if isinstance(digest, str) else None
    return None


def load_preferences(
    data: str | Path, *, loss: str = "pairwise", allow_modified: bool = False
) -> PreferenceData:
    """Load and validate the table `loss` trains on; raise `RewardDataError` on any problem.

    A table whose sha256 differs from the one in the export's manifest.json is refused
    (`ExportModifiedError`) unless `allow_modified`, which records the mismatch instead.
    """
    if loss not in ("pairwise", "kwise"):
        raise ValueError(f"unknown loss {loss!r}: use 'pairwise' or 'kwise'")
    path = resolve_table(data, loss=loss)
    # The export's own digest scheme, so `data_sha256` equals `Export.sha256` (hf folders too).
    result = PreferenceData(source=path, sha256=sha256_path(path))
    manifest = path.parent / "manifest.json"
    if manifest.is_file():
        try:
            result.manifest = json.loads(manifest.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise RewardDataError(f"{manifest}: invalid JSON ({exc.msg})") from None
        recorded = manifest_digest(result.manifest, path)
        if recorded is not None:
            result.check_digest(
                path, result.sha256, recorded, by=manifest.name, allow_modified=allow_modified
            )
    rankings_table = None
    for where, row in _iter_rows(path):
        if rankings_table is None:
            # The first row decides what the table holds, so a rankings file also serves pairwise.
            rankings_table = "completions" in row or "tiers" in row
        if rankings_table:
            ranking = parse_ranking(row, where)
            if len(ranking.tiers) < 2:
                result.skipped_ties += 1
                continue
            result.rankings.append(ranking)
        else:
            pair = parse_pair(row, where)
            if pair.margin == 0:  # a tie: excluded from training and accuracy alike
                result.skipped_ties += 1
                continue
            result.pairs.append(pair)
    if rankings_table is None:
        raise RewardDataError(f"{path}: the file is empty (no rows)")
    if not result.pairs and not result.rankings:
        raise RewardDataError(f"{path}: no usable rows (every row is a tie)")
    if loss == "kwise" and not result.rankings:
        raise RewardDataError(f"{path}: the K-wise loss needs a rankings file (completions, tiers)")
    if not result.split_pairs("train"):
        raise RewardDataError(f"{path}: no rows with split 'train'")
    return result
