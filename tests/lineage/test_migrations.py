"""Handing ModelVersion and TrainingRun to `lineage` keeps every row and link of a database.

Each test migrates the test database back to the schema before the move (annotation 0006,
training 0001), writes rows with the models of that time, migrates and checks them. The
fixture leaves the database at the latest migrations, whatever the test did.
"""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("annotation", "0006_cache_table"), ("training", "0001_initial")]

pytestmark = pytest.mark.django_db(transaction=True)


def _migrate(targets=None):
    """Migrate to `targets` (default: the latest); the models as of there."""
    executor = MigrationExecutor(connection)
    targets = targets or executor.loader.graph.leaf_nodes()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.fixture
def old_rows():
    """Rows written with the pre-move models: a project, an export, runs and versions."""
    apps = _migrate(BEFORE)
    try:
        yield _write_old_rows(apps)
    finally:
        _migrate()


def _write_old_rows(apps):
    project = apps.get_model("annotation", "Project").objects.create(slug="p", name="P")
    export = apps.get_model("annotation", "Export").objects.create(
        project=project, path="/exports/1", sha256="0" * 64
    )
    user = apps.get_model("auth", "User").objects.create(username="trainer")
    ModelVersion = apps.get_model("training", "ModelVersion")
    TrainingRun = apps.get_model("training", "TrainingRun")
    base = ModelVersion.objects.create(name="base", path="/m/base")
    run = TrainingRun.objects.create(
        kind="reward",
        status="succeeded",
        project=project,
        input_export=export,
        config={"lr": 1e-5},
        metrics_history=[{"step": 0, "loss": 0.7}],
        created_by=user,
    )
    run.input_models.set([base])
    reward = ModelVersion.objects.create(
        name="rm", path="/m/rm", kind="reward", parent=base, produced_by=run
    )
    run.output_model = reward
    run.save()
    ppo = TrainingRun.objects.create(kind="ppo", project=project)
    bare = TrainingRun.objects.create(kind="sft")
    prompt = apps.get_model("annotation", "Prompt").objects.create(
        project=project, messages=[{"role": "user", "content": "hi"}], content_hash="h"
    )
    candidate = apps.get_model("annotation", "Candidate").objects.create(
        prompt=prompt, text="hello", text_hash="t", model_version=base
    )
    run_type = apps.get_model("contenttypes", "ContentType").objects.get(
        app_label="training", model="trainingrun"
    )
    return {
        "project": project.pk,
        "export": export.pk,
        "user": user.pk,
        "base": base.pk,
        "reward": reward.pk,
        "run": run.pk,
        "ppo": ppo.pk,
        "bare": bare.pk,
        "candidate": candidate.pk,
        "run_type": run_type.pk,
    }


def test_migrating_forward_keeps_rows_and_links(old_rows):
    _migrate()
    from django.contrib.contenttypes.models import ContentType

    from annotation.models import Candidate, RunSource
    from lineage.models import ModelVersion, TrainingRun

    ids = old_rows
    run = TrainingRun.objects.get(pk=ids["run"])
    assert (run.kind, run.status, run.config) == ("reward", "succeeded", {"lr": 1e-5})
    assert run.metrics_history == [{"step": 0, "loss": 0.7}]
    assert run.created_by_id == ids["user"] and run.output_model_id == ids["reward"]
    assert list(run.input_models.values_list("pk", flat=True)) == [ids["base"]]
    assert (run.source.project_id, run.source.export_id) == (ids["project"], ids["export"])
    ppo = TrainingRun.objects.get(pk=ids["ppo"])
    assert (ppo.source.project_id, ppo.source.export_id) == (ids["project"], None)
    assert not RunSource.objects.filter(run_id=ids["bare"]).exists()

    reward = ModelVersion.objects.get(pk=ids["reward"])
    assert reward.produced_by_id == ids["run"] and reward.parent_id == ids["base"]
    assert [v.name for v in reward.lineage()] == ["rm", "base"]
    assert Candidate.objects.get(pk=ids["candidate"]).model_version_id == ids["base"]
    # Permissions hang on the content type: it moved, it was not recreated.
    ContentType.objects.clear_cache()
    assert ContentType.objects.get_for_model(TrainingRun).pk == ids["run_type"]

    # The renamed tables keep counting ids from where they were.
    new_run = TrainingRun.objects.create(kind="ppo")
    new_version = ModelVersion.objects.create(name="new", path="/m/new", produced_by=new_run)
    assert new_run.pk > ids["bare"] and new_version.pk > ids["reward"]


def test_migrating_back_restores_the_run_columns(old_rows):
    _migrate()
    apps = _migrate(BEFORE)
    TrainingRun = apps.get_model("training", "TrainingRun")
    ids = old_rows
    assert TrainingRun.objects.get(pk=ids["run"]).project_id == ids["project"]
    assert TrainingRun.objects.get(pk=ids["run"]).input_export_id == ids["export"]
    assert TrainingRun.objects.get(pk=ids["ppo"]).project_id == ids["project"]
    assert TrainingRun.objects.get(pk=ids["bare"]).project_id is None
    candidate = apps.get_model("annotation", "Candidate").objects.get(pk=ids["candidate"])
    assert candidate.model_version_id == ids["base"]
