"""One small round of the whole loop: labels → reward model → PPO, with lineage recorded."""

import io
import json

import pytest
from django.core.management import call_command

from lineage.models import ModelVersion, TrainingRun

pytestmark = [pytest.mark.django_db, pytest.mark.ml, pytest.mark.slow]


def test_small_loop_round(tmp_path, settings, capsys):
    import torch

    torch.set_num_threads(2)
    settings.DATA_DIR = tmp_path / "data"
    out = tmp_path / "loop"
    call_command(
        "loop",
        "--out",
        str(out),
        "--num-prompts",
        "48",
        "--eval-prompts",
        "16",
        "--policy-steps",
        "150",
        "--ppo-episodes",
        "64",
        "--ppo-batch-size",
        "16",
        "--rm-epochs",
        "1",
        "--labelers",
        "2",
        "--noise",
        "0.1",
    )
    report = json.loads((out / "report.json").read_text())
    for key in (
        "rm_accuracy",
        "label_agreement_with_judge",
        "gold_before",
        "gold_after",
        "win_rate_vs_start",
        "kl",
    ):
        assert key in report
    assert report["rm_accuracy"] > 0.6  # the reward model learned the judge's order beyond chance
    assert report["label_agreement_with_judge"] > 0.6
    history = TrainingRun.objects.get(kind="ppo").metrics_history
    first, later = history[0]["score"], max(h["score"] for h in history[1:])
    assert later > first  # PPO raised the reward-model score
    assert report["kl"] >= 0
    assert (out / "reward_vs_kl.png").stat().st_size > 1000

    # Lineage: new policy ← PPO run ← (start policy, reward model ← reward run ← export)
    policy = ModelVersion.objects.get(name=report["policy_version"])
    assert policy.parent.path.endswith("demo-policy")
    ppo_run = policy.produced_by
    reward = ppo_run.input_models.get(kind="reward")
    reward_run = reward.produced_by
    assert reward_run.kind == "reward" and reward_run.status == "succeeded"
    assert reward_run.source.export_id == report["export_id"]
    assert policy.candidates.count() > 0  # the next round's candidates came from the new policy
    assert "gold_after" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "tie_epsilon"), [([], 0.0), (["--tie-epsilon", "0.05"], 0.05), (["--no-ties"], None)]
)
def test_loop_command_passes_the_labelers_tie_setting(monkeypatch, tmp_path, args, tie_epsilon):
    seen = {}

    def fake_loop_run(*, config, **kwargs):
        seen["config"] = config
        return {}

    monkeypatch.setattr("training.loop.loop_run", fake_loop_run)
    call_command("loop", "--out", str(tmp_path), *args, stdout=io.StringIO())
    assert seen["config"].tie_epsilon == tie_epsilon
