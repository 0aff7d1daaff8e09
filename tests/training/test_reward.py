"""Reward-model training: losses by hand, data validation, and tiny end-to-end runs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from training.modeling import encode_prompt, load_tokenizer  # noqa: E402
from training.reward import (  # noqa: E402
    RankingCollator,
    RewardConfig,
    RewardDataError,
    WeightedPreferenceCollator,
    kwise_loss,
    load_reward_model,
    pairwise_loss,
    render_reward_input,
    train_reward_model,
)
from training.reward.data import load_preferences, pairs_from_ranking  # noqa: E402
from training.reward.dataset import Renderer, build_dataset  # noqa: E402
from training.tiny import build_tiny_causal_lm  # noqa: E402

WORDS = [
    *("apple", "river", "stone", "cloud", "green", "quick", "table"),
    *("music", "paper", "light", "ocean", "forest", "silver", "window"),
]
MARKER = "please"  # the planted rule: more of it is better


def nll(x: float) -> float:
    """-log sigmoid(x), written out independently of torch."""
    return math.log1p(math.exp(-x))


# --------------------------------------------------------------------------- fixtures


def write_export(directory: Path, *, chat: bool = True, n: int = 80, seed: int = 0) -> Path:
    """A synthetic export (SPEC section 5): K=4 rankings with tiers [[2 markers], [1], [0, 0]].

    `chat` writes what a chat project exports (message lists), else plain strings.
    """
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    pairs, rankings = [], []
    for i in range(n):
        text = f"question {i}: tell me about {rng.choice(WORDS)}"
        prompt = [{"role": "user", "content": text}] if chat else text
        by_quality = []
        for count in (2, 1, 0, 0):
            words = [rng.choice(WORDS) for _ in range(6)]
            for slot in rng.sample(range(6), count):
                words[slot] = MARKER
            by_quality.append(" ".join(words))
        order = rng.sample(range(4), 4)  # completions[k] = by_quality[order[k]]
        completions = [by_quality[o] for o in order]
        where = {o: k for k, o in enumerate(order)}
        tiers = [[where[0]], [where[1]], sorted([where[2], where[3]])]
        split = "test" if i % 4 == 0 else "train"
        rankings.append(
            {
                "prompt": prompt,
                "completions": completions,
                "tiers": tiers,
                "weight": 1.0,
                "split": split,
                "comparison_id": i,
                "annotation_id": 1000 + i,
            }
        )
        tier_of = {c: t for t, tier in enumerate(tiers) for c in tier}
        ordered = [(a, b) for a in range(4) for b in range(4) if tier_of[a] < tier_of[b]]
        for a, b in ordered:

            def response(t: str) -> str | list[dict]:
                return [{"role": "assistant", "content": t}] if chat else t

            pairs.append(
                {
                    "prompt": prompt,
                    "chosen": response(completions[a]),
                    "rejected": response(completions[b]),
                    "margin": tier_of[b] - tier_of[a],
                    "weight": 1 / len(ordered),
                    "split": split,
                    "comparison_id": i,
                    "annotation_id": 1000 + i,
                    "labeler": "labeler-1",
                    "chosen_model": "tiny",
                    "rejected_model": "tiny",
                }
            )
    write_jsonl(directory / "pairs.jsonl", pairs)
    write_jsonl(directory / "rankings.jsonl", rankings)
    (directory / "manifest.json").write_text(json.dumps({"schema_version": 1, "counts": {}}))
    return directory


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    return write_export(tmp_path_factory.mktemp("export"))


@pytest.fixture(scope="module")
def text_export_dir(tmp_path_factory) -> Path:
    return write_export(tmp_path_factory.mktemp("text-export"), chat=False, seed=1)


@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> str:
    torch.set_num_threads(1)
    texts = [" ".join([*WORDS, MARKER, "question", "tell", "me", "about"])] * 5
    texts += [f"question {i}:" for i in range(100)]
    out = tmp_path_factory.mktemp("base")
    return str(build_tiny_causal_lm(out, texts, chat_template=True))


def fast(**overrides) -> RewardConfig:
    """A config that trains the tiny model in about a second."""
    values = dict(epochs=3, lr=1e-3, batch_size=16, max_length=64, logging_steps=5, save_steps=1000)
    values.update(overrides)
    return RewardConfig(**values)


@pytest.fixture(scope="module")
def pairwise_run(export_dir, base_model, tmp_path_factory):
    torch.set_num_threads(1)
    logged: list[dict] = []
    out = tmp_path_factory.mktemp("rm-pairwise")
    result = train_reward_model(export_dir, base_model, out, fast(), on_metrics=logged.append)
    return result, logged


@pytest.fixture(scope="module")
def kwise_run(text_export_dir, base_model, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("rm-kwise")
    return train_reward_model(text_export_dir, base_model, out, fast(loss="kwise", batch_size=4))


# --------------------------------------------------------------------------- losses by hand


def test_pairwise_loss_matches_hand_computation():
    chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    assert pairwise_loss(chosen, rejected).item() == pytest.approx((nll(1) + nll(-1)) / 2)
    weighted = pairwise_loss(chosen, rejected, weight=torch.tensor([1.0, 3.0]))
    assert weighted.item() == pytest.approx((nll(1) + 3 * nll(-1)) / 4)


def test_margin_is_subtracted_from_the_reward_gap():
    chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    margin = torch.tensor([1.0, 0.0])
    assert pairwise_loss(chosen, rejected, margin=margin).item() == pytest.approx(
        (nll(2 - 1 - 1) + nll(0 - 1 - 0)) / 2
    )
    # A larger margin asks for a larger gap: the loss grows, and margin 0 is plain Bradley-Terry.
    losses = [pairwise_loss(chosen, rejected, margin=torch.full((2,), m)).item() for m in (0, 1, 2)]
    assert losses[0] == pytest.approx(pairwise_loss(chosen, rejected).item())
    assert losses[0] < losses[1] < losses[2]


def test_kwise_loss_matches_hand_computation():
    collate = RankingCollator(pad_token_id=0, margin_scale=0.0)
    batch = collate(
        [
            # strict ranking of 3: pairs (0,1), (0,2), (1,2)
            {"completion_ids": [[1], [2], [3]], "tier_of": [0, 1, 2], "weight": 1.0},
            # completions 1 and 2 tie: pairs (0,1), (0,2) only
            {"completion_ids": [[4], [5], [6]], "tier_of": [0, 1, 1], "weight": 3.0},
        ]
    )
    assert batch["input_ids"].shape == (6, 1)  # each completion forwarded once
    assert "margin" not in batch
    rewards = torch.tensor([3.0, 1.0, 0.0, 0.0, 1.0, 2.0])
    loss = kwise_loss(
        rewards, batch["better"], batch["worse"], batch["group"], weight=batch["weight"]
    )
    first = (nll(3 - 1) + nll(3 - 0) + nll(1 - 0)) / 3
    second = (nll(0 - 1) + nll(0 - 2)) / 2  # the tie contributes no pair
    assert loss.item() == pytest.approx((first + 3 * second) / 4)


def test_kwise_batches_of_one_ranking_keep_their_weights_across_a_step():
    # The trainer averages micro-batches equally: divided by its own weight, a batch of one
    # ranking lost it. Divided by the data's mean weight, two batches of one average to the
    # weighted mean over both rankings.
    collate = RankingCollator(pad_token_id=0, margin_scale=0.0)
    rows = [
        {"completion_ids": [[1], [2]], "tier_of": [0, 1], "weight": 1.0},
        {"completion_ids": [[3], [4]], "tier_of": [0, 1], "weight": 3.0},
    ]
    rewards = [torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0])]
    mean_weight = 2.0
    step = 0.0
    for row, r in zip(rows, rewards):
        batch = collate([row])
        step += kwise_loss(
            r, batch["better"], batch["worse"], batch["group"], weight=batch["weight"],
            scale=mean_weight,
        ).item() / 2  # fmt: skip
    assert step == pytest.approx((1 * nll(2) + 3 * nll(-1)) / 4)


def test_kwise_margins_are_scaled_tier_gaps():
    collate = RankingCollator(pad_token_id=0, margin_scale=0.5)
    batch = collate([{"completion_ids": [[1], [2], [3]], "tier_of": [0, 1, 2], "weight": 1.0}])
    assert batch["margin"].tolist() == [0.5, 1.0, 0.5]  # gaps 1, 2, 1
    rewards = torch.tensor([3.0, 1.0, 0.0])
    loss = kwise_loss(
        rewards, batch["better"], batch["worse"], batch["group"], margin=batch["margin"]
    )
    assert loss.item() == pytest.approx((nll(2 - 0.5) + nll(3 - 1.0) + nll(1 - 0.5)) / 3)


def test_kwise_loss_equals_pairwise_loss_on_the_expanded_pairs(export_dir):
    """Pairs weighted 1/npairs (as the export writes them) make both losses the same quantity."""
    rankings = load_preferences(export_dir, loss="kwise").rankings[:6]
    gen = torch.Generator().manual_seed(0)
    batch = RankingCollator(pad_token_id=0)(
        [
            {"completion_ids": [[1]] * 4, "tier_of": r.tier_of(), "weight": r.weight}
            for r in rankings
        ]
    )
    rewards = torch.randn(4 * len(rankings), generator=gen)
    kwise = kwise_loss(
        rewards,
        batch["better"],
        batch["worse"],
        batch["group"],
        margin=batch["margin"],
        weight=batch["weight"],
    )
    pairs = [pairs_from_ranking(r) for r in rankings]
    pairwise = pairwise_loss(
        rewards[batch["better"]],
        rewards[batch["worse"]],
        margin=batch["margin"],
        weight=torch.tensor([p.weight for ps in pairs for p in ps]),
    )
    assert kwise.item() == pytest.approx(pairwise.item(), rel=1e-6)


# --------------------------------------------------------------------------- rendering and batches


@pytest.mark.ml
def test_render_reward_input_appends_eos_and_truncates_from_the_right(base_model):
    tokenizer = load_tokenizer(base_model)
    prompt = [{"role": "user", "content": "question 1: tell me about apple"}]
    ids, truncated = render_reward_input(tokenizer, prompt, "apple river", max_length=64)
    prompt_ids = encode_prompt(tokenizer, prompt)
    assert not truncated
    assert ids[: len(prompt_ids)] == prompt_ids  # the chat template, as PPO renders it
    assert tokenizer.convert_tokens_to_ids("<|user|>") in prompt_ids
    assert ids[-1] == tokenizer.eos_token_id

    long_response = " ".join(["apple"] * 80)
    ids, truncated = render_reward_input(tokenizer, prompt, long_response, max_length=32)
    assert truncated and len(ids) == 32 and ids[-1] == tokenizer.eos_token_id
    assert ids[: len(prompt_ids)] == prompt_ids  # the response is cut, not the prompt

    long_prompt = " ".join(["stone"] * 80)
    ids, truncated = render_reward_input(tokenizer, long_prompt, "apple river", max_length=32)
    response_ids = tokenizer("apple river", add_special_tokens=False)["input_ids"]
    assert truncated and len(ids) == 32
    assert ids[-1 - len(response_ids) : -1] == response_ids  # the response survives whole


@pytest.mark.ml
def test_pairwise_batches_carry_scaled_margins_and_weights(export_dir, base_model):
    tokenizer = load_tokenizer(base_model)
    prefs = load_preferences(export_dir)
    config = RewardConfig(margin_scale=0.5, max_length=64)
    dataset = build_dataset(prefs, "train", config, Renderer(tokenizer, 64))
    rows = [dataset[i] for i in range(5)]  # the five pairs of the first training ranking
    batch = WeightedPreferenceCollator(pad_token_id=tokenizer.pad_token_id)(rows)
    raw = prefs.split_pairs("train")[:5]
    assert batch["margin"].tolist() == [0.5 * p.margin for p in raw]
    assert batch["weight"].tolist() == pytest.approx([0.2] * 5)
    assert batch["input_ids"].shape[0] == 10  # chosen rows, then rejected rows


# --------------------------------------------------------------------------- data validation


@pytest.mark.parametrize("chat", [True, False])
def test_export_formats_load_the_same_pairs(export_dir, text_export_dir, chat, tmp_path):
    import datasets

    export_dir = export_dir if chat else text_export_dir
    rows = [json.loads(line) for line in (export_dir / "pairs.jsonl").read_text().splitlines()]
    expected = load_preferences(export_dir).pairs
    table = datasets.Dataset.from_list(rows)
    table.to_parquet(str(tmp_path / "pairs.parquet"))
    table.save_to_disk(str(tmp_path / "pairs_hf"))
    for source in (tmp_path / "pairs.parquet", tmp_path / "pairs_hf"):
        assert load_preferences(source).pairs == expected, source


def test_data_sha256_is_the_consumed_file(export_dir):
    digest = hashlib.sha256((export_dir / "pairs.jsonl").read_bytes()).hexdigest()
    assert load_preferences(export_dir).sha256 == digest
    ranked = hashlib.sha256((export_dir / "rankings.jsonl").read_bytes()).hexdigest()
    assert load_preferences(export_dir / "pairs.jsonl", loss="kwise").sha256 == ranked


def test_eval_fraction_holds_out_the_prompts_the_export_would(tmp_path):
    # The fallback split for an export without test rows is the export's own rule.
    from annotation.rules.splits import split_for_prompt
    from training.reward.dataset import apply_eval_fraction as _apply_eval_fraction

    prompts = [f"prompt {i}" for i in range(200)] + [[{"role": "user", "content": "chat"}]]
    path = tmp_path / "pairs.jsonl"
    path.write_text(
        "".join(json.dumps({"prompt": p, "chosen": "a", "rejected": "b"}) + "\n" for p in prompts)
    )
    data = load_preferences(path)
    _apply_eval_fraction(data, 0.3)
    assert [p.split for p in data.pairs] == [
        split_for_prompt(p, test_fraction=0.3) for p in prompts
    ]


def test_validation_takes_training_prompts_only_and_steps_back_when_too_small(tmp_path):
    from training.reward.dataset import hold_out_validation, in_validation

    prompts = [f"prompt {i}" for i in range(400)]
    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": p, "chosen": "a", "rejected": "b", "split": "train"} for p in prompts]
    for row in rows[:100]:
        row["split"] = "test"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = load_preferences(path)
    assert hold_out_validation(data, 0.1)
    moved = [p for p in data.pairs if p.split == "validation"]
    assert {p.prompt for p in moved} == {p for p in prompts[100:] if in_validation(p, 0.1)}
    assert 15 <= len(moved) <= 45  # about a tenth of the 300 training prompts
    assert sum(p.split == "test" for p in data.pairs) == 100  # the test split is untouched
    # Its own hash, not the test split's: the test prompts would fall in validation alike.
    assert 3 <= sum(in_validation(p, 0.1) for p in prompts[:100]) <= 20

    tiny = tmp_path / "tiny.jsonl"
    tiny.write_text("".join(json.dumps(r) + "\n" for r in rows[100:103]))
    data = load_preferences(tiny)
    assert not any(in_validation(p.prompt, 0.1) for p in data.pairs)
    assert not hold_out_validation(data, 0.1)  # nothing to spare: the caller picks on test
    assert {p.split for p in data.pairs} == {"train"}
    assert not hold_out_validation(load_preferences(path), 0.0)


GOOD_PAIR = {
    "prompt": "p",
    "chosen": "a",
    "rejected": "b",
    "margin": 1,
    "weight": 1.0,
    "split": "train",
}


@pytest.mark.parametrize(
    ("name", "content", "loss", "message"),
    [
        (
            "pairs.jsonl",
            [{"prompt": "p", "chosen": "a"}],
            "pairwise",
            r"pairs.jsonl:1: missing column\(s\) 'rejected'",
        ),
        ("pairs.jsonl", [], "pairwise", "empty"),
        ("pairs.csv", "prompt,chosen,rejected\n", "pairwise", "unknown format '.csv'"),
        (
            "pairs.jsonl",
            "{}\nnot json\n",
            "pairwise",
            r"pairs.jsonl:1: missing column|pairs.jsonl:2: invalid JSON",
        ),
        (
            "pairs.jsonl",
            [GOOD_PAIR, {**GOOD_PAIR, "split": "dev"}],
            "pairwise",
            r":2: 'split' must be",
        ),
        ("pairs.jsonl", [{**GOOD_PAIR, "weight": 0}], "pairwise", r":1: 'weight' must be > 0"),
        (
            "pairs.jsonl",
            [{**GOOD_PAIR, "chosen": [{"role": "user", "content": "x"}]}],
            "pairwise",
            "one assistant message",
        ),
        ("pairs.jsonl", [{**GOOD_PAIR, "split": "test"}], "pairwise", "no rows with split 'train'"),
        ("pairs.jsonl", [GOOD_PAIR], "kwise", "needs the rankings file"),
        (
            "rankings.jsonl",
            [{"prompt": "p", "completions": ["a", "b", "c"], "tiers": [[0], [1, 1]]}],
            "kwise",
            "exactly once",
        ),
        (
            "rankings.jsonl",
            [{"prompt": "p", "completions": ["a", "b"]}],
            "kwise",
            r"missing column\(s\) 'tiers'",
        ),
    ],
)
def test_bad_exports_fail_clearly(tmp_path, name, content, loss, message):
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    else:
        write_jsonl(path, content)
    with pytest.raises(RewardDataError, match=message):
        load_preferences(path, loss=loss)


def test_missing_paths_and_empty_directories_fail_clearly(tmp_path):
    with pytest.raises(RewardDataError, match="no such file"):
        load_preferences(tmp_path / "nope.jsonl")
    with pytest.raises(RewardDataError, match="no pairs or rankings file"):
        load_preferences(tmp_path)
    assert issubclass(RewardDataError, ValueError)


@pytest.mark.ml
def test_a_bad_export_writes_nothing(tmp_path, base_model):
    write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "a"}])
    out = tmp_path / "out"
    with pytest.raises(RewardDataError, match="missing column"):
        train_reward_model(tmp_path, base_model, out, fast())
    assert not out.exists()


def test_config_from_command_options():
    options = {
        "verbosity": 1,
        "export": "7",
        "loss": "kwise",
        "lora": True,
        "learning_rate": 3e-4,
        "batch_size": None,  # not given on the command line: keep the default
        "lora_target_modules": "c_attn, c_proj",
    }
    config = RewardConfig.from_options(options)
    assert (config.loss, config.lora, config.lr, config.batch_size) == ("kwise", True, 3e-4, 8)
    assert config.lora_target_modules == ("c_attn", "c_proj")
    assert RewardConfig(lora=True).learning_rate == 1e-4
    assert RewardConfig().learning_rate == 1e-5
    with pytest.raises(ValueError, match="loss must be"):
        RewardConfig.from_options({"loss": "listwise"})
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        RewardConfig(batch_size=0)


def test_accuracy_by_margin_is_ordered_by_the_gap_and_counts_ties_half(monkeypatch):
    import training.reward.calibrate as calibrate
    from training.reward.data import PreferencePair

    scores = {"good": 1.0, "bad": 0.0, "same": 0.5}
    texts = list(scores)

    class Render:
        tokenizer = type("T", (), {"pad_token_id": 0})()

        def __call__(self, prompt, response):
            return [texts.index(response) + 1]

    monkeypatch.setattr(
        calibrate,
        "score_token_ids",
        lambda model, ids, pad, batch_size: [scores[texts[i[0] - 1]] for i in ids],
    )
    pairs = [
        PreferencePair("p", "good", "bad", margin=10),
        PreferencePair("p", "bad", "good", margin=2),
        PreferencePair("p", "same", "same", margin=2),
        PreferencePair("p", "good", "bad", margin=1),
    ]
    figures = calibrate.evaluate_pairs(None, pairs, Render(), margin_scale=0.0, batch_size=8)
    assert list(figures["accuracy_by_margin"].items()) == [("1", 1.0), ("2", 0.25), ("10", 1.0)]
    assert figures["accuracy"] == pytest.approx((1 + 0 + 0.5 + 1) / 4)


# --------------------------------------------------------------------------- end to end


def reference_inputs(export_dir: Path) -> tuple[list, list]:
    prompts, responses = [], []
    for r in load_preferences(export_dir, loss="kwise").rankings:
        prompts += [r.prompt] * len(r.completions)
        responses += r.completions
    return prompts, responses


@pytest.mark.ml
def test_pairwise_training_learns_the_planted_rule(pairwise_run, export_dir, base_model):
    result, logged = pairwise_run
    assert result.accuracy >= 0.8
    assert set(result.accuracy_by_margin) == {"1", "2"}
    # Early stopping picks the epoch on a validation split of the training prompts; the
    # 100 test pairs only report.
    assert result.selection_split == "validation"
    assert (result.num_train_pairs + result.num_validation_pairs, result.num_eval_pairs) == (
        300,
        100,
    )
    assert 0 < result.num_validation_pairs < 100
    assert all(e["selection_split"] == "validation" for e in result.epoch_evaluations)
    assert result.truncated_count == 0
    out = result.output_dir
    for name in ("training_config.json", "metrics.jsonl", "README.md", "reward_normalization.json"):
        assert (out / name).is_file(), name
    run = json.loads((out / "training_config.json").read_text())
    assert run["config"]["loss"] == "pairwise" and run["data_sha256"] == result.data_sha256
    card = (out / "README.md").read_text()
    assert result.data_sha256 in card and base_model in card and f"{result.accuracy:.3f}" in card
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines == logged  # on_metrics saw exactly what was written
    assert any("eval_loss" in line for line in lines)  # evaluated every epoch
    assert lines[-1]["final"] and lines[-1]["accuracy"] == result.accuracy


@pytest.mark.ml
def test_kwise_training_learns_the_planted_rule(kwise_run):
    assert kwise_run.accuracy >= 0.8
    pairs = kwise_run.num_train_pairs + kwise_run.num_validation_pairs
    assert (pairs, kwise_run.num_eval_pairs) == (300, 100)
    rankings = kwise_run.num_train_pairs // 5  # each ranking of 4 tiers gives 5 pairs here
    assert kwise_run.global_step == -(-rankings // 4) * 3  # rankings / 4 per batch, 3 epochs


@pytest.mark.ml
def test_loaded_model_reproduces_training_scores_and_bias(pairwise_run, export_dir):
    result, _ = pairwise_run
    scorer = load_reward_model(result.output_dir)
    prompts, responses = reference_inputs(export_dir)
    raw = torch.tensor(scorer.score(prompts, responses, normalize=False), dtype=torch.float64)
    normalized = torch.tensor(scorer.score(prompts, responses), dtype=torch.float64)
    # The bias was computed in memory after training: the reloaded model gives the same scores.
    assert raw.mean().item() == pytest.approx(result.bias, abs=1e-5)
    assert raw.std(unbiased=False).item() == pytest.approx(result.std, abs=1e-5)
    assert abs(normalized.mean().item()) < 1e-5
    assert (
        scorer.score(["question 5: tell me about apple"], ["please river please"])[0]
        > scorer.score(["question 5: tell me about apple"], ["stone river table"])[0]
    )


@pytest.mark.ml
@pytest.mark.parametrize(
    "batching",
    [
        pytest.param({"batch_size": 8}, id="one-batch"),
        # Eight micro-batches of one: each used to be divided by its own weight, which
        # cancelled the weights (the two sides tied at 0 instead of ln 3).
        pytest.param({"batch_size": 1, "gradient_accumulation": 8}, id="micro-batches-of-one"),
    ],
)
def test_weights_are_honoured(tmp_path, base_model, batching):
    """Contradicting pairs: the side with 3x the weight wins, at the Bradley-Terry optimum ln 3."""
    rows = [
        {
            "prompt": "question 1:",
            "chosen": "apple river",
            "rejected": "stone cloud",
            "weight": 0.75,
        },
        {
            "prompt": "question 1:",
            "chosen": "stone cloud",
            "rejected": "apple river",
            "weight": 0.25,
        },
    ]
    write_jsonl(tmp_path / "pairs.jsonl", rows * 4)
    config = fast(epochs=40, lr=3e-3, margin_scale=0.0, eval_each_epoch=False, **batching)
    result = train_reward_model(tmp_path / "pairs.jsonl", base_model, tmp_path / "out", config)
    scores = load_reward_model(result.output_dir).score(
        ["question 1:"] * 2, ["apple river", "stone cloud"]
    )
    assert scores[0] - scores[1] == pytest.approx(math.log(3), abs=0.25)


@pytest.mark.ml
def test_lora_reward_model_saves_its_head_and_reloads_identically(export_dir, base_model, tmp_path):
    config = fast(lora=True, epochs=1, lr=1e-2, eval_each_epoch=False)
    result = train_reward_model(export_dir, base_model, tmp_path / "lora", config)
    out = result.output_dir
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    assert json.loads((out / "adapter_config.json").read_text())["task_type"] == "SEQ_CLS"
    # What train_ppo checks before it registers anything: an adapter folder is a reward model.
    from training.modeling import ModelLoadError, check_model_reference

    check_model_reference(out)
    with pytest.raises(ModelLoadError, match="no config.json"):
        check_model_reference(out, causal_lm=True)
    prompts, responses = reference_inputs(export_dir)
    raw = torch.tensor(load_reward_model(out).score(prompts, responses, normalize=False))
    # mean and std equal to the in-memory figures: the trained score head came back too
    assert raw.mean().item() == pytest.approx(result.bias, abs=1e-5)
    assert raw.std(unbiased=False).item() == pytest.approx(result.std, abs=1e-5)
    merged = load_reward_model(out, merged=True)
    assert not hasattr(merged.model, "peft_config")
    assert merged.score(prompts[:8], responses[:8], normalize=False) == pytest.approx(
        raw[:8].tolist(), abs=1e-5
    )


class Interrupted(Exception):
    pass


@pytest.mark.ml
def test_resume_continues_from_the_checkpoint(export_dir, base_model, tmp_path):
    config = fast(
        epochs=1,
        lr_scheduler="constant",
        logging_steps=1,
        save_steps=6,
        max_length=16,
        eval_each_epoch=False,
    )
    whole = train_reward_model(export_dir, base_model, tmp_path / "whole", config)

    def crash_at_step_8(record: dict) -> None:
        if record.get("step") == 8:
            raise Interrupted

    out = tmp_path / "crashed"
    with pytest.raises(Interrupted):
        train_reward_model(export_dir, base_model, out, config, on_metrics=crash_at_step_8)
    assert (out / "checkpoints" / "checkpoint-6" / "training_config.json").is_file()
    resumed_log: list[dict] = []
    resumed = train_reward_model(export_dir, base_model, out, config, on_metrics=resumed_log.append)

    assert resumed_log[0]["step"] == 7  # picked up after checkpoint-6, not from scratch
    steps = [
        line["step"] for line in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
    ]
    assert steps[: whole.global_step] == list(range(1, whole.global_step + 1))  # no gap, no repeat
    assert resumed.global_step == whole.global_step
    prompts, responses = reference_inputs(export_dir)
    a = load_reward_model(whole.output_dir).score(prompts[:20], responses[:20], normalize=False)
    b = load_reward_model(out).score(prompts[:20], responses[:20], normalize=False)
    assert b == pytest.approx(a, abs=1e-4)  # same weights as the uninterrupted run
    assert resumed.truncated_count > 0  # max_length=16 cuts responses: counted, not dropped
    assert resumed.num_train_pairs + resumed.num_validation_pairs == 300

    with pytest.raises(ValueError, match="different run"):
        train_reward_model(export_dir, base_model, out, RewardConfig(loss="kwise", save_steps=6))


@pytest.fixture(scope="module")
def noise_export(tmp_path_factory) -> Path:
    """Pairs with random labels: held-out accuracy wanders, so an early epoch can be best."""
    rng = random.Random(0)
    rows = [
        {
            "prompt": f"question {i}:",
            "chosen": " ".join(rng.choice(WORDS) for _ in range(5)),
            "rejected": " ".join(rng.choice(WORDS) for _ in range(5)),
            "split": "test" if i % 4 == 0 else "train",
        }
        for i in range(240)
    ]
    folder = tmp_path_factory.mktemp("noise")
    write_jsonl(folder / "pairs.jsonl", rows)
    return folder


@pytest.fixture(scope="module")
def three_epochs(noise_export, base_model, tmp_path_factory):
    """An uninterrupted 3-epoch run whose best epoch is not the last (lr high, constant)."""
    config = fast(epochs=3, lr=1e-2, lr_scheduler="constant", logging_steps=1, save_steps=1000)
    whole = train_reward_model(noise_export, base_model, tmp_path_factory.mktemp("whole"), config)
    assert whole.best_epoch < 3  # else keeping the best epoch's weights is not under test
    return config, whole


@pytest.mark.ml
@pytest.mark.parametrize("where", ["end of epoch 1", "inside epoch 2"])
def test_a_resumed_run_remembers_the_epochs_before_the_crash(
    noise_export, base_model, tmp_path, three_epochs, where
):
    # Early stopping's evaluations and best weights live in the checkpoint: after a crash in
    # epoch 2 the resumed run numbers epochs on and keeps the epoch the whole run keeps.
    config, whole = three_epochs
    per_epoch = whole.global_step // 3
    saved_at = per_epoch if where == "end of epoch 1" else per_epoch + 1
    config = dataclasses.replace(config, save_steps=saved_at)

    def crash_in_epoch_2(record: dict) -> None:
        if record.get("step") == per_epoch + 3:
            raise Interrupted

    out = tmp_path / "crashed"
    with pytest.raises(Interrupted):
        train_reward_model(noise_export, base_model, out, config, on_metrics=crash_in_epoch_2)
    saved = out / "checkpoints" / f"checkpoint-{saved_at}" / "early_stopping.json"
    assert [e["epoch"] for e in json.loads(saved.read_text())["evaluations"]] == [1]
    resumed = train_reward_model(noise_export, base_model, out, config)

    assert [e["epoch"] for e in resumed.epoch_evaluations] == [1, 2, 3]
    assert resumed.best_epoch == whole.best_epoch
    got = [e["selection_accuracy"] for e in resumed.epoch_evaluations]
    assert got == pytest.approx([e["selection_accuracy"] for e in whole.epoch_evaluations])
    prompts = [f"question {i}:" for i in range(20)]
    responses = [" ".join(WORDS[i % len(WORDS) :][:5]) for i in range(20)]
    a = load_reward_model(whole.output_dir).score(prompts[:20], responses[:20], normalize=False)
    b = load_reward_model(out).score(prompts[:20], responses[:20], normalize=False)
    assert b == pytest.approx(a, abs=1e-4)  # the same epoch's weights kept


# --------------------------------------------------------------------------- integrity, limits


def manifest_with_digests(directory: Path) -> None:
    """The manifest an export writes: each table's file name and sha256."""
    files = {
        table: {"path": f"{table}.jsonl", "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
        for table in ("pairs", "rankings")
        if (p := directory / f"{table}.jsonl").is_file()
    }
    (directory / "manifest.json").write_text(json.dumps({"schema_version": 1, "files": files}))


def test_a_table_modified_after_export_is_refused_unless_allowed(tmp_path):
    from training.reward.data import ExportModifiedError

    export = write_export(tmp_path / "export", n=8)
    manifest_with_digests(export)
    assert load_preferences(export).modified == []  # untouched: trains as before
    pairs = export / "pairs.jsonl"
    original = hashlib.sha256(pairs.read_bytes()).hexdigest()
    lines = pairs.read_text().splitlines()
    pairs.write_text("\n".join(lines[:-1]) + "\n")  # a row removed after the fact
    with pytest.raises(ExportModifiedError) as info:
        load_preferences(export)
    message = str(info.value)
    assert "\n" not in message and str(pairs) in message and "modified after export" in message
    assert "--allow-modified" in message and original[:12] in message
    # The K-wise table is checked against its own digest, and is untouched.
    assert load_preferences(export, loss="kwise").modified == []

    allowed = load_preferences(export, allow_modified=True)
    new = hashlib.sha256(pairs.read_bytes()).hexdigest()
    assert allowed.sha256 == new
    assert allowed.modified == [
        {"file": str(pairs), "sha256": new, "recorded": original, "by": "manifest.json"}
    ]


@pytest.mark.ml
def test_a_modified_export_writes_nothing_and_allowed_records_the_new_hash(tmp_path, base_model):
    from training.reward.data import ExportModifiedError

    export = write_export(tmp_path / "export", n=8)
    manifest_with_digests(export)
    with (export / "pairs.jsonl").open("a") as f:
        f.write(json.dumps({"prompt": "p", "chosen": "planted", "rejected": "x"}) + "\n")
    out = tmp_path / "out"
    with pytest.raises(ExportModifiedError):
        train_reward_model(export, base_model, out, fast(max_steps=1))
    assert not out.exists()
    result = train_reward_model(
        export, base_model, out, fast(max_steps=1, eval_each_epoch=False), allow_modified=True
    )
    run = json.loads((out / "training_config.json").read_text())
    assert (
        run["data_sha256"]
        == result.data_sha256
        == hashlib.sha256((export / "pairs.jsonl").read_bytes()).hexdigest()
    )
    assert [m["sha256"] for m in run["data_modified"]] == [result.data_sha256]


@pytest.mark.ml
def test_max_length_beyond_the_model_context_is_clamped_with_a_note(tmp_path, caplog):
    """A 32-position model and --max-length 512: long responses used to raise an IndexError."""
    texts = [" ".join(WORDS)] * 5
    short = build_tiny_causal_lm(tmp_path / "short", texts, max_positions=32, vocab_size=200)
    long_answer = " ".join(WORDS * 6)  # about 80 tokens: past the 32 positions
    rows = [
        {"prompt": f"question {i}:", "chosen": long_answer, "rejected": "apple"} for i in range(4)
    ]
    write_jsonl(tmp_path / "pairs.jsonl", rows)
    config = fast(max_length=512, max_steps=1, batch_size=4, eval_each_epoch=False)
    with caplog.at_level("WARNING", logger="training.reward.train"):
        result = train_reward_model(tmp_path / "pairs.jsonl", short, tmp_path / "out", config)
    assert "max_length 512 exceeds" in caplog.text and "using 32" in caplog.text
    assert result.truncated_count > 0
    run = json.loads((tmp_path / "out" / "training_config.json").read_text())
    assert run["config"]["max_length"] == 32 and run["max_length_requested"] == 512
    norm = json.loads((tmp_path / "out" / "reward_normalization.json").read_text())
    assert norm["max_length"] == 32  # PPO scores with the clamped length too


@pytest.mark.ml
def test_bf16_mixed_precision_keeps_fp32_weights_and_computes_in_bf16(
    export_dir, base_model, tmp_path, monkeypatch
):
    from safetensors.torch import load_file

    from training.reward import train as rm_train

    seen: set = set()
    real_load = rm_train.load_sequence_classifier

    def load_and_watch(*args, **kwargs):
        model = real_load(*args, **kwargs)
        assert {p.dtype for p in model.parameters()} == {torch.float32}  # master weights
        model.transformer.h[0].mlp.c_fc.register_forward_hook(
            lambda module, inputs, output: seen.add(output.dtype)
        )
        return model

    monkeypatch.setattr(rm_train, "load_sequence_classifier", load_and_watch)
    config = fast(mixed_precision="bf16", epochs=1, device="cpu")
    result = train_reward_model(export_dir, base_model, tmp_path / "rm", config)
    assert seen == {torch.bfloat16}
    saved = load_file(result.output_dir / "model.safetensors")
    assert {t.dtype for t in saved.values()} == {torch.float32}
    assert math.isfinite(result.accuracy)
    run = json.loads((result.output_dir / "training_config.json").read_text())
    assert run["config"]["mixed_precision"] == "bf16"


def test_mixed_precision_option_and_its_old_name():
    assert RewardConfig.from_options({"mixed_precision": "bf16"}).mixed_precision == "bf16"
    assert RewardConfig.from_options({"precision": "fp32"}).mixed_precision == "no"
    with pytest.raises(ValueError, match="mixed_precision must be auto, no, bf16 or fp16"):
        RewardConfig(mixed_precision="int8")


def test_a_multimodal_reward_model_reads_the_reward_off_the_last_real_token(tmp_path):
    """Gemma 3's head looks for padding in the text config: the loader sets it there too."""
    from transformers import (
        Gemma3Config,
        Gemma3ForSequenceClassification,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    from training.reward.scoring import load_sequence_classifier, score_token_ids
    from training.tiny import build_tokenizer

    tokenizer = build_tokenizer(["a reward model for images and text"] * 4, vocab_size=300)
    text = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        pad_token_id=0,  # the checkpoint's own pad id, not this tokenizer's
    )
    vision = SiglipVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
    )
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4)
    config.num_labels = 1
    torch.manual_seed(0)
    Gemma3ForSequenceClassification(config).save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    assert tokenizer.pad_token_id != 0

    model = load_sequence_classifier(tmp_path / "rm", tokenizer)

    assert model.config.get_text_config().pad_token_id == tokenizer.pad_token_id
    short, long = [5, 6, 7], [5, 6, 7, 8, 9, 10, 11]
    alone = score_token_ids(model, [short], tokenizer.pad_token_id)
    padded = score_token_ids(model, [short, long], tokenizer.pad_token_id)  # short padded to 7
    assert padded[0] == pytest.approx(alone[0], abs=1e-5)
