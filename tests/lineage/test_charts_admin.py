"""The TrainingRun admin page shows status, config, lineage and metric charts."""

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from lineage.charts import chart_keys, metrics_charts_svg, numeric_series
from lineage.models import ModelVersion, TrainingRun


def test_numeric_series_skips_non_numbers_and_uses_step():
    history = [
        {"step": 1, "loss": 2.0},
        {"step": 2, "loss": "nan?"},
        {"step": 3, "loss": 1.0, "ok": True},
    ]
    assert numeric_series(history, "loss") == [(1.0, 2.0), (3.0, 1.0)]
    assert chart_keys(history) == [
        "loss"
    ]  # numeric in two rows; `step` and booleans are not charted
    assert chart_keys(history[:1]) == []


def test_metric_names_are_escaped_in_svg():
    svg = metrics_charts_svg([{"<b>x</b>": 1.0}, {"<b>x</b>": 2.0}])
    assert "<b>" not in svg and "&lt;b&gt;x&lt;/b&gt;" in svg and "<polyline" in svg


@pytest.mark.django_db
def test_run_page_renders_charts_and_lineage(client):
    admin = get_user_model().objects.create_superuser("root", "r@example.com", "pw-root-123")
    base = ModelVersion.objects.create(name="base", path="/m/base")
    run = TrainingRun.objects.create(
        kind="ppo",
        status="succeeded",
        config={"lr": 1e-5},
        metrics_history=[{"step": i, "kl": 0.1 * i, "score": i * i} for i in range(5)],
        metrics={"kl": 0.4},
    )
    child = ModelVersion.objects.create(name="child", path="/m/child", parent=base, produced_by=run)
    run.output_model = child
    run.save()
    client.force_login(admin)
    page = client.get(reverse("admin:lineage_trainingrun_change", args=[run.pk])).content.decode()
    assert page.count("<polyline") == 2 and "child ← base" in page and "kl=0.4" in page


@pytest.mark.django_db
def test_run_pages_show_the_project_and_input_export(client, project):
    from annotation.models import Export
    from annotation.services.runs import run_source_record

    admin = get_user_model().objects.create_superuser("root", "r@example.com", "pw-root-123")
    export = Export.objects.create(project=project, path="/e", sha256="0" * 64)
    run = TrainingRun.objects.create(kind="reward", status="succeeded")
    run_source_record(run=run, project=project, export=export)
    bare = TrainingRun.objects.create(kind="sft", status="succeeded")
    client.force_login(admin)
    page = client.get(reverse("admin:lineage_trainingrun_change", args=[run.pk])).content.decode()
    assert reverse("admin:annotation_export_change", args=[export.pk]) in page
    assert reverse("admin:annotation_project_change", args=[project.pk]) in page
    bare_page = client.get(reverse("admin:lineage_trainingrun_change", args=[bare.pk]))
    assert bare_page.status_code == 200
    listing = client.get(
        reverse("admin:lineage_trainingrun_changelist"), {"source__project__id__exact": project.pk}
    ).content.decode()
    assert f"{run}" in listing and f"{bare}" not in listing
