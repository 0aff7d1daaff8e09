"""`loop --method dpo`: one small round with DPO in place of reward model + PPO."""

import json

import pytest
from django.core.management import CommandError, call_command

from lineage.models import ModelVersion, TrainingRun

pytestmark = [pytest.mark.django_db, pytest.mark.ml]


def test_small_dpo_loop_round(tmp_path, settings):
    """The glue end to end on a tiny untrained policy (the demo-world figures are in README)."""
    import torch

    from training.demo_world.prompts import load_prompts
    from training.tiny import build_tiny_causal_lm

    torch.set_num_threads(2)
    settings.DATA_DIR = tmp_path / "data"
    texts = [json.dumps(p) for p in load_prompts()][:200] + ["yes no maybe"]
    policy = build_tiny_causal_lm(tmp_path / "tiny", texts, chat_template=True, vocab_size=400)
    out = tmp_path / "loop"
    call_command(
        "loop", "--method", "dpo", "--out", str(out), "--policy", str(policy),
        "--num-prompts", "12", "--eval-prompts", "4", "--max-new-tokens", "8",
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
    assert not TrainingRun.objects.filter(kind__in=["reward", "ppo"]).exists()
    run = TrainingRun.objects.get(kind="dpo")
    assert run.status == "succeeded" and run.source.export_id == report["export_id"]
    version = ModelVersion.objects.get(name=report["policy_version"])
    assert version.produced_by == run and version.parent.path == str(policy)
    # The next round's candidates come from the DPO policy.
    assert version.candidates.exists()


def test_unknown_method_is_refused():
    with pytest.raises(CommandError, match="invalid choice"):
        call_command("loop", "--method", "rloo")
