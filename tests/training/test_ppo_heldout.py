"""PPO evals use held-out prompts, never trained on, and report the KL on them."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from training.ppo import PPOConfig, train_ppo  # noqa: E402
from training.ppo import train as ppo_train  # noqa: E402
from training.ppo.rollout import held_out_count, held_out_split  # noqa: E402
from training.tiny import build_tiny_causal_lm  # noqa: E402

TEXTS = [f"the cat number {i} sat on the mat and said hello {i % 7}" for i in range(200)]
PROMPTS = [f"the cat {i}" for i in range(12)]


def count_a(prompts, responses):
    return [float(r.count("a")) for r in responses]


def config(**overrides) -> PPOConfig:
    base = dict(
        total_episodes=12,
        batch_size=4,
        mini_batches=1,
        ppo_epochs=2,
        lr=3e-3,
        response_length=5,
        device="cpu",
        eval_every=1,
        num_eval_prompts=3,
        save_every=0,
        progress=False,
    )
    return PPOConfig(**{**base, **overrides})


def test_split_is_by_content_and_sized_by_count_or_fraction():
    train, held = held_out_split(PROMPTS, 3)
    assert len(held) == 3 and sorted(train + held) == list(range(12))
    reversed_prompts = PROMPTS[::-1]
    _, held_reversed = held_out_split(reversed_prompts, 3)
    assert {reversed_prompts[i] for i in held_reversed} == {PROMPTS[i] for i in held}
    assert held_out_count(config(eval_fraction=0.25), 12) == 3
    assert held_out_count(config(num_eval_prompts=5), 12) == 5
    with pytest.raises(ValueError, match="leaves none of the 3 prompts to train on"):
        held_out_count(config(num_eval_prompts=3), 3)
    with pytest.raises(ValueError, match="eval_fraction must be in"):
        config(eval_fraction=1.5)


@pytest.mark.ml
def test_eval_prompts_are_never_trained_on_and_their_kl_is_reported(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    policy = build_tiny_causal_lm(tmp_path / "lm", TEXTS, vocab_size=300)
    trained: set = set()
    real = ppo_train.score_and_shape

    def spy(batch, prompts, *args, **kwargs):
        trained.update(prompts)
        return real(batch, prompts, *args, **kwargs)

    monkeypatch.setattr(ppo_train, "score_and_shape", spy)
    result = train_ppo(policy, count_a, PROMPTS, tmp_path / "out", config())
    samples = [json.loads(x) for x in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    eval_prompts = {r["prompt"] for r in samples}
    _, held = held_out_split(PROMPTS, 3)
    assert eval_prompts == {PROMPTS[i] for i in held}
    assert not eval_prompts & trained
    assert trained == set(PROMPTS) - eval_prompts  # 3 steps x 4 = every training prompt once
    assert result.num_eval_prompts == 3
    # Step 0: the policy is the reference, KL exactly 0.
    assert all(r["kl"] == 0.0 for r in samples if r["step"] == 0)
    for row in result.history:
        at_step = [r for r in samples if r["step"] == row["step"]]
        assert len(at_step) == 3
        assert row["eval_kl"] == pytest.approx(sum(r["kl"] for r in at_step) / 3)
        assert row["eval_score"] == pytest.approx(sum(r["score"] for r in at_step) / 3)
    assert result.eval_kl == result.history[-1]["eval_kl"] == result.metrics["eval_kl"]
    assert result.eval_kl != 0.0  # the policy moved: the held-out KL says by how much


@pytest.mark.ml
def test_without_evals_nothing_is_held_out(tmp_path):
    torch.set_num_threads(1)
    policy = build_tiny_causal_lm(tmp_path / "lm", TEXTS, vocab_size=300)
    result = train_ppo(
        policy, count_a, PROMPTS[:4], tmp_path / "out", config(eval_every=0, total_episodes=4)
    )
    assert result.num_eval_prompts == 0 and result.eval_kl is None
    assert "eval_kl" not in result.metrics
