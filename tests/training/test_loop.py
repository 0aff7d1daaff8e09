"""One small round of the whole loop: labels → reward model → PPO, with lineage recorded."""

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

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
        "--ptx-coef",
        "1",
        "--eval-samples",
        "2",
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
    printed = capsys.readouterr().out
    assert "gold_after" in printed and "leaderboard" in printed and "round  rm acc" in printed

    # The ceiling beside the score, on the report and on the reward-model run.
    assert reward_run.metrics["labeler_agreement"] == report["labeler_agreement"]
    assert 0.5 < report["labeler_agreement"] <= 1
    assert report["rm_best_epoch"] == reward_run.metrics["best_epoch"] >= 1
    # The epoch was picked on training prompts held out, not on the test pairs it reports.
    assert report["rm_selection_split"] == reward_run.metrics["selection_split"] == "validation"
    assert reward_run.metrics["validation_pairs"] > 0
    # Intervals bracket their figure; the KL on held-out prompts is reported.
    low, high = report["gold_ci"]
    assert low <= report["gold_after"] - report["gold_before"] <= high
    low, high = report["win_rate_ci"]
    assert low <= report["win_rate_vs_start"] <= high
    assert isinstance(report["kl_heldout"], float)
    # Gold is the mean over 2 seeded answers per held-out prompt (seeds 0 and 1).
    from training.demo_world.judge import judge
    from training.demo_world.prompts import load_prompts
    from training.evaluation import sample_answer_sets

    held_out = [r["text"] for r in load_prompts()[48:64]]
    sets = sample_answer_sets(
        report["policy_before"], held_out, samples=2, max_new_tokens=40, seed=0
    )
    scores = [s for answers in sets for s in judge(held_out, answers)]
    assert report["gold_before"] == pytest.approx(sum(scores) / len(scores))
    assert set(report["overoptimization"]) >= {"flagged", "gold_peak_step"}
    # 4 PPO steps, evals every 10: the last step is the one eval step, so it is best_gold.
    assert report["best_gold_step"] == ppo_run.metrics["best_gold_step"] == 4
    assert report["best_gold_path"] == str(out / "policy" / "best_gold")
    assert (out / "policy" / "best_gold" / "best_gold.json").is_file()
    assert 0 <= report["near_duplicate_share"] <= 1
    # PPO-ptx on the demo policy's own corpus, logged by PPO every step.
    assert report["ptx_data"] == str(out / "ptx.jsonl")
    assert all(row["ptx_loss"] > 0 for row in history)
    for key in ("gold_ci", "labeler_agreement", "kl_heldout", "overoptimization", "best_gold_step"):
        assert key in report["definitions"]
    # The verification round: one start and one new answer per held-out prompt.
    models = {row["model"]: row for row in report["leaderboard"]}
    assert set(models) == {policy.parent.name, policy.name}
    assert models[policy.name]["win_rate"] == pytest.approx(report["labeler_win_rate"])
    assert models[policy.name]["comparisons"] == report["labeler_comparisons"] <= 16


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


@pytest.mark.parametrize(
    ("args", "threads"), [([], 1), (["--threads", "3"], 3), (["--threads", "0"], 0)]
)
def test_the_loop_runs_on_its_thread_count_and_gives_the_setting_back(
    monkeypatch, tmp_path, args, threads
):
    """A run's figures depend on torch's thread count (float sums in another order): the loop
    fixes it for the run (default 1; 0 keeps torch's own) and restores it afterwards."""
    import torch

    seen = {}

    def fake_run(*, config, **kwargs):
        seen["threads"] = torch.get_num_threads()
        return {}

    monkeypatch.setattr("training.loop._loop_run", fake_run)
    torch.set_num_threads(2)
    try:
        call_command("loop", "--out", str(tmp_path), *args, stdout=io.StringIO())
        assert seen["threads"] == (threads or 2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


def test_loop_rejects_a_negative_thread_count(monkeypatch, tmp_path):
    from django.core.management.base import CommandError

    monkeypatch.setattr("training.loop.loop_run", lambda **kw: pytest.fail("must not start"))
    with pytest.raises(CommandError, match="threads must be 0 or more, got -1"):
        call_command("loop", "--out", str(tmp_path), "--threads", "-1", stdout=io.StringIO())


@pytest.mark.parametrize(("args", "samples"), [([], 8), (["--eval-samples", "3"], 3)])
def test_loop_command_passes_the_eval_samples(monkeypatch, tmp_path, args, samples):
    seen = {}
    monkeypatch.setattr(
        "training.loop.loop_run", lambda *, config, **kw: seen.update(c=config) or {}
    )
    call_command("loop", "--out", str(tmp_path), *args, stdout=io.StringIO())
    assert seen["c"].eval_samples == samples


def test_loop_rejects_no_eval_samples(monkeypatch, tmp_path):
    monkeypatch.setattr("training.loop.loop_run", lambda **kw: pytest.fail("must not start"))
    with pytest.raises(CommandError, match="eval_samples must be at least 1, got 0"):
        call_command("loop", "--out", str(tmp_path), "--eval-samples", "0", stdout=io.StringIO())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--num-prompts", "16", "--ppo-episodes", "16"],
            r"--ppo-episodes \(16\) must be at least --ppo-batch-size \(32\)",
        ),
        (["--ppo-batch-size", "30"], r"--ppo-batch-size \(30\) must be divisible by"),
        (["--num-prompts", "8"], r"--num-prompts 8 is too few for PPO, which holds 8 of them"),
        (["--ppo-lr", "0"], r"--ppo-lr must be positive"),
        (["--rm-epochs", "0"], r"--rm-epochs must be > 0"),
        (["--method", "dpo", "--dpo-beta", "0"], r"--dpo-beta must be > 0"),
    ],
)
def test_trainer_settings_that_cannot_train_are_refused_before_anything_is_written(
    monkeypatch, tmp_path, args, message
):
    # They used to stop the loop after the project, labels, export and reward model, with
    # train_ppo's names for them (batch_size), and export/ and reward-model/ left in --out.
    monkeypatch.setattr("training.loop._loop_run", lambda **kw: pytest.fail("must not start"))
    out = tmp_path / "loop"
    with pytest.raises(CommandError, match=message):
        call_command("loop", "--out", str(out), *args, stdout=io.StringIO())
    assert not out.exists()
    # An earlier run stays as it was, --overwrite or not.
    _earlier_run(out)
    with pytest.raises(CommandError, match=message):
        call_command("loop", "--out", str(out), *args, "--overwrite", stdout=io.StringIO())
    assert (out / "export" / "pairs.jsonl").is_file() and (out / "report.json").is_file()


def test_the_loop_hands_its_trainers_the_settings_it_checked():
    from training.loop import LoopConfig, as_flags, ppo_settings, rm_settings

    config = LoopConfig(ppo_episodes=64, ppo_batch_size=16, ptx_coef=0.5)
    assert as_flags(ppo_settings(config, seed=3, ptx_data="p.jsonl")) == [
        "--total-episodes", "64", "--batch-size", "16", "--lr", "5e-05",
        "--response-length", "40", "--kl-coef", "0.1", "--seed", "3",
        "--ptx-data", "p.jsonl", "--ptx-coef", "0.5",
    ]  # fmt: skip
    assert as_flags(rm_settings(config, seed=3, epochs=2.0, lr=1e-4)) == [
        "--epochs", "2.0", "--lr", "0.0001", "--batch-size", "16",
        "--early-stopping-patience", "2", "--seed", "3",
    ]  # fmt: skip


def _earlier_run(out):
    (out / "export").mkdir(parents=True)
    (out / "export" / "pairs.jsonl").write_text("{}\n")
    (out / "round-2" / "policy").mkdir(parents=True)
    (out / "report.json").write_text("{}")
    (out / "prompts.jsonl").write_text('{"text": "mine"}\n')
    (out / "notes.txt").write_text("not the loop's")


def test_an_earlier_run_in_out_is_refused_untouched_or_replaced_with_overwrite(
    monkeypatch, tmp_path
):
    """`make loop` twice used to die in the export with a traceback ("pairs.jsonl already
    exists"), minutes in; now the loop refuses at once, or replaces the earlier run's files."""
    out = tmp_path / "loop"
    _earlier_run(out)
    monkeypatch.setattr("training.loop._loop_run", lambda **kw: pytest.fail("must not start"))
    with pytest.raises(
        CommandError, match=r"holds an earlier loop run \(report.json, .*--overwrite"
    ):
        call_command("loop", "--out", str(out), stdout=io.StringIO())
    assert (out / "export" / "pairs.jsonl").is_file() and (out / "round-2").is_dir()

    started = {}
    monkeypatch.setattr("training.loop._loop_run", lambda **kw: started.update(kw) or {})
    prompts = out / "prompts.jsonl"  # an input inside the folder stays
    call_command(
        "loop", "--out", str(out), "--prompts", str(prompts), "--overwrite", stdout=io.StringIO()
    )
    assert started["out_dir"] == out
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "prompts.jsonl"]
    # Nothing earlier is left: it runs; without --prompts the prompts file is the loop's own.
    call_command("loop", "--out", str(out), "--prompts", str(prompts), stdout=io.StringIO())
    with pytest.raises(CommandError, match=r"earlier loop run \(prompts.jsonl\)"):
        call_command("loop", "--out", str(out), stdout=io.StringIO())

    # The earlier run's policy as the next start policy: one round writes its new policy
    # there, so it is refused before anything is deleted (PPO trained over its own start
    # policy); with two rounds (round-N/policy) it is kept. One inside it is refused.
    (out / "policy" / "best_gold").mkdir(parents=True)
    args = ["loop", "--out", str(out), "--prompts", str(prompts), "--overwrite"]
    with pytest.raises(CommandError, match=r"policy is where this run writes its policy: copy"):
        call_command(*args, "--policy", str(out / "policy"), stdout=io.StringIO())
    with pytest.raises(CommandError, match=r"best_gold is where this run writes its policy"):
        call_command(*args, "--policy", str(out / "policy" / "best_gold"), stdout=io.StringIO())
    assert (out / "policy" / "best_gold").is_dir() and (out / "prompts.jsonl").is_file()
    call_command(*args, "--rounds", "2", "--policy", str(out / "policy"), stdout=io.StringIO())
    assert (out / "policy" / "best_gold").is_dir()
    with pytest.raises(CommandError, match=r"best_gold is inside .*policy, which replacing"):
        call_command(
            *args, "--rounds", "2", "--policy", str(out / "policy" / "best_gold"),
            stdout=io.StringIO(),
        )  # fmt: skip
    assert (out / "policy" / "best_gold").is_dir()
    call_command("loop", "--out", str(tmp_path / "new"), stdout=io.StringIO())


def test_a_step_the_services_refuse_is_a_command_error_not_a_traceback(monkeypatch, tmp_path):
    from annotation.errors import ServiceValidationError

    def refused(**kwargs):
        raise ServiceValidationError("export folder is not empty\nmore detail")

    monkeypatch.setattr("training.loop._loop_run", refused)
    with pytest.raises(CommandError, match=r"^export folder is not empty$"):
        call_command("loop", "--out", str(tmp_path / "loop"), stdout=io.StringIO())


def test_ptx_data_is_the_demo_corpus_given_data_or_none(tmp_path):
    from training.loop import LoopConfig, resolve_ptx_data

    assert resolve_ptx_data(LoopConfig(), tmp_path, demo_policy=True) is None  # off by default
    on = LoopConfig(ptx_coef=1.0)
    demo = resolve_ptx_data(on, tmp_path, demo_policy=True)
    assert demo == tmp_path / "ptx.jsonl"
    rows = [json.loads(line) for line in demo.read_text().splitlines()]
    assert len(rows) == 4000 and set(rows[0]) == {"prompt", "response"}  # the build's corpus
    assert resolve_ptx_data(on, tmp_path, demo_policy=False) is None  # --policy: no corpus
    given = tmp_path / "mine.jsonl"
    given.write_text('{"text": "hello"}\n')
    mine = LoopConfig(ptx_coef=1.0, ptx_data=str(given))
    assert resolve_ptx_data(mine, tmp_path, demo_policy=False) == given
    for off in (LoopConfig(ptx_data=str(given)), LoopConfig(ptx_coef=1.0, method="dpo")):
        assert resolve_ptx_data(off, tmp_path, demo_policy=True) is None
    with pytest.raises(ValueError, match="--ptx-data .*missing.jsonl is not a file"):
        resolve_ptx_data(
            LoopConfig(ptx_coef=1.0, ptx_data=str(tmp_path / "missing.jsonl")),
            tmp_path,
            demo_policy=True,
        )


def test_loop_command_passes_the_ptx_options(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(
        "training.loop.loop_run", lambda *, config, **kw: seen.update(c=config) or {}
    )
    call_command(
        "loop",
        "--out",
        str(tmp_path),
        "--ptx-coef",
        "0.5",
        "--ptx-data",
        "p.jsonl",
        stdout=io.StringIO(),
    )
    assert (seen["c"].ptx_coef, seen["c"].ptx_data) == (0.5, "p.jsonl")
    with pytest.raises(CommandError, match="ptx_coef must be 0 or more"):
        call_command("loop", "--out", str(tmp_path), "--ptx-coef", "-1", stdout=io.StringIO())


def _second_world_args(tmp_path):
    from tests.training.second_world import write_prompts

    prompts = write_prompts(tmp_path / "world2.jsonl", n=60)
    return [
        "--judge",
        "tests.training.second_world:judge",
        "--prompts",
        str(prompts),
        "--num-prompts",
        "40",
        "--eval-prompts",
        "16",
        "--policy-steps",
        "150",
        "--ppo-episodes",
        "64",
        "--ppo-batch-size",
        "16",
        "--labelers",
        "2",
        "--max-new-tokens",
        "24",
    ]


def test_two_rounds_on_a_second_world(tmp_path, settings, capsys):
    """--rounds 2 on a world with its own prompts and judge: round 2 labels the new policy's
    candidates mixed with the old policy's, retrains the RM on all labels, resumes PPO."""
    import torch

    torch.set_num_threads(2)
    settings.DATA_DIR = tmp_path / "data"
    out = tmp_path / "loop"
    call_command("loop", "--out", str(out), "--rounds", "2", *_second_world_args(tmp_path))
    report = json.loads((out / "report.json").read_text())
    first, second = report["rounds"]
    assert second["pairs"] > first["pairs"]  # the second RM saw all labels so far
    assert second["policy_before"] == first["policy_after"]  # PPO resumed from round 1
    assert report["gold_after"] == second["gold_after"]
    assert first["gold_before"] == second["gold_before"] == report["gold_before"]
    for r in (first, second):
        low, high = r["gold_ci"]
        assert low <= r["gold_after"] - r["gold_before"] <= high
        assert (out / f"round-{r['round']}" / "reward_vs_kl.png").is_file()
    # Round 2 compared the two policies' candidates within the same comparisons.
    from annotation.models import Candidate, Comparison

    round_one = ModelVersion.objects.get(name=first["policy_version"])
    version_of = dict(
        Candidate.objects.filter(prompt__project__slug=report["project"]).values_list(
            "id", "model_version_id"
        )
    )
    groups = [
        {version_of[i] for i in ids}
        for ids in Comparison.objects.filter(project__slug=report["project"]).values_list(
            "candidate_ids", flat=True
        )
    ]
    assert any(round_one.pk in g and len(g) > 1 for g in groups)
    assert first["strategy"] == second["strategy"] == report["config"]["strategy"] == "random"
    assert second["label_budget"] is None  # every comparison labeled, overlap times
    final = ModelVersion.objects.get(name=second["policy_version"])
    assert final.parent == round_one  # lineage: round 2's policy ← round 1's
    assert report["lineage"][:2] == [final.name, round_one.name]
    assert "round  rm acc" in capsys.readouterr().out


def test_min_rm_accuracy_stops_before_ppo(tmp_path, settings):
    import torch
    from django.core.management.base import CommandError

    torch.set_num_threads(2)
    settings.DATA_DIR = tmp_path / "data"
    out = tmp_path / "loop"
    with pytest.raises(CommandError, match="below --min-rm-accuracy 1.01: stopped before PPO"):
        call_command(
            "loop",
            "--out",
            str(out),
            "--min-rm-accuracy",
            "1.01",
            "--rm-epochs",
            "1",
            *_second_world_args(tmp_path),
            stdout=io.StringIO(),
        )
    report = json.loads((out / "report.json").read_text())
    assert "stopped before PPO" in report["stopped_before_ppo"]
    assert not TrainingRun.objects.filter(kind="ppo").exists()
    assert TrainingRun.objects.get(kind="reward").status == "succeeded"
    assert report["rounds"][0]["rm_accuracy_vs_labels"] < 1.01


def test_two_rounds_by_uncertainty_on_a_second_world(tmp_path, settings):
    """--strategy uncertainty: round 1 is random (no reward model yet); round 2 pools 2K
    candidates per prompt, round 1's reward model groups and orders them, and the labelers
    spend a random round's budget on the most uncertain comparisons first."""
    import torch

    from annotation.models import Annotation, Comparison
    from annotation.rules.active import group_uncertainty
    from training.reward.uncertainty import ensemble_scores

    torch.set_num_threads(2)
    settings.DATA_DIR = tmp_path / "data"
    out = tmp_path / "loop"
    printed = io.StringIO()
    call_command(
        "loop",
        "--out",
        str(out),
        "--rounds",
        "2",
        "--strategy",
        "uncertainty",
        *_second_world_args(tmp_path),
        stdout=printed,
    )
    table = printed.getvalue().split("round  rm acc")[1].splitlines()
    assert table[0].rstrip().endswith("built by")
    assert table[1].rstrip().endswith(" random") and table[2].rstrip().endswith(" uncertainty")
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["strategy"] == "uncertainty"
    first, second = report["rounds"]
    k = report["config"]["num_candidates"]
    assert (first["strategy"], first["label_budget"]) == ("random", None)
    assert first["pool_per_prompt"] <= k
    assert second["strategy"] == "uncertainty"
    assert second["pool_per_prompt"] > k  # the new and the previous policy's K each
    assert second["label_budget"] == 40 * report["config"]["overlap"]

    comparisons = Comparison.objects.filter(project__slug=report["project"])
    random_built = comparisons.filter(priority=0)
    by_rm = list(comparisons.filter(priority__gt=0).select_related("prompt").order_by("-priority"))
    assert random_built.count() == first["comparisons_built"]  # one per prompt
    assert len(by_rm) == second["comparisons_built"] > 40  # more than one per prompt
    assert all(0 < c.priority <= 1 for c in by_rm)

    # The priorities follow round 1's reward model: re-score each group, the uncertainty
    # falls along the serving order (one prompt source, so no diversity cap reorders it).
    from annotation.models import Candidate

    texts = dict(
        Candidate.objects.filter(prompt__project__slug=report["project"]).values_list("id", "text")
    )
    rows = [(c, i) for c in by_rm for i in c.candidate_ids]
    scores = ensemble_scores(
        [out / "round-1" / "reward-model"],
        [c.prompt.as_model_input() for c, _ in rows],
        [texts[i] for _, i in rows],
    )
    score_of = {(c.pk, i): s for (c, i), s in zip(rows, scores)}
    uncertainty = [group_uncertainty([score_of[(c.pk, i)] for i in c.candidate_ids]) for c in by_rm]
    assert all(a >= b - 1e-3 for a, b in zip(uncertainty, uncertainty[1:]))
    assert uncertainty[0] > uncertainty[-1]

    # The budget went to the most uncertain comparisons; the rest wait in the queue.
    labeled = [c.priority for c in by_rm if c.submitted_count > 0]
    waiting = [c.priority for c in by_rm if c.submitted_count == 0]
    assert labeled and waiting
    assert sum(labeled) / len(labeled) > sum(waiting) / len(waiting)
    round_two = Annotation.objects.filter(comparison__in=[c.pk for c in by_rm]).count()
    assert round_two <= second["label_budget"]
    assert second["pairs"] > first["pairs"]  # the second RM trained on both rounds' labels


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategy", "entropy"], "unknown strategy 'entropy': use one of random, uncertainty"),
        (["--strategy", "uncertainty"], "--strategy uncertainty needs --rounds 2 or more"),
    ],
)
def test_loop_rejects_a_bad_strategy(monkeypatch, tmp_path, args, message):
    from django.core.management.base import CommandError

    def fail(**kwargs):
        raise AssertionError("the loop must not start")

    monkeypatch.setattr("training.loop.loop_run", fail)
    with pytest.raises(CommandError, match=message):
        call_command("loop", "--out", str(tmp_path / "loop"), *args, stdout=io.StringIO())
    assert not (tmp_path / "loop").exists()
