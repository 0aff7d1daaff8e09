"""From preference data to the rows a trainer consumes: held-out split, rendering, datasets."""

from __future__ import annotations

import json
from typing import Any

from annotation.rules.splits import split_for_prompt
from training.reward.config import RewardConfig
from training.reward.data import PreferenceData, RewardDataError
from training.reward.scoring import render_reward_input


def prompt_key(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)


def apply_eval_fraction(data: PreferenceData, fraction: float) -> None:
    if fraction <= 0 or data.split_pairs("test"):
        return
    # The export's own split rule: at the export's test fraction a prompt lands where it did.
    for row in data.rankings or data.pairs:
        if split_for_prompt(row.prompt, test_fraction=fraction) == "test":
            row.split = "test"
    if not data.split_pairs("train"):
        raise RewardDataError(f"{data.source}: eval_fraction={fraction} left no training rows")


class Renderer:
    """Renders each distinct (prompt, response) once and counts truncations."""

    def __init__(self, tokenizer, max_length: int) -> None:  # noqa: ANN001
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.cache: dict[tuple[str, str], list[int]] = {}
        self.truncated = 0

    def __call__(self, prompt: Any, response: str) -> list[int]:
        key = (prompt_key(prompt), response)
        if key not in self.cache:
            ids, truncated = render_reward_input(
                self.tokenizer, prompt, response, max_length=self.max_length
            )
            self.truncated += truncated
            self.cache[key] = ids
        return self.cache[key]


def build_dataset(data: PreferenceData, split: str, config: RewardConfig, render: Renderer):
    """The rows the trainer consumes for `split` (None when the split is empty)."""
    from datasets import Dataset

    if config.loss == "kwise":
        rows = [
            {
                "completion_ids": [render(r.prompt, c) for c in r.completions],
                "tier_of": r.tier_of(),
                "weight": r.weight,
            }
            for r in data.split_rankings(split)
        ]
    else:
        rows = [
            {
                "chosen_ids": render(p.prompt, p.chosen),
                "rejected_ids": render(p.prompt, p.rejected),
                "weight": p.weight,
                **({"margin": p.margin * config.margin_scale} if config.margin_scale else {}),
            }
            for p in data.split_pairs(split)
        ]
    return Dataset.from_list(rows) if rows else None
