"""Gradient accumulation is the same maths: accum 4 gives the gradient of one big micro-batch.

Each micro-batch's loss is a token mean; micro-batches hold different numbers of valid tokens,
so averaging their means (what accelerate's division alone does) would weight them wrongly.
"""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from training import ppo  # noqa: E402
from training.modeling import encode_prompt, load_causal_lm  # noqa: E402
from training.ppo.models import PolicyAndValue, Reward  # noqa: E402
from training.ppo.rollout import left_pad, rollout, score_and_shape  # noqa: E402
from training.ppo.train import _forget_other_precision  # noqa: E402
from training.ppo.update import ppo_update  # noqa: E402
from training.tiny import build_tiny_causal_lm  # noqa: E402

pytestmark = pytest.mark.ml

TEXTS = [f"the cat number {i} sat on the mat and said hello {i % 7}" for i in range(200)]
PROMPTS = [f"the cat {i}" for i in range(8)]


class RecordingSGD(torch.optim.SGD):
    """Records the gradients each real optimizer step sees."""

    def __init__(self, params):
        self.params_list = list(params)
        self.seen: list[list[torch.Tensor]] = []
        super().__init__(self.params_list, lr=0.0)

    def step(self, closure=None):
        self.seen.append([p.grad.detach().clone() for p in self.params_list])
        return super().step(closure)


def _grads(model, batch, shaped, tokenizer, accumulation: int):
    from accelerate import Accelerator

    config = ppo.PPOConfig(
        total_episodes=8,
        batch_size=8,
        mini_batches=1,
        ppo_epochs=1,
        gradient_accumulation_steps=accumulation,
        response_length=12,
        max_grad_norm=1e9,
        device="cpu",
    )
    _forget_other_precision("no")  # an earlier test may have run in bf16
    accelerator = Accelerator(
        cpu=True, gradient_accumulation_steps=accumulation, mixed_precision="no"
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = RecordingSGD(trainable)
    model, prepared = accelerator.prepare(model, optimizer)
    torch.manual_seed(3)  # the same shuffle in both runs
    ppo_update(
        accelerator,
        model,
        trainable,
        prepared,
        batch,
        shaped,
        config,
        tokenizer.pad_token_id,
        8 // accumulation,
        accelerator.autocast,
    )
    return optimizer.seen


def test_accumulated_gradient_equals_one_big_batch(tmp_path):
    torch.set_num_threads(1)
    path = build_tiny_causal_lm(tmp_path / "lm", TEXTS, vocab_size=300)
    policy, tokenizer = load_causal_lm(path, device="cpu")
    ppo.disable_dropout(policy)
    value_model, _ = ppo.build_value_model(path, tokenizer, None, None, torch.float32)
    ppo.disable_dropout(value_model)
    config = ppo.PPOConfig(
        total_episodes=8, batch_size=8, mini_batches=1, response_length=12, temperature=1.0
    )
    stop = [tokenizer.eos_token_id]
    queries = left_pad([encode_prompt(tokenizer, p) for p in PROMPTS], tokenizer.pad_token_id)
    gen = ppo.generation_config(config, tokenizer, stop)
    torch.manual_seed(0)
    batch = rollout(policy, policy, value_model, tokenizer, queries, gen, config, stop)
    # Micro-batches of different sizes in valid tokens (as if some rows had stopped early).
    batch.lengths = torch.tensor([12, 3, 7, 1, 12, 5, 9, 2])
    shaped = score_and_shape(
        batch,
        PROMPTS,
        Reward(lambda p, r: [float(len(x)) for x in r], torch.device("cpu"), torch.float32, 8),
        0.05,
        config,
        torch.device("cpu"),
    )
    one = _grads(copy.deepcopy(PolicyAndValue(policy, value_model)), batch, shaped, tokenizer, 1)
    four = _grads(copy.deepcopy(PolicyAndValue(policy, value_model)), batch, shaped, tokenizer, 4)
    assert len(one) == len(four) == 1  # one optimizer step: one minibatch in both
    for a, b in zip(one[0], four[0], strict=True):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-4)
    assert max(float(g.abs().max()) for g in one[0]) > 0
