"""A training run's link to labeling: one source row per run, exports it read are kept."""

import pytest
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError

from annotation.models import Export, RunSource
from annotation.services.runs import run_source_record
from lineage.models import TrainingRun

pytestmark = pytest.mark.django_db


def test_a_run_that_read_nothing_gets_no_row():
    run = TrainingRun.objects.create(kind="sft")
    assert run_source_record(run=run) is None and not RunSource.objects.exists()


def test_one_source_per_run(project):
    run = TrainingRun.objects.create(kind="ppo")
    run_source_record(run=run, project=project)
    with pytest.raises(IntegrityError), transaction.atomic():
        RunSource.objects.create(run=run, project=project)
    assert TrainingRun.objects.filter(source__project=project).get() == run


def test_an_export_a_run_read_cannot_be_deleted(project):
    export = Export.objects.create(project=project, path="/e", sha256="0" * 64)
    run = TrainingRun.objects.create(kind="reward")
    run_source_record(run=run, project=project, export=export)
    with pytest.raises(ProtectedError):
        export.delete()
    run.delete()
    assert not RunSource.objects.exists() and Export.objects.filter(pk=export.pk).exists()
