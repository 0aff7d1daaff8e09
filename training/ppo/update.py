"""Update phase: several epochs of clipped policy and value losses over a rollout's minibatches.

Also the optimizer and the learning-rate schedule the updates step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from training.ppo.config import PPOConfig
from training.ppo.math import logprobs_from_logits, masked_mean, policy_loss, value_loss
from training.ppo.ptx import PtxBatches
from training.ppo.rollout import Rollout, Shaped

# Figures each optimizer step appends to; their means are the step's metrics.
UPDATE_STATS = (
    "policy_loss",
    "value_loss",
    "clipfrac",
    "value_clipfrac",
    "approx_kl",
    "ratio",
    "grad_norm",
    "ptx_loss",  # with ptx_data only
)


def adamw(params: list[nn.Parameter], config: PPOConfig) -> torch.optim.Optimizer:
    """AdamW, fused where torch supports it (6x faster steps than the per-tensor loop on CPU)."""
    kwargs = {"lr": config.lr, "eps": config.adam_eps, "weight_decay": config.weight_decay}
    try:
        return torch.optim.AdamW(params, fused=True, **kwargs)
    except (RuntimeError, TypeError):  # e.g. a device or dtype without a fused kernel
        return torch.optim.AdamW(params, **kwargs)


def linear_schedule(
    optimizer: torch.optim.Optimizer, config: PPOConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """detail: linear LR schedule, one decrement per rollout (as CleanRL and the N details)."""
    num_steps = config.num_steps
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 1.0 - step / num_steps if config.anneal_lr else 1.0
    )


def ppo_update(
    accelerator: Any,
    model: nn.Module,
    trainable: list[nn.Parameter],
    optimizer: torch.optim.Optimizer,
    batch: Rollout,
    shaped: Shaped,
    config: PPOConfig,
    pad_id: int,
    micro_batch: int,
    autocast: Callable[[], contextlib.AbstractContextManager],
    ptx: PtxBatches | None = None,
) -> dict[str, list[torch.Tensor]]:
    """`ppo_epochs` passes over the rollout in shuffled micro-batches; returns per-step stats.

    With gradient accumulation, each micro-batch's loss (a mean over its valid tokens) is
    weighted by its share of the minibatch's valid tokens, so the accumulated gradient is the
    gradient of the minibatch's token mean: exactly what one big micro-batch would give.
    With `ptx`, each micro-batch also adds `ptx_coef` times the policy's mean token NLL on as
    many ptx examples (averaged over the accumulated micro-batches, see ptx.py).
    """
    device = accelerator.device
    mask, context_length = batch.mask, batch.context_length  # (B, T)
    advantages, returns = shaped.advantages, shaped.returns
    stats: dict[str, list[torch.Tensor]] = {k: [] for k in UPDATE_STATS}
    for _epoch in range(config.ppo_epochs):
        order = torch.randperm(batch.responses.size(0), device=device)
        accumulation = config.gradient_accumulation_steps
        for index, micro in enumerate(order.split(micro_batch)):
            if index % accumulation == 0:
                # The minibatch this micro-batch starts: its micro-batches' valid tokens.
                minibatch = order[index * micro_batch : (index + accumulation) * micro_batch]
                minibatch_tokens = mask[minibatch].sum().clamp(min=1)
            with accelerator.accumulate(model):
                # Right-trim columns past the longest response of the micro-batch.
                width = int(batch.lengths[micro].max().clamp(min=1))
                qr = batch.query_responses[micro, : context_length + width]
                mb_mask = mask[micro, :width]
                ptx_batch = None if ptx is None else ptx.next(len(micro), device)
                with autocast():
                    logits, new_values, *ptx_out = model(qr, context_length, pad_id, ptx_batch)
                new_logprobs = logprobs_from_logits(
                    logits, qr[:, context_length:], config.temperature
                )
                pg_loss, clipfrac, approx_kl = policy_loss(
                    new_logprobs,
                    batch.logprobs[micro, :width],
                    advantages[micro, :width],
                    mb_mask,
                    config.cliprange,
                )
                vf_loss, vf_clipfrac = value_loss(
                    new_values,
                    batch.values[micro, :width],
                    returns[micro, :width],
                    mb_mask,
                    config.cliprange_value,
                )
                loss = pg_loss + config.vf_coef * vf_loss
                # accelerate divides by the accumulation steps; the token share replaces that.
                share = mb_mask.sum() / minibatch_tokens * accumulation
                loss = loss * share
                if ptx_out:
                    loss = loss + config.ptx_coef * ptx_out[0]
                    stats["ptx_loss"].append(ptx_out[0].detach().float())
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    # detail: global gradient clipping (policy and critic together).
                    norm = accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
                    if norm is not None:
                        stats["grad_norm"].append(torch.as_tensor(norm, device=device).float())
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                ratio = masked_mean(
                    torch.exp(new_logprobs - batch.logprobs[micro, :width]), mb_mask
                )
            for name, value in (
                ("policy_loss", pg_loss),
                ("value_loss", vf_loss),
                ("clipfrac", clipfrac),
                ("value_clipfrac", vf_clipfrac),
                ("approx_kl", approx_kl),
                ("ratio", ratio),
            ):
                stats[name].append(value.detach().float())
    return stats
