"""PPO with --gradient-checkpointing: the same gradients, and the recomputation really runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.training.test_ppo import PROMPTS, TEXTS, count_a, tiny_config
from training.ppo import models as ppo_models
from training.ppo import train_ppo

pytestmark = pytest.mark.ml


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    from training.tiny import build_tiny_causal_lm

    torch.set_num_threads(1)
    return build_tiny_causal_lm(tmp_path_factory.mktemp("gc") / "lm", TEXTS, vocab_size=300)


@pytest.fixture
def checkpoint_calls(monkeypatch) -> list[int]:
    """Counts transformers' calls into torch's activation checkpointing."""
    import transformers.modeling_utils as modeling_utils

    calls: list[int] = []
    real = modeling_utils.checkpoint

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(modeling_utils, "checkpoint", counting)
    return calls


def _loss_and_grads(tiny_lm: Path, **overrides) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(0)  # the critic's fresh head: the same draw in both builds
    config = tiny_config(**overrides)
    models = ppo_models.load_models(tiny_lm, count_a, config, torch.device("cpu"), 16)
    model = ppo_models.PolicyAndValue(models.policy, models.value_model)
    pad = models.tokenizer.pad_token_id
    ids = torch.tensor([[pad, pad, 5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16, 17, 18]])
    with ppo_models.update_mode(model, config.gradient_checkpointing):
        assert model.policy.training == config.gradient_checkpointing
        assert model.value_model.training == config.gradient_checkpointing
        logits, values = model(ids, 4, pad)
        loss = logits.log_softmax(-1)[..., 20].mean() + values.pow(2).mean()
        loss.backward()
    assert (
        not model.policy.training and not model.value_model.training
    )  # back in eval mode after the update
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


@pytest.mark.parametrize("lora", [False, True])
def test_checkpointing_gives_the_same_loss_and_gradients(tiny_lm, checkpoint_calls, lora):
    extra = {"lora": True, "lora_r": 4} if lora else {}
    plain_loss, plain = _loss_and_grads(tiny_lm, **extra)
    assert checkpoint_calls == []
    ckpt_loss, ckpt = _loss_and_grads(tiny_lm, gradient_checkpointing=True, **extra)
    # Two layers each in the policy and in the critic's transformer, recomputed in backward.
    assert len(checkpoint_calls) >= 4
    assert torch.allclose(plain_loss, ckpt_loss, atol=1e-6)
    assert plain.keys() == ckpt.keys() and plain
    if lora:
        assert all("lora_" in n or "score" in n for n in plain)  # only adapters (and the head)
    for name in plain:
        assert torch.allclose(plain[name], ckpt[name], atol=1e-6, rtol=1e-5), name


def test_load_models_enables_checkpointing_on_the_trained_models_only(tiny_lm):
    config = tiny_config(gradient_checkpointing=True)
    models = ppo_models.load_models(tiny_lm, count_a, config, torch.device("cpu"), 16)
    assert models.policy.is_activation_checkpointing
    assert models.value_model.is_activation_checkpointing
    assert not models.ref_policy.is_activation_checkpointing  # it runs no backward
    assert not models.policy.training and not models.value_model.training


def test_train_ppo_with_checkpointing_matches_a_run_without(tiny_lm, tmp_path, checkpoint_calls):
    """The first minibatch still scores exactly as the rollout did (ratio 1: train mode changed
    nothing), and two steps log the same figures as without checkpointing."""
    config = dict(total_episodes=32, mini_batches=1, ppo_epochs=1)
    plain = train_ppo(tiny_lm, count_a, PROMPTS, tmp_path / "plain", tiny_config(**config))
    assert checkpoint_calls == []
    ckpt = train_ppo(
        tiny_lm,
        count_a,
        PROMPTS,
        tmp_path / "ckpt",
        tiny_config(gradient_checkpointing=True, **config),
    )
    assert checkpoint_calls  # the update recomputed activations
    first = ckpt.history[0]
    assert first["ratio"] == pytest.approx(1.0, abs=1e-6) and first["approx_kl"] < 1e-10
    for a, b in zip(plain.history, ckpt.history, strict=True):
        for key in ("score", "kl", "policy_loss", "value_loss", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key


def test_the_command_has_the_flag():
    from training.cli import config_from_options

    config = config_from_options(type(tiny_config()), {"gradient_checkpointing": True})
    assert config.gradient_checkpointing
