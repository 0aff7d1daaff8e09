"""Batches for the two losses: pairs (chosen rows, then rejected rows) or whole rankings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from trl.trainer.reward_trainer import DataCollatorForPreference

from training.reward.data import ranking_pair_indexes
from training.reward.scoring import pad_right


@dataclass
class WeightedPreferenceCollator(DataCollatorForPreference):
    """trl's preference collator (chosen rows then rejected rows), plus each pair's weight."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().torch_call(examples)
        batch["weight"] = torch.tensor([e["weight"] for e in examples], dtype=torch.float)
        return batch


@dataclass
class RankingCollator:
    """Flattens rankings into one padded batch of completions plus the pair indexes between them."""

    pad_token_id: int
    margin_scale: float = 1.0

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        sequences: list[list[int]] = []
        better, worse, group, gap = [], [], [], []
        for g, example in enumerate(examples):
            offset = len(sequences)
            for i, j, tier_gap in ranking_pair_indexes(example["tier_of"]):
                better.append(offset + i)
                worse.append(offset + j)
                group.append(g)
                gap.append(tier_gap)
            sequences.extend(example["completion_ids"])
        input_ids, attention_mask = pad_right(sequences, self.pad_token_id)  # (N, T)
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "better": torch.tensor(better, dtype=torch.long),  # (P,)
            "worse": torch.tensor(worse, dtype=torch.long),  # (P,)
            "group": torch.tensor(group, dtype=torch.long),  # (P,)
            "weight": torch.tensor([e["weight"] for e in examples], dtype=torch.float),  # (G,)
        }
        if self.margin_scale:
            batch["margin"] = torch.tensor(gap, dtype=torch.float) * self.margin_scale  # (P,)
        return batch
