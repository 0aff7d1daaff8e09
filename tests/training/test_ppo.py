"""PPO: hand-computed math, the rollout/logprob contract, and behaviour on tiny models."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import FrozenInstanceError, replace
from pathlib import Path

import pytest
import torch

from training import ppo
from training.ppo import (
    CallableLoadError,
    PPOConfig,
    load_callable,
    train_ppo,
)
from training.ppo import models as ppo_models
from training.ppo.math import (
    INVALID_LOGPROB,
    AdaptiveKLController,
    apply_missing_eos_penalty,
    compute_gae,
    entropy_from_logits,
    explained_variance,
    kl_k1,
    kl_k3,
    logprobs_from_logits,
    masked_mean,
    masked_whiten,
    policy_loss,
    token_rewards,
    truncate_after_eos,
    value_loss,
)
from training.ppo.rollout import left_pad, rollout

TEXTS = [f"the cat number {i} sat on the mat and said hello {i % 7}" for i in range(200)]
PROMPTS = [f"the cat {i}" for i in range(32)]
TIMING_KEYS = {
    "step_time",
    "episodes_per_s",
    "time_generation",
    "time_scoring",
    "time_update",
}


def count_a(prompts: list, responses: list[str]) -> list[float]:
    """Reward for the behaviour tests: how many letters 'a' the response holds."""
    return [float(r.count("a")) for r in responses]


def tiny_config(**overrides) -> PPOConfig:
    base = dict(
        total_episodes=16 * 16,
        batch_size=16,
        mini_batches=2,
        ppo_epochs=4,
        lr=3e-3,
        response_length=8,
        temperature=1.0,
        kl_coef=0.05,
        device="cpu",
        eval_every=0,
        save_every=0,
        missing_eos_penalty=None,
        progress=False,
    )
    return PPOConfig(**{**base, **overrides})


# =========================================================================== pure math


def test_masked_mean_and_whiten_by_hand():
    values = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[True, True, True, False]])
    assert masked_mean(values, mask).item() == pytest.approx(2.0)
    # mean 2, Bessel-corrected variance ((1 + 0 + 1) / 2) = 1: whitening is x - 2.
    whitened = masked_whiten(values, mask)
    torch.testing.assert_close(whitened, torch.tensor([[-1.0, 0.0, 1.0, 0.0]]))
    # Without the shift the mean comes back: (x - 2) / 1 + 2 = x on valid tokens.
    kept = masked_whiten(values, mask, shift_mean=False)
    torch.testing.assert_close(kept, torch.tensor([[1.0, 2.0, 3.0, 0.0]]))
    # The padded 100 must not leak in: whitening the valid part alone gives the same numbers.
    torch.testing.assert_close(masked_whiten(values[:, :3], mask[:, :3]), whitened[:, :3])


def test_compute_gae_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [2.0, 9.0, 9.0]])
    values = torch.tensor([[0.5, 0.5, 0.5], [1.0, 7.0, 7.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    advantages, returns = compute_gae(rewards, values, mask, gamma=1.0, lam=0.95)
    # Row 0: deltas (0, 0, 0.5); A2 = 0.5, A1 = 0.95 * 0.5, A0 = 0.95^2 * 0.5.
    # Row 1: only the first token is valid, V beyond it is 0: delta = 2 + 0 - 1 = 1.
    torch.testing.assert_close(advantages, torch.tensor([[0.45125, 0.475, 0.5], [1.0, 0.0, 0.0]]))
    torch.testing.assert_close(returns, torch.tensor([[0.95125, 0.975, 1.0], [2.0, 0.0, 0.0]]))
    # Discounting: gamma 0.5, lambda 1, deltas (1, 1) -> A = (1 + 0.5, 1).
    adv, _ = compute_gae(
        torch.ones(1, 2), torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool), 0.5, 1.0
    )
    torch.testing.assert_close(adv, torch.tensor([[1.5, 1.0]]))


def test_compute_gae_matches_the_textbook_loop():
    torch.manual_seed(0)
    rewards, values = torch.randn(4, 7), torch.randn(4, 7)
    lengths = torch.tensor([7, 3, 1, 5])
    mask = torch.arange(7)[None] < lengths[:, None]
    gamma, lam = 0.99, 0.9
    expected = torch.zeros(4, 7)
    for b in range(4):
        last = 0.0
        for t in reversed(range(int(lengths[b]))):
            next_value = values[b, t + 1] if t + 1 < lengths[b] else 0.0
            delta = rewards[b, t] + gamma * next_value - values[b, t]
            last = delta + gamma * lam * last
            expected[b, t] = last
    advantages, returns = compute_gae(rewards, values, mask, gamma, lam)
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, (expected + values) * mask)


def test_kl_estimators_by_hand():
    logprobs = torch.tensor([-1.0, -2.0, -1.5])
    ref = torch.tensor([-2.0, -1.0, -1.5])
    torch.testing.assert_close(kl_k1(logprobs, ref), torch.tensor([1.0, -1.0, 0.0]))
    # k3 = (r - 1) - log r, r = q/p: r = e^-1 -> 0.36788; r = e -> e - 2.
    torch.testing.assert_close(
        kl_k3(logprobs, ref), torch.tensor([math.exp(-1.0), math.e - 2.0, 0.0])
    )


def test_adaptive_kl_controller_by_hand():
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    # KL twice the target: the error is clipped to +0.2 -> 0.1 * (1 + 0.2 * 100 / 10000).
    assert ctl.update(12.0, n_steps=100) == pytest.approx(0.1002)
    # KL half the target: error -0.5 clipped to -0.2.
    assert ctl.update(3.0, n_steps=100) == pytest.approx(0.1002 * 0.998)
    # Slightly above target: unclipped proportional error 0.1.
    assert ctl.update(6.6, n_steps=10_000) == pytest.approx(0.1002 * 0.998 * 1.1)


def test_policy_loss_by_hand():
    old = torch.zeros(1, 4)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1, 50.0]]))
    advantages = torch.tensor([[1.0, -1.0, 1.0, 100.0]])
    mask = torch.tensor([[True, True, True, False]])  # the wild last token must not count
    loss, clipfrac, approx_kl = policy_loss(new, old, advantages, mask, cliprange=0.2)
    # token 0: max(-1.5, -1.2) = -1.2 (clipped); token 1: max(0.5, 0.8) = 0.8 (clipped);
    # token 2: ratio 1.1 inside the range: -1.1.
    assert loss.item() == pytest.approx((-1.2 + 0.8 - 1.1) / 3)
    assert clipfrac.item() == pytest.approx(2 / 3)
    expected_kl = 0.5 * (math.log(1.5) ** 2 + math.log(0.5) ** 2 + math.log(1.1) ** 2) / 3
    assert approx_kl.item() == pytest.approx(expected_kl)


def test_value_loss_by_hand():
    old = torch.tensor([[0.0, 0.0, 0.0]])
    new = torch.tensor([[0.5, 0.1, 9.0]])
    returns = torch.tensor([[1.0, 1.0, 0.0]])
    mask = torch.tensor([[True, True, False]])
    loss, clipfrac = value_loss(new, old, returns, mask, cliprange_value=0.2)
    # token 0: max((0.5-1)^2, (0.2-1)^2) = 0.64 (clipped); token 1: 0.81 both ways.
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.81) / 2)
    assert clipfrac.item() == pytest.approx(0.5)


def test_truncate_after_eos_and_missing_eos_penalty():
    eos, pad = 2, 1
    responses = torch.tensor([[5, 2, 7, 8], [5, 6, 7, 8], [2, 3, 2, 4], [5, 1, 1, 1], [9, 3, 9, 4]])
    truncated, lengths, has_eos = truncate_after_eos(responses, [eos, 3], pad)
    assert truncated.tolist() == [
        [5, 2, 1, 1],
        [5, 6, 7, 8],
        [2, 1, 1, 1],
        [5, 1, 1, 1],
        [9, 3, 1, 1],
    ]
    assert lengths.tolist() == [2, 4, 1, 1, 2]
    assert has_eos.tolist() == [True, False, True, False, True]
    # A single EOS id works too; id 3 is then an ordinary token.
    _, lengths_one, has_one = truncate_after_eos(responses[4:], eos, pad)
    assert lengths_one.tolist() == [4] and has_one.tolist() == [False]

    scores = torch.tensor([1.0, 1.0, 0.5, 0.0, 2.0])
    penalised = apply_missing_eos_penalty(scores, has_eos, 2.0)
    torch.testing.assert_close(penalised, torch.tensor([1.0, -1.0, 0.5, -2.0, 2.0]))
    assert apply_missing_eos_penalty(scores, has_eos, None) is scores


def test_token_rewards_put_the_score_on_the_last_valid_token():
    scores = torch.tensor([3.0, 5.0])
    kl = torch.tensor([[0.1, 0.2, 0.0], [0.3, 0.0, 0.0]])
    rewards, non_score = token_rewards(scores, kl, torch.tensor([2, 1]), kl_coef=0.5)
    torch.testing.assert_close(non_score, torch.tensor([[-0.05, -0.1, 0.0], [-0.15, 0.0, 0.0]]))
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, 2.9, 0.0], [4.85, 0.0, 0.0]]))


def test_logprobs_and_entropy_use_the_temperature():
    logits = torch.tensor([[[0.0, 1.0]]])
    ids = torch.tensor([[1]])
    # softmax([0, 1] / 0.5) = softmax([0, 2]): log p(1) = 2 - log(1 + e^2).
    hot = logprobs_from_logits(logits, ids, temperature=0.5)
    assert hot.item() == pytest.approx(2.0 - math.log(1.0 + math.e**2))
    assert logprobs_from_logits(logits, ids, 1.0).item() == pytest.approx(
        1.0 - math.log(1.0 + math.e)
    )
    p = 1.0 / (1.0 + math.e**2)
    expected_entropy = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    assert entropy_from_logits(logits, 0.5).item() == pytest.approx(expected_entropy, rel=1e-5)


def test_explained_variance():
    returns = torch.tensor([[1.0, 2.0, 3.0, 0.0]])
    mask = torch.tensor([[True, True, True, False]])
    assert explained_variance(returns, returns, mask) == pytest.approx(1.0)
    assert explained_variance(torch.zeros_like(returns) + 2.0, returns, mask) == pytest.approx(0.0)


# =========================================================================== config and callables


def test_config_validation_and_from_options():
    with pytest.raises(ValueError, match="kl_estimator"):
        PPOConfig(kl_estimator="k2")
    with pytest.raises(ValueError, match="divisible"):
        PPOConfig(batch_size=10, mini_batches=4)
    with pytest.raises(ValueError, match="total_episodes"):
        PPOConfig(total_episodes=8, batch_size=16)
    # checkpoints(out)[:-0] is empty: 0 used to keep every checkpoint instead of none.
    for keep in (0, -1):
        with pytest.raises(ValueError, match="keep_checkpoints must be at least 1"):
            PPOConfig(keep_checkpoints=keep)
    config = PPOConfig.from_options(
        {
            "total_episodes": "128",
            "batch_size": 32,
            "kl_coef": "0.2",
            "lora": True,
            "lora_target_modules": "q_proj, v_proj",
            "target_kl": None,  # an unset CLI option keeps the default
            "missing_eos_penalty": "none",  # switched off from the command line
            "policy": "some/path",  # not a config field: ignored
            "verbosity": 1,
        }
    )
    assert (config.total_episodes, config.batch_size, config.kl_coef) == (128, 32, 0.2)
    assert config.lora and config.lora_target_modules == ("q_proj", "v_proj")
    assert config.target_kl is None and config.num_steps == 4
    assert config.missing_eos_penalty is None
    with pytest.raises(ValueError, match="option lr"):
        PPOConfig.from_options({"lr": "fast"})
    assert json.loads(json.dumps(config.to_dict()))["lora_target_modules"] == ["q_proj", "v_proj"]
    with pytest.raises(FrozenInstanceError):
        config.lr = 1.0  # type: ignore[misc]


def test_load_callable(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        "def length(prompts, responses):\n    return [len(r) for r in responses]\n"
        "class Judges:\n    @staticmethod\n    def constant(prompts, responses):\n"
        "        return [1.0] * len(responses)\n"
        "NOT_CALLABLE = 3\n"
    )
    (tmp_path / "broken_rewards.py").write_text("import does_not_exist_anywhere\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    for name in ("my_rewards", "broken_rewards"):
        sys.modules.pop(name, None)
    assert load_callable("my_rewards:length")(["p"], ["abc"]) == [3]
    assert load_callable("my_rewards:Judges.constant")(["p"], ["x"]) == [1.0]
    with pytest.raises(CallableLoadError, match="module:function"):
        load_callable("my_rewards")
    with pytest.raises(CallableLoadError, match="no such module"):
        load_callable("nowhere_to_be_found:f")
    with pytest.raises(CallableLoadError, match="has no attribute"):
        load_callable("my_rewards:missing")
    with pytest.raises(CallableLoadError, match="not a callable"):
        load_callable("my_rewards:NOT_CALLABLE")
    with pytest.raises(CallableLoadError, match="does_not_exist_anywhere"):
        load_callable("broken_rewards:f")


# =========================================================================== tiny models


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    from training.tiny import build_tiny_causal_lm

    torch.set_num_threads(1)
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "lm", TEXTS, vocab_size=300)


@pytest.fixture(scope="module")
def behaviour_runs(tiny_lm, tmp_path_factory) -> dict[str, ppo.PPOResult]:
    """One normal run and one with a huge KL coefficient, same seed and prompts."""
    runs = {}
    for name, kl_coef in (("normal", 0.05), ("huge_kl", 20.0)):
        out = tmp_path_factory.mktemp(name)
        config = tiny_config(kl_coef=kl_coef, eval_every=8, num_eval_prompts=3)
        runs[name] = train_ppo(tiny_lm, count_a, PROMPTS, out, config, judge=count_a)
    return runs


@pytest.mark.ml
def test_rollout_logprobs_equal_generation_and_recomputed_logprobs(tiny_lm):
    """Temperature in every logprob; left padding and positions as generation sees them."""
    from training.modeling import encode_prompt, load_causal_lm

    torch.manual_seed(0)
    model, tokenizer = load_causal_lm(tiny_lm, device="cpu")
    config = tiny_config(temperature=0.7, response_length=6, rollout_batch_size=2)
    stop_ids = [tokenizer.eos_token_id]
    prompts = ["the cat", "hello there my friend the cat sat", "mat", "on the"]
    queries = left_pad([encode_prompt(tokenizer, p) for p in prompts], tokenizer.pad_token_id)
    gen_config = ppo.generation_config(config, tokenizer, stop_ids)
    value_model, _ = ppo.build_value_model(tiny_lm, tokenizer, None, None, torch.float32)
    batch = rollout(model, model, value_model, tokenizer, queries, gen_config, config, stop_ids)
    mask = batch.mask
    assert batch.ref_logprobs[mask].equal(batch.logprobs[mask])  # same weights: identical
    assert (batch.logprobs[~mask] == INVALID_LOGPROB).all()

    # Each episode alone, without any padding, recomputed from scratch.
    for i in range(len(prompts)):
        ids = batch.query_responses[i][batch.query_responses[i] != tokenizer.pad_token_id]
        n_prompt = len(encode_prompt(tokenizer, prompts[i]))
        logits = model(ids[None]).logits[0, n_prompt - 1 : -1]
        logits[:, tokenizer.pad_token_id] = ppo.SUPPRESSED_LOGIT
        alone = logprobs_from_logits(logits[None], ids[None, n_prompt:], 0.7)[0]
        torch.testing.assert_close(
            alone, batch.logprobs[i, : int(batch.lengths[i])], atol=1e-5, rtol=0
        )

    # The distribution generation sampled from (raw logits / temperature, with the KV cache).
    torch.manual_seed(1)
    out = model.generate(
        input_ids=queries,
        attention_mask=queries != tokenizer.pad_token_id,
        generation_config=gen_config,
        output_logits=True,
        return_dict_in_generate=True,
    )
    responses, lengths, _ = truncate_after_eos(
        out.sequences[:, queries.size(1) :], stop_ids, tokenizer.pad_token_id
    )
    gen_logits = torch.stack(out.logits, dim=1)
    gen_logits[..., tokenizer.pad_token_id] = ppo.SUPPRESSED_LOGIT
    at_sampling = logprobs_from_logits(gen_logits, responses, 0.7)
    recomputed = logprobs_from_logits(
        ppo.response_logits(
            model, torch.cat([queries, responses], 1), queries.size(1), tokenizer.pad_token_id
        ),
        responses,
        0.7,
    )
    valid = torch.arange(responses.size(1))[None] < lengths[:, None]
    torch.testing.assert_close(at_sampling[valid], recomputed[valid], atol=1e-5, rtol=0)


@pytest.mark.ml
def test_ppo_raises_reward_with_bounded_kl_and_writes_outputs(behaviour_runs, tiny_lm):
    result = behaviour_runs["normal"]
    history = result.history
    assert len(history) == 16 and history[-1]["step"] == 16 and result.episodes == 256
    # KL is exactly 0 on the first rollout: policy and reference are the same weights.
    assert history[0]["kl"] == 0.0 and history[0]["non_score_reward"] == 0.0
    first = sum(r["score"] for r in history[:4]) / 4
    last = sum(r["score"] for r in history[-4:]) / 4
    assert last > first + 0.8, (first, last)
    assert max(r["kl"] for r in history) < 20.0  # nats per 8-token episode
    # The k3 figure reports use is never negative, and follows the k1 sum once KL is real.
    assert history[0]["kl_k3"] == 0.0 and all(r["kl_k3"] >= 0.0 for r in history)
    assert history[-1]["kl_k3"] > 0.0
    for key in (
        "score_raw",
        "entropy",
        "response_length",
        "eos_rate",
        "clipfrac",
        "approx_kl",
        "value_loss",
        "explained_variance",
        "lr",
        "gold_score",
        "rlhf_reward",
        "kl_coef",
        "grad_norm",
        "non_score_reward",
    ):
        assert key in history[-1], key
    # Every logged figure is documented (ptx_loss is logged with ptx_data only).
    assert set(history[-1]) == set(ppo.METRICS) - {"ptx_loss"}
    assert history[0]["gold_score"] == pytest.approx(history[0]["score"])  # judge = reward here
    assert history[0]["lr"] == pytest.approx(3e-3) and history[-1]["lr"] < history[0]["lr"]

    out = result.output_dir
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 17))
    assert json.loads((out / "training_config.json").read_text())["kl_coef"] == 0.05
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert sorted({s["step"] for s in samples}) == [0, 8, 16]
    assert all(len([s for s in samples if s["step"] == k]) == 3 for k in (0, 8, 16))
    assert {"prompt", "response", "score", "gold"} <= set(samples[0])

    from training.modeling import load_causal_lm

    trained, _ = load_causal_lm(out, device="cpu")  # plain HF directory, model + tokenizer
    initial, _ = load_causal_lm(tiny_lm, device="cpu")
    assert not (out / "adapter_config.json").exists()
    ids = torch.tensor([[5, 6, 7, 8]])
    assert not torch.allclose(trained(ids).logits, initial(ids).logits)


@pytest.mark.ml
def test_huge_kl_coef_keeps_the_policy_near_the_reference(behaviour_runs):
    normal, tight = behaviour_runs["normal"].history, behaviour_runs["huge_kl"].history
    late_kl = sum(r["kl"] for r in tight[-4:]) / 4
    assert late_kl < 1.0
    assert late_kl < 0.2 * sum(r["kl"] for r in normal[-4:]) / 4
    gain = sum(r["score"] for r in tight[-4:]) / 4 - sum(r["score"] for r in tight[:4]) / 4
    assert gain < 0.5


@pytest.mark.ml
@pytest.mark.parametrize("with_ptx", [False, True], ids=["plain", "ptx"])
def test_resume_continues_exactly_like_an_uninterrupted_run(tiny_lm, tmp_path, with_ptx):
    config = tiny_config(
        total_episodes=8 * 4,
        batch_size=8,
        ppo_epochs=2,
        save_every=2,
        gradient_accumulation_steps=2,
    )
    if with_ptx:  # PPO-ptx batches are drawn per step: a resumed step draws the same ones
        data = tmp_path / "ptx.jsonl"
        data.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS[:50]))
        config = replace(config, ptx_data=str(data))
    straight = train_ppo(tiny_lm, count_a, PROMPTS, tmp_path / "straight", config)

    class Preempted(Exception):
        pass

    def crash_after_step_3(row):
        if row["step"] == 3:  # after the step-2 checkpoint and the step-3 metrics row
            raise Preempted

    with pytest.raises(Preempted):
        train_ppo(
            tiny_lm, count_a, PROMPTS, tmp_path / "resumed", config, on_metrics=crash_after_step_3
        )
    resumed = train_ppo(tiny_lm, count_a, PROMPTS, tmp_path / "resumed", config)
    assert resumed.resumed_from == 2
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]  # noqa: E731
    assert strip(resumed.history) == strip(straight.history)
    logged = [
        json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in logged] == [1, 2, 3, 4]  # the lost step-3 row was replaced
    with pytest.raises(ValueError, match="different lr"):
        train_ppo(tiny_lm, count_a, PROMPTS, tmp_path / "straight", replace(config, lr=1e-4))
    from safetensors.torch import load_file

    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.ml
def test_lora_reference_is_the_policy_with_its_adapter_disabled(tiny_lm, tmp_path, monkeypatch):
    from training.modeling import load_causal_lm

    base, tokenizer = load_causal_lm(tiny_lm, device="cpu")
    policy = ppo_models.apply_lora(
        load_causal_lm(tiny_lm, device="cpu")[0], tiny_config(lora=True, lora_r=4), "CAUSAL_LM"
    )
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    fresh = policy(ids).logits
    assert torch.equal(fresh, base(ids).logits)  # LoRA B starts at 0: the policy is the reference
    for name, param in policy.named_parameters():
        if "lora_B" in name:
            param.data.normal_()
    with policy.disable_adapter():
        assert torch.equal(policy(ids).logits, base(ids).logits)
    assert not torch.allclose(policy(ids).logits, base(ids).logits)

    loads = []
    real_load = ppo_models.load_causal_lm

    def counting_load(*args, **kwargs):
        loads.append(args)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(ppo_models, "load_causal_lm", counting_load)
    config = tiny_config(total_episodes=32, lora=True, lora_r=4, lr=1e-2)
    result = train_ppo(tiny_lm, count_a, PROMPTS, tmp_path / "lora", config)
    assert len(loads) == 1  # one base model: no second copy for the reference
    assert result.history[0]["kl"] == 0.0 and result.history[1]["kl"] != 0.0
    assert not (tmp_path / "lora" / "adapter_config.json").exists()  # merged weights
    merged, _ = real_load(tmp_path / "lora", device="cpu")
    assert not torch.allclose(merged(ids).logits, base(ids).logits)


@pytest.mark.ml
def test_reward_model_directory_and_value_model_initialisation(tiny_lm, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from training.modeling import load_tokenizer

    rm_dir = tmp_path / "rm"
    torch.manual_seed(3)
    rm = AutoModelForSequenceClassification.from_pretrained(tiny_lm, num_labels=1)
    rm.config.pad_token_id = load_tokenizer(tiny_lm).pad_token_id
    rm.save_pretrained(rm_dir)
    load_tokenizer(tiny_lm).save_pretrained(rm_dir)
    (rm_dir / "reward_normalization.json").write_text(
        json.dumps({"bias": 0.25, "std": 1.0, "max_length": 64})
    )

    from training.reward import load_reward_model

    scorer = load_reward_model(rm_dir, device="cpu", dtype="float32")
    tokenizer = load_tokenizer(tiny_lm)
    value_model, source = ppo.build_value_model(
        tiny_lm, tokenizer, scorer.model, scorer.tokenizer, torch.float32
    )
    assert source == "reward_model"
    rm_state = scorer.model.state_dict()
    assert all(torch.equal(v, rm_state[k]) for k, v in value_model.state_dict().items())
    assert value_model is not scorer.model  # a separate network, trained on its own

    # A callable reward: the critic is the policy's transformer with a fresh scalar head.
    value_model, source = ppo.build_value_model(tiny_lm, tokenizer, None, None, torch.float32)
    policy_state = ppo_models.load_causal_lm(tiny_lm, device="cpu")[0].state_dict()
    assert source == "policy"
    assert torch.equal(
        value_model.transformer.h[0].attn.c_attn.weight,
        policy_state["transformer.h.0.attn.c_attn.weight"],
    )

    config = tiny_config(
        total_episodes=32,
        missing_eos_penalty=1.0,
        kl_estimator="k3",
        target_kl=0.5,
        horizon=100,
        lora=True,
        lora_r=4,  # the critic is then a SEQ_CLS adapter on the reward model copy
    )
    result = train_ppo(tiny_lm, rm_dir, PROMPTS, tmp_path / "out", config)
    row = result.history[0]
    # Adaptive KL: the first rollout has KL 0 < target, so beta shrinks by 1 - 0.2 * 16 / 100.
    assert result.history[1]["kl_coef"] == pytest.approx(0.05 * (1 - 0.2 * 16 / 100))
    assert row["kl"] == 0.0 and result.history[1]["kl"] >= 0.0  # k3 is never negative
    assert row["score_raw"] - row["score"] == pytest.approx(0.25, abs=1e-5)  # the stored bias
    # Scores feed the reward: without EOS the penalty comes off before the KL term is added.
    assert row["rlhf_reward"] == pytest.approx(
        row["score"] - (1 - row["eos_rate"]) * 1.0 + row["non_score_reward"], abs=1e-5
    )
    assert (
        json.loads((tmp_path / "out" / "training_config.json").read_text())["value_model_init"]
        == "reward_model"
    )


@pytest.mark.ml
def test_dropout_is_disabled_everywhere(tiny_lm):
    from transformers import AutoConfig, GPT2LMHeadModel

    config = AutoConfig.from_pretrained(tiny_lm)
    config.resid_pdrop = config.attn_pdrop = config.embd_pdrop = 0.3
    model = GPT2LMHeadModel(config)
    ppo.disable_dropout(model)
    model.train()  # even in training mode, nothing is random any more
    ids = torch.tensor([[5, 6, 7, 8]])
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    assert torch.equal(model(ids).logits, model(ids).logits)


@pytest.mark.ml
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_attention_dropout_copied_into_modules_is_disabled_too(attention, tmp_path):
    # Llama-family attention keeps its own float copy of config.attention_dropout and applies
    # it in train mode (the update runs in train mode under gradient checkpointing).
    from transformers import LlamaForCausalLM

    from training.tiny import build_tiny_causal_lm

    path = build_tiny_causal_lm(
        tmp_path / "llama", ["a b c d e f"] * 5, arch="llama", vocab_size=64
    )
    model = LlamaForCausalLM.from_pretrained(
        path, attention_dropout=0.3, attn_implementation=attention
    )
    assert model.model.layers[0].self_attn.attention_dropout == 0.3
    ppo.disable_dropout(model)
    model.train()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    assert model.model.layers[0].self_attn.attention_dropout == 0.0
    assert torch.equal(model(ids).logits, model(ids).logits)


@pytest.mark.ml
def test_bad_reward_callable_fails_clearly(tiny_lm, tmp_path):
    config = tiny_config(total_episodes=16)
    with pytest.raises(ValueError, match="returned 1 scores for 16 responses"):
        train_ppo(tiny_lm, lambda p, r: [0.0], PROMPTS, tmp_path / "bad", config)
    with pytest.raises(CallableLoadError, match="no such module"):
        train_ppo(tiny_lm, "no_such_reward_module:score", PROMPTS, tmp_path / "bad", config)


@pytest.mark.ml
def test_first_update_scores_tokens_exactly_as_the_rollout_did(tiny_lm, tmp_path, monkeypatch):
    """One epoch, one minibatch: the update's logprobs come from the unchanged policy, so the
    ratio is 1 unless some path (temperature, padding, positions) differs from the rollout."""
    config = tiny_config(total_episodes=16, mini_batches=1, ppo_epochs=1, temperature=0.6)
    # Chat prompts this time: the reward gets each whole chat back, as SPEC section 4 says.
    chats = [
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": p}] for p in PROMPTS
    ]
    seen = []

    def reward(prompts, responses):
        seen.extend(prompts)
        return count_a(prompts, responses)

    # The judge by name, as the command passes it: module:function from the current directory.
    (tmp_path / "gold_judges.py").write_text("def minus_one(p, r):\n    return [-1.0] * len(r)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # load_callable adds the cwd to it
    row = train_ppo(
        tiny_lm, reward, chats, tmp_path / "one", config, judge="gold_judges:minus_one"
    ).history[0]
    assert row["gold_score"] == -1.0
    assert len(seen) == 16 and all(p in chats for p in seen)
    assert row["approx_kl"] < 1e-10
    assert row["ratio"] == pytest.approx(1.0, abs=1e-6)
    assert row["clipfrac"] == 0.0


@pytest.mark.ml
def test_reward_model_with_another_tokenizer_scores_re_tokenized_text(tiny_lm, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from training.modeling import load_tokenizer
    from training.reward import load_reward_model
    from training.tiny import build_tiny_causal_lm

    other = build_tiny_causal_lm(
        tmp_path / "other_lm", [t.upper() + " zebra" for t in TEXTS], arch="llama", vocab_size=280
    )
    rm = AutoModelForSequenceClassification.from_pretrained(other, num_labels=1)
    rm.config.pad_token_id = load_tokenizer(other).pad_token_id
    rm.save_pretrained(tmp_path / "rm")
    load_tokenizer(other).save_pretrained(tmp_path / "rm")

    config = tiny_config(total_episodes=16, eval_every=1, num_eval_prompts=4)
    result = train_ppo(tiny_lm, tmp_path / "rm", PROMPTS, tmp_path / "out", config)
    run = json.loads((tmp_path / "out" / "training_config.json").read_text())
    assert run["value_model_init"] == "policy"  # the RM's vocabulary cannot read policy tokens
    # The logged eval score is the RM's score of the decoded text, rendered with its tokenizer.
    samples = [json.loads(x) for x in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    first = [s for s in samples if s["step"] == 0]
    scorer = load_reward_model(tmp_path / "rm", device="cpu", dtype="float32")
    expected = scorer.score(
        [s["prompt"] for s in first], [s["response"] for s in first], normalize=False
    )
    assert [s["score_raw"] for s in first] == pytest.approx(expected, abs=1e-5)
    assert math.isfinite(result.metrics["score_raw"])


class _Planted:
    """Unpickling this runs code: it touches the marker file (what a planted file could do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.ml
def test_resume_loads_nothing_from_a_checkpoint_with_planted_or_modified_files(tiny_lm, tmp_path):
    from training.ppo.checkpoint import MANIFEST_FILE, CheckpointError, write_manifest

    config = tiny_config(
        total_episodes=8 * 2, batch_size=8, mini_batches=1, ppo_epochs=1, save_every=1
    )
    out = tmp_path / "out"
    train_ppo(tiny_lm, count_a, PROMPTS, out, config)
    ckpt = out / "checkpoints" / "step-1"
    manifest = json.loads((ckpt / MANIFEST_FILE).read_text())["files"]
    # Everything we resume from is ours: JSON, safetensors, and accelerate's tensor pickles.
    assert {"scheduler.json", "trainer_state.json", "model.safetensors", "optimizer.bin"} <= set(
        manifest
    )
    assert not any(name.startswith("custom_checkpoint") for name in manifest)
    marker = tmp_path / "code-ran"

    # 1. A pickle planted where accelerate loads custom state with weights_only=False.
    torch.save(_Planted(marker), ckpt / "custom_checkpoint_0.pkl")
    with pytest.raises(CheckpointError, match="custom_checkpoint_0.pkl is not a file train_ppo"):
        train_ppo(tiny_lm, count_a, PROMPTS, out, config)
    (ckpt / "custom_checkpoint_0.pkl").unlink()

    # 2. A file of ours replaced after the fact.
    original = (ckpt / "optimizer.bin").read_bytes()
    torch.save(_Planted(marker), ckpt / "optimizer.bin")
    with pytest.raises(CheckpointError, match="optimizer.bin was modified"):
        train_ppo(tiny_lm, count_a, PROMPTS, out, config)

    # 3. Even a forged manifest does not get code run: tensors are loaded with weights_only.
    write_manifest(ckpt)
    with pytest.raises(Exception, match="(?i)weights.only"):
        train_ppo(tiny_lm, count_a, PROMPTS, out, config)
    assert not marker.exists()

    # 4. A checkpoint folder without a manifest (older version, or planted) is refused too.
    (ckpt / "optimizer.bin").write_bytes(original)
    (ckpt / MANIFEST_FILE).unlink()
    with pytest.raises(CheckpointError, match="has no checkpoint_manifest.json"):
        train_ppo(tiny_lm, count_a, PROMPTS, out, config)
    write_manifest(ckpt)
    assert train_ppo(tiny_lm, count_a, PROMPTS, out, config).resumed_from == 1
    assert not marker.exists()


@pytest.mark.ml
def test_logged_kl_is_the_policy_to_reference_estimate(behaviour_runs):
    """The KL in the reward is log pi - log pi_ref: its mean agrees with k3 and is non-negative.

    With the direction flipped (log pi_ref - log pi) the k1 figure goes negative while k3,
    computed separately, stays positive.
    """
    history = behaviour_runs["normal"].history[1:]  # step 1: policy == reference, both 0
    k1 = sum(r["kl"] for r in history) / len(history)
    k3 = sum(r["kl_k3"] for r in history) / len(history)
    assert k1 > 0 and k3 > 0
    assert k1 == pytest.approx(k3, rel=0.5), (k1, k3)


@pytest.mark.ml
def test_kl_and_advantages_handed_to_the_update(tiny_lm, tmp_path, monkeypatch):
    """Per step: the KL in the rewards is k1 in the policy -> reference direction, and the
    advantages the update gets are whitened (mean 0, std 1 over valid tokens)."""
    from training.ppo import train as ppo_train

    seen = []
    real_update = ppo_train.ppo_update

    def spy(accelerator, model, trainable, optimizer, batch, shaped, *args, **kwargs):
        seen.append((batch, shaped))
        return real_update(accelerator, model, trainable, optimizer, batch, shaped, *args, **kwargs)

    monkeypatch.setattr(ppo_train, "ppo_update", spy)
    config = tiny_config(total_episodes=8 * 3, batch_size=8, mini_batches=1, ppo_epochs=2)
    history = train_ppo(tiny_lm, count_a, PROMPTS, tmp_path / "out", config).history
    assert len(seen) == 3
    for (batch, shaped), row in zip(seen, history, strict=True):
        mask = batch.mask
        k1 = kl_k1(batch.logprobs, batch.ref_logprobs).masked_fill(~mask, 0.0)
        torch.testing.assert_close(shaped.kl, k1)
        assert row["kl"] == pytest.approx(k1.sum(1).mean().item(), abs=1e-5)
        valid = shaped.advantages[mask]
        assert valid.mean().item() == pytest.approx(0.0, abs=1e-5)
        assert valid.std().item() == pytest.approx(1.0, abs=1e-3)  # Bessel-corrected, as whitened
        assert (shaped.advantages[~mask] == 0).all()
    assert history[-1]["kl"] > 0  # the policy moved: the check above was not of zeros only
