"""build_comparisons --strategy uncertainty: reward models score the pool (training side)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from annotation.models import Comparison
from tests.annotation.test_active import make_pool


def run(*args):
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.fixture
def pooled(make_project):
    project = make_project("pool", num_candidates=2, overlap=1)
    make_pool(project, {"p": ["a", "b", "c", "d"], "q": ["e", "f", "g"]})
    return project


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--strategy", "smartest"],
            "unknown --strategy 'smartest': use one of random, uncertainty",
        ),
        (["--strategy", "uncertainty"], "--strategy uncertainty needs --reward-model DIR"),
        (["--reward-model", "rm"], "--reward-model is only used with --strategy uncertainty"),
    ],
)
def test_bad_options_are_refused_and_build_nothing(pooled, args, message):
    with pytest.raises(CommandError) as caught:
        run("build_comparisons", "pool", *args)
    assert str(caught.value) == message
    assert not Comparison.objects.exists()


def test_a_bad_reward_model_dir_is_named_and_nothing_is_built(pooled, tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(CommandError, match=f"reward model {missing}: no such directory"):
        run(
            "build_comparisons", "pool", "--strategy", "uncertainty", "--reward-model", str(missing)
        )
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CommandError, match="neither config.json nor adapter_config.json"):
        run("build_comparisons", "pool", "--strategy", "uncertainty", "--reward-model", str(empty))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(CommandError, match=f"reward model {broken}: cannot load"):
        run("build_comparisons", "pool", "--strategy", "uncertainty", "--reward-model", str(broken))
    assert not Comparison.objects.exists()


def test_a_bad_max_share_is_refused(pooled, tiny_rm):
    with pytest.raises(CommandError, match="max_share must be in"):
        run(
            "build_comparisons", "pool", "--strategy", "uncertainty",
            "--reward-model", str(tiny_rm), "--max-share", "0",
        )  # fmt: skip
    assert not Comparison.objects.exists()


@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory):
    from transformers import AutoModelForSequenceClassification

    from training.modeling import load_tokenizer
    from training.tiny import build_tiny_causal_lm

    root = tmp_path_factory.mktemp("active_rm")
    texts = ["Question p?", "Question q?", "a b c d e f g", "answers of every kind"]
    lm = build_tiny_causal_lm(root / "lm", texts * 4, vocab_size=300)
    rm = AutoModelForSequenceClassification.from_pretrained(lm, num_labels=1)
    rm.config.pad_token_id = load_tokenizer(lm).pad_token_id
    rm.save_pretrained(root / "rm")
    load_tokenizer(lm).save_pretrained(root / "rm")
    return root / "rm"


@pytest.mark.ml
def test_uncertainty_build_with_an_ensemble_groups_what_the_models_disagree_on(pooled, tiny_rm):
    from annotation.models import Candidate
    from annotation.rules.active import uncertain_groups
    from training.reward.uncertainty import ensemble_scores

    out = run(
        "build_comparisons", "pool", "--strategy", "uncertainty",
        "--reward-model", str(tiny_rm), "--reward-model", str(tiny_rm), "--device", "cpu",
    )  # fmt: skip
    assert "built 3 comparisons (uncertainty)" in out
    assert "1 candidates left over" in out
    # The groups are the ones the rule picks from the models' own scores.
    pool = list(Candidate.objects.select_related("prompt").order_by("id"))
    scores = ensemble_scores(
        [tiny_rm, tiny_rm],
        [c.prompt.as_model_input() for c in pool],
        [c.text for c in pool],
        device="cpu",
    )
    assert all(len(s) == 2 and s[0] == pytest.approx(s[1]) for s in scores)
    expected = set()
    for prompt in ("p", "q"):
        rows = [(c.pk, s) for c, s in zip(pool, scores) if c.prompt.external_id == prompt]
        expected |= {tuple(sorted(g)) for g, _ in uncertain_groups(rows, 2)}
    built = Comparison.objects.order_by("-priority")
    assert {tuple(sorted(c.candidate_ids)) for c in built} == expected
    assert [c.priority for c in built] == pytest.approx([1.0, 2 / 3, 1 / 3])
    # A second run finds no unused pool left but the model check still runs.
    assert "built 0 comparisons" in run(
        "build_comparisons", "pool", "--strategy", "uncertainty", "--reward-model", str(tiny_rm)
    )
