"""The K-wise loss of InstructGPT: one batch element is one ranking.

Its K completions are forwarded once and the loss is the mean over its pairs across tiers
(C(K,2) for a strict ranking; ties give no pair), so a ranking costs K forwards instead of
2 * C(K,2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from training.reward.pairwise import PretokenizedRewardTrainer, weighted_mean


def kwise_loss(
    rewards: torch.Tensor,
    better: torch.Tensor,
    worse: torch.Tensor,
    group: torch.Tensor,
    *,
    margin: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """InstructGPT K-wise loss: mean over each ranking's pairs, then weighted mean over rankings
    (with `scale`, the data's mean weight, see `training.reward.pairwise.weighted_mean`).

    rewards (N,) one per completion of the batch; better, worse (P,) index rewards, group (P,)
    is the ranking of each pair, margin (P,); weight (G,) per ranking.
    """
    logits = rewards[better] - rewards[worse]  # (P,)
    if margin is not None:
        logits = logits - margin.to(logits.dtype)
    losses = -F.logsigmoid(logits)  # (P,)
    num_groups = weight.shape[0] if weight is not None else int(group.max()) + 1
    sums = losses.new_zeros(num_groups).index_add(0, group, losses)  # (G,)
    counts = torch.bincount(group, minlength=num_groups)  # (G,)
    has_pairs = counts > 0  # a ranking that is one tie has no pair and no say
    per_group = sums[has_pairs] / counts[has_pairs].to(sums.dtype)
    return weighted_mean(per_group, None if weight is None else weight[has_pairs], scale=scale)


class KwiseRewardTrainer(PretokenizedRewardTrainer):
    """RewardTrainer whose batch elements are whole rankings (InstructGPT's K-wise loss)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001
        mode = "train" if self.model.training else "eval"
        outputs = model(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False
        )
        rewards = outputs.logits.squeeze(-1)  # (N,)
        better, worse = inputs["better"], inputs["worse"]
        loss = kwise_loss(
            rewards,
            better,
            worse,
            inputs["group"],
            margin=inputs.get("margin"),
            weight=inputs["weight"],
            scale=self.mean_weight,
        )
        # The same figures trl logs for pairwise runs, so both losses read alike in metrics.jsonl.
        if mode == "train":
            tokens = (
                self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
            )
            self._total_train_tokens += tokens
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        with torch.no_grad():
            diff = rewards[better] - rewards[worse]
            for name, value in (
                ("accuracy", (diff > 0).float().mean()),
                ("margin", diff.mean()),
                ("mean_reward", rewards.mean()),
            ):
                self._metrics[mode][name].append(
                    self.accelerator.gather_for_metrics(value).mean().item()
                )
        return (loss, outputs) if return_outputs else loss
