"""Writes of lineage: record a training run around the training code, register model versions.

The training code stays Django-free: commands wrap it in `training_run` and hand it the
recorder's `log`. A run's project and export are linked by `annotation.services.runs`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import signal
import threading
import traceback
from collections.abc import Iterator
from dataclasses import asdict, is_dataclass
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from lineage.models import ModelVersion, TrainingRun
from lineage.processes import describe, is_alive, this_process


def jsonable(value, non_finite: list[str] | None = None, _path: str = ""):
    """Config dataclasses, paths and metrics as plain JSON values that every database stores.

    NaN and +-Infinity (an fp16 `grad_norm`, a reward of 1e30 summed) are not JSON: PostgreSQL
    refuses them, so they become None and their dotted key is appended to `non_finite`. NUL
    characters, which PostgreSQL's jsonb refuses too, become U+FFFD.
    """
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if isinstance(value, dict):
        return {
            str(k): jsonable(v, non_finite, f"{_path}.{k}" if _path else str(k))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [
            jsonable(v, non_finite, f"{_path}.{i}" if _path else str(i))
            for i, v in enumerate(value)
        ]
    if _is_scalar(value):
        value = value.item()  # numpy / torch 0-d numbers: a Python bool, int or float
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        number = float(value)
        if math.isfinite(number):
            return number
        if non_finite is not None:
            non_finite.append(_path or "value")
        return None
    text = value if isinstance(value, str) else str(value)
    return text.replace("\x00", "\ufffd")


def _is_scalar(value) -> bool:
    """numpy / torch 0-d numbers (which are not float subclasses) without importing either."""
    return type(value).__module__ in ("numpy", "torch") and getattr(value, "ndim", None) == 0


def jsonable_metrics(metrics: dict) -> dict:
    """`jsonable` for a metrics dict: non-finite figures stored as None and listed in `non_finite`."""
    bad: list[str] = []
    clean = jsonable(dict(metrics), bad)
    if bad:
        clean["non_finite"] = sorted(set(clean.get("non_finite") or []) | set(bad))
    return clean


class RunRecorder:
    """Handle given to the training code: `log(metrics)` appends to the run's history."""

    def __init__(self, run: TrainingRun, flush_every: int = 10):
        self.run = run
        self.flush_every = flush_every
        self._pending = 0

    def log(self, metrics: dict) -> None:
        self.run.metrics_history.append(jsonable_metrics(metrics))
        self._pending += 1
        if self._pending >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        _save(self.run, ["metrics", "metrics_history"])
        self._pending = 0

    def history_from(self, metrics_file: str | Path) -> None:
        """Take the whole history from the training's own metrics file, when it has one: a
        resumed run logs only the steps after its checkpoint, and the run's charts began
        there. The file holds every step, those before the interruption included."""
        path = Path(metrics_file)
        if not path.is_file():
            return
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if rows:
            self.run.metrics_history = rows
            self.flush()

    def append_log(self, line: str) -> None:
        self.run.log = (self.run.log + line.rstrip() + "\n")[-100_000:]


def _save(run: TrainingRun, fields: list[str] | None = None) -> None:
    """Save the run with its JSON fields made JSON-safe (the training code may assign any dict)."""
    run.metrics = jsonable_metrics(run.metrics or {})
    run.metrics_history = [
        jsonable_metrics(r) if isinstance(r, dict) else jsonable(r)
        for r in (run.metrics_history or [])
    ]
    run.config = jsonable(run.config)
    # A savepoint: a failed save inside an outer transaction leaves it usable for the
    # failure record below (PostgreSQL aborts the whole transaction otherwise).
    with transaction.atomic():
        run.save(update_fields=fields)


def _mark_failed(run: TrainingRun, exc: BaseException, trace: str) -> None:
    """Record the failure; if the full save fails too, at least status, error and time."""
    run.status = TrainingRun.Status.FAILED
    if isinstance(exc, KeyboardInterrupt):
        run.error = (
            "interrupted (Ctrl-C or SIGTERM). Run the same command again to resume from its "
            "last checkpoint."
        )
    else:
        run.error = f"{type(exc).__name__}: {exc}"[:10_000]
    run.log = (run.log + trace.rstrip() + "\n")[-100_000:]
    run.finished_at = timezone.now()
    try:
        _save(run)
    except Exception as save_error:  # e.g. the database refused the metrics: keep the verdict
        with transaction.atomic():
            TrainingRun.objects.filter(pk=run.pk).update(
                status=run.status,
                error=f"{run.error} (and saving the run failed: {type(save_error).__name__}: "
                f"{save_error})"[:10_000],
                finished_at=run.finished_at,
            )


@contextlib.contextmanager
def training_run(
    *,
    kind: str,
    config,
    input_models: list[ModelVersion] = (),
    output_dir: str = "",
) -> Iterator[RunRecorder]:
    """Record a run: RUNNING on entry, SUCCEEDED or FAILED (with the error) on exit.

    Any exception, in the training code or in saving the run, marks the run FAILED with its
    error and is re-raised after the failure is saved, so callers still see it. Runs of
    killed processes are marked interrupted first; a run whose process still writes the same
    `output_dir` refuses this one (ValueError): two runs in one folder corrupt each other.
    """
    runs_mark_interrupted()
    refuse_busy_output(output_dir)
    run = TrainingRun.objects.create(
        kind=kind,
        status=TrainingRun.Status.RUNNING,
        config=jsonable(config),
        output_dir=folder_path(output_dir),
        started_at=timezone.now(),
        process=this_process(),
    )
    if input_models:
        run.input_models.set([m for m in input_models if m is not None])
    recorder = RunRecorder(run)
    try:
        with _sigterm_as_interrupt():
            yield recorder
        run.status = TrainingRun.Status.SUCCEEDED
        run.finished_at = timezone.now()
        _save(run)  # inside the try: a run whose final save fails is failed, not "running"
    except BaseException as exc:
        _mark_failed(run, exc, traceback.format_exc())
        raise


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler's stop, `kill`) raises KeyboardInterrupt while a run records, so
    the run is marked interrupted on the way out instead of ending "running"."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt("SIGTERM")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def folder_path(output_dir: str | Path) -> str:
    """How a run's output folder is stored: absolute, so `out`, `./out` and `/abs/out` are one
    folder and the same `out` typed from another directory is another. "" for none."""
    return str(Path(str(output_dir)).expanduser().resolve()) if str(output_dir) else ""


def _runs_writing(output_dir: str | Path):
    return TrainingRun.objects.filter(
        status=TrainingRun.Status.RUNNING,
        output_dir__in={str(output_dir), folder_path(output_dir)},
    )


def refuse_busy_output(output_dir: str | Path) -> None:
    """ValueError when a live run of this host is writing `output_dir`: two runs in one
    folder corrupt each other. Commands call it before any work, `training_run` again."""
    if not str(output_dir):
        return
    writing = next((r for r in _runs_writing(output_dir) if is_alive(r.process)), None)
    if writing is not None:
        raise ValueError(
            f"{output_dir} is being written by {writing.kind} run {writing.pk} "
            f"({describe(writing.process)}): wait for it to finish, or choose another output"
        )


def runs_mark_interrupted() -> int:
    """Mark RUNNING runs whose process on this host is gone (killed, or the machine
    restarted) as FAILED, interrupted; returns how many. Runs of other hosts stay as they
    are: nothing here can tell whether their process lives."""
    marked = 0
    running = TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING).exclude(process="")
    for pk, process in running.values_list("pk", "process"):
        if is_alive(process) is False:
            marked += TrainingRun.objects.filter(pk=pk, status=TrainingRun.Status.RUNNING).update(
                status=TrainingRun.Status.FAILED,
                finished_at=timezone.now(),
                error=f"interrupted: its process ({describe(process)}) ended without finishing "
                "the run (killed, or the machine restarted). Run the same command again to "
                "resume from its last checkpoint.",
            )
    return marked


def model_path(path: str | Path) -> str:
    """How a model's location is stored: a local file or folder as its absolute path (the
    same folder given as `./var/m`, `var/m` or `/abs/var/m` is one model, and the path still
    works from another working directory); anything else (a hub id, a `module:function`)
    as given."""
    text = str(path)
    local = Path(text).expanduser()
    if local.exists():
        return str(local.resolve())
    return text


def _versions_at(path: str | Path, kind):
    """Versions registered for this model, under its stored path or as it was typed."""
    return ModelVersion.objects.filter(path__in={model_path(path), str(path)}, kind=kind)


def model_version_register(
    *,
    path: str,
    kind: str = ModelVersion.Kind.POLICY,
    name: str | None = None,
    parent: ModelVersion | None = None,
    produced_by: TrainingRun | None = None,
    metadata: dict | None = None,
) -> ModelVersion:
    """Find the version registered for `path` (and kind), or register it.

    A version produced by a run is always new: a run that overwrote an old output folder
    made a different model, and lineage must say so.
    """
    existing = _versions_at(path, kind).order_by("-id").first()
    if produced_by is None and existing is not None and name in (None, existing.name):
        return existing
    if produced_by is not None and (fingerprint := folder_fingerprint(path)) is not None:
        metadata = {**(metadata or {}), "fingerprint": fingerprint}  # see `finished_run`
    version = ModelVersion.objects.create(
        name=name or _unique_name(str(path)),
        path=model_path(path),
        kind=kind,
        parent=parent,
        produced_by=produced_by,
        metadata=metadata or {},
    )
    if produced_by is not None:
        produced_by.output_model = version
        produced_by.save(update_fields=["output_model"])
    return version


def folder_fingerprint(path: str | Path) -> str | None:
    """sha256 over the name, size and modification time of a local folder's top-level files:
    whether the folder changed, without reading a file. None when `path` is no folder."""
    folder = Path(str(path)).expanduser()
    if not folder.is_dir():
        return None
    digest = hashlib.sha256()
    for file in sorted(folder.iterdir()):
        if file.is_file():
            stat = file.stat()
            digest.update(f"{file.name} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _unchanged_since(path: str | Path, when) -> bool:
    """No top-level file of a local folder (or the file itself) changed after `when`; a hub
    id or a `module:function` counts as unchanged."""
    local = Path(str(path)).expanduser()
    files = [f for f in local.iterdir() if f.is_file()] if local.is_dir() else [local]
    limit = when.timestamp()
    return all(f.stat().st_mtime <= limit for f in files if f.exists())


# Keys of a run's config that say where its inputs were read from, and how the user typed
# them (`given`). What they held is in the config too, by content (`data_sha256`,
# `prompts_sha256`), so one export given by id, by folder or by file is one run.
RUN_SOURCES = ("export", "data", "prompts", "given")
# Keys that name a model, compared as `model_path` stores it: `./m`, `m` and `/abs/m` are one
# model (runs recorded before commands stored them resolved hold them as typed).
RUN_MODELS = ("base_model", "policy", "reward", "judge")


def run_identity(config: dict) -> dict:
    """What a run's config says it trained, for `finished_run`: every setting, the data by its
    sha256 and each model by its `model_path`; not `resume`, nor where the data was read."""
    identity = {k: v for k, v in config.items() if k not in ("resume", *RUN_SOURCES)}
    for key in RUN_MODELS:
        if isinstance(identity.get(key), str):
            identity[key] = model_path(identity[key])
    if isinstance(identity.get("data_modified"), list):  # --allow-modified's files, likewise
        identity["data_modified"] = [
            {**m, "file": model_path(m["file"])} if isinstance(m, dict) and "file" in m else m
            for m in identity["data_modified"]
        ]
    return identity


def finished_run(
    *, kind: str, output_dir: str | Path, config, inputs: list[str | Path] = ()
) -> TrainingRun | None:
    """The run that already made `output_dir` from these inputs and settings (its
    `run_identity` is this config's), when nothing changed since: its model is still in the
    folder as it left it, and no input folder or file (in `inputs`) was modified after it
    finished. Running the same command again then has
    nothing to do; without this it retrained over its own output and registered a second
    version of it."""
    # As it reads back from the database.
    identity = run_identity(json.loads(json.dumps(jsonable(config))))
    folder = folder_path(output_dir)
    runs = TrainingRun.objects.filter(
        kind=kind,
        status=TrainingRun.Status.SUCCEEDED,
        output_dir__in={str(output_dir), folder},
        output_model__isnull=False,
    ).select_related("output_model")
    run = runs.order_by("-id").first()
    if run is None or run.finished_at is None or model_path(run.output_model.path) != folder:
        return None  # (a folder stored as typed, from another directory, is another folder)
    if run_identity(run.config) != identity:
        return None
    fingerprint = run.output_model.metadata.get("fingerprint")
    if fingerprint is None or fingerprint != folder_fingerprint(folder):
        return None
    if not all(_unchanged_since(path, run.finished_at) for path in inputs):
        return None
    return run


def check_model_version_name(name: str | None, *, path: str | None = None, kind=None) -> None:
    """Refuse a `--name` another model version holds (names are unique), before any work.

    With `path` and `kind` (a model registered as it is, not trained), naming the version
    already registered for that model by its own name again is fine. A run's output is
    always a new version, so for it any taken name is refused. Raises ValueError.
    """
    if not name:
        return
    holder = ModelVersion.objects.filter(name=name).first()
    if holder is None:
        return
    if path is not None:
        latest = _versions_at(path, kind).order_by("-id").first()
        if latest == holder:
            return
    raise ValueError(
        f"--name {name!r} is taken by model version {holder.pk} ({holder.kind}, "
        f"{holder.path}): choose another name, or leave --name out for one from the folder"
    )


def _unique_name(path: str) -> str:
    base = path.rstrip("/").split("/")[-1] or "model"
    name, n = base, 1
    while ModelVersion.objects.filter(name=name).exists():
        n += 1
        name = f"{base}-{n}"
    return name
