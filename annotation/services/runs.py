"""Training runs' link to labeling: which project and export a run worked from."""

from __future__ import annotations

from annotation.models import Export, Project, RunSource
from lineage.models import TrainingRun


def run_source_record(
    *, run: TrainingRun, project: Project | None = None, export: Export | None = None
) -> RunSource | None:
    """Record the project and export `run` read; a run that read neither gets no row."""
    if project is None and export is None:
        return None
    return RunSource.objects.create(run=run, project=project, export=export)
