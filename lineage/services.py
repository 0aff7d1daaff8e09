"""Writes of lineage: record a training run around the training code, register model versions.

The training code stays Django-free: commands wrap it in `training_run` and hand it the
recorder's `log`. A run's project and export are linked by `annotation.services.runs`.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator
from dataclasses import asdict, is_dataclass

from django.utils import timezone

from lineage.models import ModelVersion, TrainingRun


def jsonable(value):
    """Config dataclasses and paths as plain JSON values."""
    if is_dataclass(value):
        value = asdict(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class RunRecorder:
    """Handle given to the training code: `log(metrics)` appends to the run's history."""

    def __init__(self, run: TrainingRun, flush_every: int = 10):
        self.run = run
        self.flush_every = flush_every
        self._pending = 0

    def log(self, metrics: dict) -> None:
        self.run.metrics_history.append(jsonable(metrics))
        self._pending += 1
        if self._pending >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        self.run.save(update_fields=["metrics_history"])
        self._pending = 0

    def append_log(self, line: str) -> None:
        self.run.log = (self.run.log + line.rstrip() + "\n")[-100_000:]


@contextlib.contextmanager
def training_run(
    *,
    kind: str,
    config,
    input_models: list[ModelVersion] = (),
    output_dir: str = "",
) -> Iterator[RunRecorder]:
    """Record a run: RUNNING on entry, SUCCEEDED or FAILED (with the error) on exit.

    The exception is re-raised after the failure is saved, so callers still see it.
    """
    run = TrainingRun.objects.create(
        kind=kind,
        status=TrainingRun.Status.RUNNING,
        config=jsonable(config),
        output_dir=str(output_dir),
        started_at=timezone.now(),
    )
    if input_models:
        run.input_models.set([m for m in input_models if m is not None])
    recorder = RunRecorder(run)
    try:
        yield recorder
    except BaseException as exc:
        run.status = TrainingRun.Status.FAILED
        run.error = f"{type(exc).__name__}: {exc}"
        recorder.append_log(traceback.format_exc())
        run.finished_at = timezone.now()
        run.save()
        raise
    run.status = TrainingRun.Status.SUCCEEDED
    run.finished_at = timezone.now()
    run.save()


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
    existing = ModelVersion.objects.filter(path=str(path), kind=kind).order_by("-id").first()
    if produced_by is None and existing is not None and name in (None, existing.name):
        return existing
    version = ModelVersion.objects.create(
        name=name or _unique_name(str(path)),
        path=str(path),
        kind=kind,
        parent=parent,
        produced_by=produced_by,
        metadata=metadata or {},
    )
    if produced_by is not None:
        produced_by.output_model = version
        produced_by.save(update_fields=["output_model"])
    return version


def _unique_name(path: str) -> str:
    base = path.rstrip("/").split("/")[-1] or "model"
    name, n = base, 1
    while ModelVersion.objects.filter(name=name).exists():
        n += 1
        name = f"{base}-{n}"
    return name
