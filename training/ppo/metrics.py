"""What a PPO step logs (METRICS), how the figures are computed, and where they are written."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from training.ppo.math import explained_variance, kl_k3, masked_mean
from training.ppo.rollout import Rollout, Shaped

METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.jsonl"

# What each per-step metric means (metrics.jsonl rows, TensorBoard "ppo/<name>", on_metrics).
# Means over the rollout's episodes (all processes); token-level figures over valid tokens.
METRICS: dict[str, str] = {
    "step": "PPO steps done (rollout + update)",
    "episodes": "episodes trained on so far",
    "lr": "learning rate used by this step's updates",
    "kl_coef": "KL coefficient (beta) used in this step's rewards",
    "score": "reward-model score, normalised (raw - bias), before the missing-EOS penalty",
    "score_raw": "reward-model score as the model outputs it (callables: the returned value)",
    "non_score_reward": "sum over an episode's tokens of -beta * KL",
    "rlhf_reward": "what PPO maximises: penalised score + non-score reward",
    "kl": "sum over an episode's tokens of the KL estimate (k1 or k3) to the reference",
    "kl_k3": "the same sum with the k3 estimate ((r - 1) - log r): never negative, for reports",
    "entropy": "policy entropy per token at the sampling temperature",
    "response_length": "response tokens, EOS included",
    "eos_rate": "share of responses that ended with EOS",
    "explained_variance": "1 - Var(returns - values) / Var(returns): critic quality",
    "policy_loss": "clipped surrogate loss, mean over updates",
    "value_loss": "clipped value loss, mean over updates",
    "clipfrac": "share of tokens where the policy ratio was clipped",
    "value_clipfrac": "share of tokens where the value was clipped",
    "approx_kl": "0.5 * mean (log ratio)^2: how far each update moved from the rollout policy",
    "ratio": "mean probability ratio new / rollout policy",
    "grad_norm": "global gradient norm before clipping",
    "ptx_loss": "mean token NLL of the policy on the ptx_data batches, mean over updates "
    "(only with ptx_data)",
    "gold_score": "the judge's score of the responses (only with a judge)",
    "eval_kl": "KL sum per episode (like kl) on the held-out eval prompts (eval steps only)",
    "eval_score": "normalised score on the held-out eval prompts (eval steps only)",
    "eval_score_raw": "raw score on the held-out eval prompts (eval steps only)",
    "eval_gold": "the judge's score on the held-out eval prompts (eval steps, with a judge)",
    "step_time": "seconds this step took",
    "episodes_per_s": "episodes per second since this call started training",
    "time_generation": "seconds of this step spent sampling responses (generate)",
    "time_scoring": "seconds of this step in logprob, reference, value and reward passes",
    "time_update": "seconds of this step in the PPO epochs (forward, backward, optimizer)",
}


def rollout_stats(
    batch: Rollout, shaped: Shaped, updates: dict[str, list[torch.Tensor]], device: torch.device
) -> dict[str, torch.Tensor]:
    """This process's figures of one step, as 0-d tensors ready to be reduced across processes."""
    mask = batch.mask
    return {
        "score": shaped.score.mean(),
        "score_raw": shaped.score_raw.mean(),
        "non_score_reward": shaped.non_score.sum(1).mean(),
        "rlhf_reward": shaped.penalised.mean() + shaped.non_score.sum(1).mean(),
        "kl": shaped.kl.sum(1).mean(),
        "kl_k3": kl_k3(batch.logprobs, batch.ref_logprobs).masked_fill(~mask, 0.0).sum(1).mean(),
        "entropy": masked_mean(batch.entropy, mask),
        "response_length": batch.lengths.float().mean(),
        "eos_rate": batch.has_eos.float().mean(),
        "explained_variance": torch.tensor(
            explained_variance(batch.values, shaped.returns, mask), device=device
        ),
        **{k: torch.stack(v).mean() for k, v in updates.items() if v},
    }


def append_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append rows to a JSON-lines log."""
    with path.open("a") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


def tensorboard(log_dir: Path) -> Any:
    """A TensorBoard writer, or None when tensorboard is not installed (metrics.jsonl is the record)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(log_dir))


def log_scalars(writer: Any, row: dict[str, Any], step: int) -> None:
    """Every finite figure of a metrics row as TensorBoard scalar ppo/<name>."""
    if writer is None:
        return
    for key, value in row.items():
        if key != "step" and isinstance(value, float) and math.isfinite(value):
            writer.add_scalar(f"ppo/{key}", value, step)
