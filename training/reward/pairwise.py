"""The pairwise loss: Bradley-Terry per pair, -log σ(r_chosen - r_rejected - margin), on trl's
RewardTrainer.

trl cannot weight rows, so `PairwiseRewardTrainer` overrides `compute_loss` only to apply the
export's `weight` (each annotation then counts once).

The Trainer averages micro-batches (gradient accumulation) and processes equally, so a loss
normalised by each batch's own sum of weights would cancel the weights in a batch of one and
mostly undo them in small ones. Training divides by the data's mean weight times the batch's
rows instead (`scale`): summed over a step, each row then counts its weight's share, as one
weighted mean over the whole step would.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from trl import RewardTrainer


def weighted_mean(
    values: torch.Tensor, weight: torch.Tensor | None, *, scale: float | None = None
) -> torch.Tensor:
    """sum w·v / sum w, or the plain mean without weights.

    With `scale` (the training data's mean weight): sum w·v / (scale · n), the batch's share
    of a weighted mean over all the batches of a step (see the module's docstring).
    """
    if weight is None:
        return values.mean()
    weight = weight.to(values.dtype)
    if scale is not None:
        return (values * weight).sum() / (scale * values.numel())
    return (values * weight).sum() / weight.sum()


def pairwise_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    *,
    margin: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Bradley-Terry loss -log σ(r_c - r_r - m), averaged with weights (sum w·l / sum w, or
    with `scale` see `weighted_mean`); all (B,)."""
    logits = chosen - rejected  # (B,)
    if margin is not None:
        logits = logits - margin.to(logits.dtype)
    return weighted_mean(-F.logsigmoid(logits), weight, scale=scale)


class PretokenizedRewardTrainer(RewardTrainer):
    """RewardTrainer on rows already rendered by `render_reward_input`.

    trl's own preprocessing would render differently from PPO's scoring and silently drop
    rows over max_length; ours truncates and counts them instead.
    """

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):  # noqa: ANN001
        return dataset

    @functools.cached_property
    def mean_weight(self) -> float:
        """The training rows' mean weight: what a batch's weighted loss is divided by."""
        weights = list(self.train_dataset["weight"])
        return float(sum(weights) / len(weights))


class PairwiseRewardTrainer(PretokenizedRewardTrainer):
    """trl's RewardTrainer with the export's per-pair weights (the only change to its loss)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001
        weight = inputs.pop("weight")  # (B,)
        # trl's pass computes the rewards and logs accuracy/margins; its unweighted loss is replaced.
        _, outputs = super().compute_loss(model, inputs, return_outputs=True)
        chosen, rejected = torch.chunk(outputs.logits.squeeze(-1), chunks=2)  # (B,), (B,)
        loss = pairwise_loss(
            chosen, rejected, margin=inputs.get("margin"), weight=weight, scale=self.mean_weight
        )
        return (loss, outputs) if return_outputs else loss
