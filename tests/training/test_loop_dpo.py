"""`loop --method dpo`: one small round with DPO in place of reward model + PPO."""

import json

import pytest
from django.core.management import CommandError, call_command

from lineage.models import ModelVersion, TrainingRun

pytestmark = [pytest.mark.django_db, pytest.mark.ml]


def test_small_dpo_loop_round(tmp_path, settings):
    """The glue end to end on a briefly trained demo policy (the demo-world figures are in
    README): distinct answers, so the verification round has comparisons to label."""
    import torch

    torch.set_num_threads(2)
    settings.DATA_DIR = tmp_path / "data"
    out = tmp_path / "loop"
    call_command(
        "loop", "--method", "dpo", "--out", str(out), "--policy-steps", "150",
        "--num-prompts", "12", "--eval-prompts", "6", "--max-new-tokens", "16",
        "--labelers", "2", "--dpo-epochs", "1",
    )  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "dpo" and report["rm_accuracy"] is None
    for key in ("gold_before", "gold_after", "win_rate_vs_start"):
        assert isinstance(report[key], float)
    # The same held-out figures as a PPO round: 8 answers per prompt, paired intervals.
    assert report["config"]["eval_samples"] == 8
    low, high = report["gold_ci"]
    assert low <= report["gold_after"] - report["gold_before"] <= high
    low, high = report["win_rate_ci"]
    assert low <= report["win_rate_vs_start"] <= high
    # What SPEC 11 adds to every loop report, DPO's included (they were null here).
    assert 0.0 <= report["labeler_agreement"] <= 1.0
    models = {row["model"]: row for row in report["leaderboard"]}
    new = ModelVersion.objects.get(name=report["policy_version"])
    assert set(models) == {new.parent.name, new.name}
    assert models[new.name]["win_rate"] == pytest.approx(report["labeler_win_rate"])
    assert 0 < report["labeler_comparisons"] <= 6
    assert isinstance(report["kl_heldout"], float)
    assert 0.0 <= report["near_duplicate_share"] <= 1.0
    assert [r["round"] for r in report["rounds"]] == [1]
    assert report["strategy"] == "random" and report["comparisons_built"] == 12
    assert report["rounds"][0]["gold_after"] == report["gold_after"]
    assert not TrainingRun.objects.filter(kind__in=["reward", "ppo"]).exists()
    run = TrainingRun.objects.get(kind="dpo")
    assert run.status == "succeeded" and run.source.export_id == report["export_id"]
    version = ModelVersion.objects.get(name=report["policy_version"])
    assert version.produced_by == run and version.parent.path.endswith("demo-policy")
    # The next round's candidates come from the DPO policy.
    assert version.candidates.exists()


def test_unknown_method_is_refused():
    with pytest.raises(CommandError, match="invalid choice"):
        call_command("loop", "--method", "rloo")
