"""`loop --method dpo`: one small round with DPO in place of reward model + PPO."""

import json

import pytest
from django.core.management import CommandError, call_command

from lineage.models import ModelVersion, TrainingRun

pytestmark = [pytest.mark.django_db, pytest.mark.ml, pytest.mark.slow]


def test_small_dpo_loop_round(tmp_path, settings):
    import torch

    torch.set_num_threads(2)
    settings.DATA_DIR = tmp_path / "data"
    out = tmp_path / "loop"
    call_command(
        "loop", "--method", "dpo", "--out", str(out), "--num-prompts", "48",
        "--eval-prompts", "16", "--policy-steps", "150", "--labelers", "2", "--noise", "0.1",
        "--dpo-epochs", "1",
    )  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "dpo" and report["rm_accuracy"] is None
    for key in ("gold_before", "gold_after", "win_rate_vs_start", "dpo_eval_accuracy"):
        assert isinstance(report[key], float)
    assert not TrainingRun.objects.filter(kind__in=["reward", "ppo"]).exists()
    run = TrainingRun.objects.get(kind="dpo")
    assert run.status == "succeeded" and run.source.export_id == report["export_id"]
    policy = ModelVersion.objects.get(name=report["policy_version"])
    assert policy.produced_by == run and policy.parent.path == report["policy_before"]
    # The next round's candidates come from the DPO policy.
    assert policy.candidates.exists()


def test_unknown_method_is_refused():
    with pytest.raises(CommandError, match="invalid choice"):
        call_command("loop", "--method", "rloo")
