"""The TrainingRun admin page shows status, config, lineage and metric charts."""

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from training.charts import chart_keys, metrics_charts_svg, numeric_series
from training.models import ModelVersion, TrainingRun


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
    page = client.get(reverse("admin:training_trainingrun_change", args=[run.pk])).content.decode()
    assert page.count("<polyline") == 2 and "child ← base" in page and "kl=0.4" in page
