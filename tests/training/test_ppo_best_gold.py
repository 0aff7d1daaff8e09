"""best_gold: with a judge and held-out evals, PPO keeps the policy of its best eval step."""

from __future__ import annotations

import hashlib
import json
from io import StringIO
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tests.training.test_ppo_heldout import config as heldout_config  # noqa: E402
from training.ppo import PPOConfig, train_ppo  # noqa: E402

pytestmark = pytest.mark.ml

TEXTS = [f"the cat number {i} sat on the mat and said hello {i % 7}" for i in range(200)]
PROMPTS = [f"the cat {i}" for i in range(12)]

# The scripted judge scores every response GOLD["value"]; each test sets the value per step
# from on_metrics, which runs after a step's eval: so the value set after step s is what
# the judge gives at step s + 1 (training batch and held-out eval alike).
GOLD = {"value": 0.0}


def scripted_gold(prompts, responses):
    return [GOLD["value"]] * len(responses)


def count_a(prompts, responses):
    return [float(r.count("a")) for r in responses]


def count_e(prompts, responses):
    return [float(r.count("e")) for r in responses]


def gold_by_step(values: dict[int, float]):
    """on_metrics that sets the judge's value for the step after each one logged."""

    def on_metrics(row):
        if row["step"] in values:
            GOLD["value"] = values[row["step"]]

    return on_metrics


def config(**overrides) -> PPOConfig:
    """The held-out tests' small PPO run (evals every step), 4 steps long."""
    return heldout_config(**{"total_episodes": 16, **overrides})


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    from training.tiny import build_tiny_causal_lm

    torch.set_num_threads(1)
    return build_tiny_causal_lm(tmp_path_factory.mktemp("best") / "lm", TEXTS, vocab_size=300)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder).state_dict()


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def metrics_rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_best_gold_is_the_policy_of_the_best_eval_step(tiny_lm, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "out"
    # gold: step 0 (baseline) 1, step 1 1, step 2 3, step 3 2, step 4 3 (a tie: not better)
    GOLD["value"] = 1.0
    result = train_ppo(
        tiny_lm,
        count_a,
        PROMPTS,
        out,
        config(save_every=2),
        judge=scripted_gold,
        on_metrics=gold_by_step({1: 3.0, 2: 2.0, 3: 3.0}),
    )
    rows = metrics_rows(out)
    assert [r["eval_gold"] for r in rows] == [1.0, 3.0, 2.0, 3.0]
    first_argmax = max(rows, key=lambda r: r["eval_gold"])["step"]  # max() keeps the first
    assert result.best_gold_step == first_argmax == 2 and result.best_gold == 3.0
    record = json.loads((out / "best_gold" / "best_gold.json").read_text())
    step2 = rows[1]
    assert record == {
        "step": 2,
        "episodes": 8,
        "eval_gold": 3.0,
        "eval_kl": step2["eval_kl"],
        "eval_score": step2["eval_score"],
        "baseline_eval_gold": 1.0,
    }
    assert not (out / "best_gold.tmp").exists() and not (out / "best_gold.old").exists()
    # A plain model folder with its tokenizer, holding exactly the step-2 policy (the step-2
    # checkpoint has it), neither the start policy nor the final one.
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(out / "best_gold").pad_token_id is not None
    best = weights(out / "best_gold")
    checkpoint = load_file(out / "checkpoints" / "step-2" / "model.safetensors")
    assert all(
        torch.equal(best[k], checkpoint[f"policy.{k}"]) for k in best if f"policy.{k}" in checkpoint
    )
    assert sum(f"policy.{k}" in checkpoint for k in best) >= len(best) - 1  # a tied head at most
    assert not same(best, weights(tiny_lm))
    assert not same(best, weights(out))


def test_a_real_judge_argmax_and_no_best_gold_without_a_judge_or_evals(tiny_lm, tmp_path):
    out = tmp_path / "out"
    result = train_ppo(tiny_lm, count_a, PROMPTS, out, config(), judge=count_e)
    rows = metrics_rows(out)
    assert result.best_gold_step == max(rows, key=lambda r: r["eval_gold"])["step"]
    assert result.best_gold == max(r["eval_gold"] for r in rows)
    record = json.loads((out / "best_gold" / "best_gold.json").read_text())
    assert record["step"] == result.best_gold_step
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    step0 = [r["gold"] for r in samples if r["step"] == 0]
    assert record["baseline_eval_gold"] == pytest.approx(sum(step0) / len(step0))

    # Same folder, no judge, nothing to resume (save_every 0): the old best_gold is another
    # run's policy, so it is deleted, and none is written.
    result = train_ppo(tiny_lm, count_a, PROMPTS, out, config())
    assert (result.best_gold_step, result.best_gold) == (None, None)
    assert not (out / "best_gold").exists()
    # A judge without held-out evals: no eval_gold, no best_gold.
    result = train_ppo(
        tiny_lm, count_a, PROMPTS, tmp_path / "no-evals", config(eval_every=0), judge=count_e
    )
    assert result.best_gold_step is None and not (tmp_path / "no-evals" / "best_gold").exists()


class Preempted(Exception):
    pass


def crash_after_step_3(row):
    if row["step"] == 3:  # after the step-2 checkpoint and the step-3 eval
        raise Preempted


@pytest.mark.parametrize(
    ("before", "after", "best_step", "best_value"),
    [
        (5.0, 1.0, 1, 5.0),  # the resumed steps score lower: the step-1 best is kept
        (1.0, 2.0, 3, 2.0),  # they score higher: the first resumed eval replaces it
    ],
)
def test_resume_replaces_best_gold_only_with_a_better_step(
    tiny_lm, tmp_path, before, after, best_step, best_value
):
    out = tmp_path / "out"
    run_config = config(save_every=2)
    GOLD["value"] = before
    with pytest.raises(Preempted):
        train_ppo(
            tiny_lm,
            count_a,
            PROMPTS,
            out,
            run_config,
            judge=scripted_gold,
            on_metrics=crash_after_step_3,
        )
    saved = json.loads((out / "best_gold" / "best_gold.json").read_text())
    assert (saved["step"], saved["eval_gold"]) == (1, before)  # steps 2 and 3 only tied
    saved_weights = sha(out / "best_gold" / "model.safetensors")

    GOLD["value"] = after
    result = train_ppo(tiny_lm, count_a, PROMPTS, out, run_config, judge=scripted_gold)
    assert result.resumed_from == 2
    assert (result.best_gold_step, result.best_gold) == (best_step, best_value)
    record = json.loads((out / "best_gold" / "best_gold.json").read_text())
    assert (record["step"], record["eval_gold"]) == (best_step, best_value)
    assert record["baseline_eval_gold"] == before  # step 0 ran before the crash
    assert (sha(out / "best_gold" / "model.safetensors") == saved_weights) == (best_step == 1)


def test_lora_best_gold_is_merged_and_leaves_training_alone(tiny_lm, tmp_path):
    lora = config(total_episodes=12, lora=True, lora_r=4, lr=1e-2)
    # Gold rises every step: every eval step is a new best, the last one included.
    GOLD["value"] = 0.0
    with_judge = train_ppo(
        tiny_lm,
        count_a,
        PROMPTS,
        tmp_path / "judged",
        lora,
        judge=scripted_gold,
        on_metrics=gold_by_step({1: 1.0, 2: 2.0}),
    )
    plain = train_ppo(tiny_lm, count_a, PROMPTS, tmp_path / "plain", lora)
    assert with_judge.best_gold_step == 3 and plain.best_gold_step is None
    best = tmp_path / "judged" / "best_gold"
    assert not (best / "adapter_config.json").exists()
    best_weights = weights(best)  # loads without peft
    assert not any("lora_" in name for name in best_weights)
    # Merging a copy for steps 1 and 2 changed nothing in training: the final policy is the
    # judge-free run's, bit for bit, and best_gold (the last step) equals it.
    final = weights(tmp_path / "judged")
    assert same(final, weights(tmp_path / "plain"))
    assert same(best_weights, final)
    assert not same(best_weights, weights(tiny_lm))


@pytest.mark.django_db
def test_train_ppo_command_records_best_gold_in_the_run(tiny_lm, tmp_path):
    from django.core.management import call_command

    from lineage.models import ModelVersion, TrainingRun

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"text": p}) + "\n" for p in PROMPTS))
    out = tmp_path / "policy"
    stdout = StringIO()
    call_command(
        "train_ppo",
        "--policy",
        str(tiny_lm),
        "--reward-model",
        "tests.training.test_ppo_best_gold:count_a",
        "--judge",
        "tests.training.test_ppo_best_gold:count_e",
        "--prompts",
        str(prompts),
        "--out",
        str(out),
        "--total-episodes",
        "8",
        "--batch-size",
        "4",
        "--response-length",
        "5",
        "--eval-every",
        "1",
        "--num-eval-prompts",
        "3",
        "--device",
        "cpu",
        "--no-progress",
        stdout=stdout,
    )
    run = TrainingRun.objects.get(kind=TrainingRun.Kind.PPO)
    record = json.loads((out / "best_gold" / "best_gold.json").read_text())
    assert run.metrics["best_gold_step"] == record["step"] in (1, 2)
    assert run.metrics["best_gold_eval"] == pytest.approx(record["eval_gold"])
    assert run.metrics["best_gold_path"] == str(out / "best_gold")
    assert f"at step {record['step']}: {out / 'best_gold'}" in stdout.getvalue()
    # The run's one output model is the final policy; best_gold is not a model version.
    assert run.output_model.path == str(out)
    assert not ModelVersion.objects.filter(path=str(out / "best_gold")).exists()
