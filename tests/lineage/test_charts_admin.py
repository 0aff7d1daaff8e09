"""Run pages: charts chosen per run kind, formatted tables, read-only records, full lineage."""

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.urls import reverse

from lineage.charts import (
    bar_chart_svg,
    line_chart_svg,
    numeric_series,
    reward_vs_kl_svg,
    run_charts_svg,
)
from lineage.models import ModelVersion, TrainingRun

PPO_ROW = {
    "kl_coef": 0.05,
    "lr": 1e-5,
    "score": 0.0,
    "gold_score": 0.1,
    "kl": 0.0,
    "policy_loss": 0.3,
    "value_loss": 1.2,
    "approx_kl": 0.01,
    "clipfrac": 0.1,
    "episodes_per_s": 3.0,
}


def ppo_history(n=4):
    return [
        {**PPO_ROW, "step": i, "score": 0.5 * i, "kl": 0.1 * i, "lr": 1e-5 / (i + 1)}
        for i in range(n)
    ]


def test_numeric_series_skips_non_numbers_and_uses_step():
    history = [
        {"step": 1, "loss": 2.0},
        {"step": 2, "loss": "nan?"},
        {"step": 3, "loss": 1.0, "ok": True},
    ]
    assert numeric_series(history, "loss") == [(1.0, 2.0), (3.0, 1.0)]


def test_ppo_runs_chart_what_says_whether_ppo_worked_not_the_schedule():
    charts = run_charts_svg("ppo", ppo_history())
    titles = [c.split('aria-label="')[1].split('"')[0] for c in charts]
    assert titles == [
        "Reward-model score",
        "Gold (judge) score",
        "KL to the reference",
        "Policy loss",
        "Value loss",
        "Approximate KL (old → new)",
        "Clip fraction",
    ]
    assert not any("kl_coef" in c or ">lr<" in c for c in charts)


def test_reward_runs_chart_held_out_accuracy_and_loss_not_runtime():
    history = [
        {"step": s, "eval_accuracy": a, "eval_loss": 0.7 - a / 2, "eval_runtime": 3.2}
        for s, a in [(10, 0.5), (20, 0.6), (30, 0.7)]
    ]
    charts = run_charts_svg("reward", history)
    assert len(charts) == 2 and "Held-out accuracy" in charts[0] and "Held-out loss" in charts[1]
    assert "runtime" not in "".join(charts)
    assert run_charts_svg("generate", history) == []


def test_a_chart_has_axis_labels_step_range_and_values_on_hover():
    svg = line_chart_svg([(10, 0.5), (20, 0.25), (30, 0.125)], "Loss", y_label="loss")
    assert "step 10–30" in svg and ">loss<" in svg
    assert svg.count("<title>") == 3 and "<title>step 20: loss 0.25</title>" in svg
    assert line_chart_svg([(1, 1.0)], "one point") == ""


def test_chart_labels_are_escaped():
    svg = line_chart_svg([(0, 1.0), (1, 2.0)], "<b>x</b>", y_label="<i>")
    assert "<b>" not in svg and "&lt;b&gt;x&lt;/b&gt;" in svg and "<i>" not in svg
    bars = bar_chart_svg([("<d>", 2)], "t", x_label="day", y_label="n")
    assert "<d>" not in bars and "&lt;d&gt;: 2" in bars


def test_reward_vs_kl_plots_score_against_kl():
    svg = reward_vs_kl_svg(ppo_history())
    assert "Reward vs KL" in svg and "<title>kl (nats) 0.3: RM score 1.5</title>" in svg
    assert reward_vs_kl_svg([{"score": 1.0}]) == ""


@pytest.fixture
def root(client, db):
    admin = get_user_model().objects.create_superuser("root", "r@example.com", "pw-root-123")
    client.force_login(admin)
    return admin


def make_ppo_run():
    base = ModelVersion.objects.create(name="base", path="/m/base")
    run = TrainingRun.objects.create(
        kind="ppo",
        status="succeeded",
        config={"lr": 1.23456789e-5, "kl_coef": 0.05, "lora": False},
        metrics_history=ppo_history(),
        metrics={"kl": 0.123456789, "episodes": 64},
    )
    child = ModelVersion.objects.create(name="child", path="/m/child", parent=base, produced_by=run)
    run.output_model = child
    run.save()
    return run, base, child


@pytest.mark.django_db
def test_run_page_shows_charts_tables_and_lineage_and_is_read_only(client, root):
    run, _, _ = make_ppo_run()
    url = reverse("admin:lineage_trainingrun_change", args=[run.pk])
    page = client.get(url).content.decode()
    assert page.count('class="chart"') == 8  # 7 PPO figures + reward vs KL
    assert "child ← base" in page
    assert '<th scope="row">kl</th><td>0.1235</td>' in page
    assert '<th scope="row">lr</th><td>1.235e-05</td>' in page
    assert "4 rows, steps 0–3" in page
    assert 'name="_save"' not in page and "deletelink" not in page
    response = client.post(url, {"status": "failed", "kind": "sft"})
    assert response.status_code == 403
    assert TrainingRun.objects.get(pk=run.pk).status == "succeeded"
    delete = reverse("admin:lineage_trainingrun_delete", args=[run.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    assert TrainingRun.objects.filter(pk=run.pk).exists()


@pytest.mark.django_db
def test_model_version_path_and_parent_are_read_only(client, root):
    _, base, child = make_ppo_run()
    other = ModelVersion.objects.create(name="other", path="/m/other")
    client.post(
        reverse("admin:lineage_modelversion_change", args=[child.pk]),
        {
            "name": "renamed",
            "path": "/elsewhere",
            "parent": other.pk,
            "kind": "reward",
            "metadata": "{}",
        },
    )
    child.refresh_from_db()
    assert (child.name, child.path, child.parent_id, child.kind) == (
        "renamed",
        "/m/child",
        base.pk,
        "policy",
    )


@pytest.mark.django_db
def test_run_pages_show_the_project_and_input_export(client, root, project):
    from annotation.models import Export
    from annotation.services.runs import run_source_record

    export = Export.objects.create(project=project, path="/e", sha256="0" * 64)
    run = TrainingRun.objects.create(kind="reward", status="succeeded")
    run_source_record(run=run, project=project, export=export)
    bare = TrainingRun.objects.create(kind="sft", status="succeeded")
    page = client.get(reverse("admin:lineage_trainingrun_change", args=[run.pk])).content.decode()
    assert reverse("admin:annotation_export_change", args=[export.pk]) in page
    assert reverse("admin:annotation_project_change", args=[project.pk]) in page
    bare_page = client.get(reverse("admin:lineage_trainingrun_change", args=[bare.pk]))
    assert bare_page.status_code == 200
    listing = client.get(
        reverse("admin:lineage_trainingrun_changelist"), {"source__project__id__exact": project.pk}
    ).content.decode()
    link = reverse("admin:lineage_trainingrun_change", args=[run.pk])
    bare_link = reverse("admin:lineage_trainingrun_change", args=[bare.pk])
    assert f'href="{link}' in listing and f'href="{bare_link}' not in listing


@pytest.mark.django_db
def test_demo_policy_build_run_has_the_version_as_output(tmp_path, monkeypatch):
    """The lineage of demo-policy reaches the run that built it (no step missing)."""
    from training.demo_world import policy

    def fake_build(out, *, config, force, on_metrics):
        out.mkdir(parents=True, exist_ok=True)
        on_metrics({"step": 1, "loss": 2.0})
        return out

    monkeypatch.setattr(policy, "build_demo_policy", fake_build)
    monkeypatch.setattr(policy, "demo_policy_ready", lambda out, config: False)
    call_command("build_demo_policy", "--out", str(tmp_path / "demo-policy"), "--steps", "1")
    run = TrainingRun.objects.get(kind="sft")
    version = ModelVersion.objects.get(path=str(tmp_path / "demo-policy"))
    assert run.output_model == version and version.produced_by == run
    assert run.metrics_history == [{"step": 1, "loss": 2.0}]
    # A rebuild (other steps) made other weights: a new version with its own producer, which
    # the folder's lookup (generate_candidates without --name) now finds.
    call_command("build_demo_policy", "--out", str(tmp_path / "demo-policy"), "--steps", "2")
    rebuilt = TrainingRun.objects.filter(kind="sft").latest("id")
    from lineage.services import model_version_register

    latest = model_version_register(path=str(tmp_path / "demo-policy"))
    assert latest.produced_by == rebuilt and latest != version
    assert ModelVersion.objects.get(pk=version.pk).produced_by == run
