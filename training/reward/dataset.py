"""From preference data to the rows a trainer consumes: held-out split, rendering, datasets."""

from __future__ import annotations

import json
from typing import Any

from annotation.rules.splits import prompt_digest, split_for_prompt
from training.reward.config import RewardConfig
from training.reward.data import PreferenceData, RewardDataError
from training.reward.scoring import normalize_response, render_reward_input


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


VALIDATION = "validation"


def in_validation(prompt: Any, fraction: float) -> bool:
    """Whether a training prompt is held out for validation: a stable hash of the prompt,
    from other digest bytes than the test split's, so it is uniform among training prompts."""
    return int.from_bytes(prompt_digest(prompt)[8:16], "big") / 2**64 < fraction


def hold_out_validation(data: PreferenceData, fraction: float) -> bool:
    """Move the training rows of `fraction` of the training prompts to a validation split.

    Early stopping picks the epoch on it, so the test split's accuracy stays an unbiased
    report. Returns False and changes nothing when that leaves no validation or no training
    pairs (a small export): the caller then picks on the test split.
    """
    if fraction <= 0:
        return False
    rows = [r for r in (data.rankings or data.pairs) if r.split == "train"]
    moved = [r for r in rows if in_validation(r.prompt, fraction)]
    for row in moved:
        row.split = VALIDATION
    if data.split_pairs(VALIDATION) and data.split_pairs("train"):
        return True
    for row in moved:
        row.split = "train"
    return False


class Renderer:
    """Renders each distinct (prompt, response) once and counts truncations.

    Responses are told apart as the reward model reads them (`normalize_response`), so two
    that differ only in surrounding whitespace are one input: scored, counted towards the
    reward's bias and counted as truncated once.
    """

    def __init__(self, tokenizer, max_length: int) -> None:  # noqa: ANN001
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.cache: dict[tuple[str, str], list[int]] = {}
        self.truncated = 0

    def __call__(self, prompt: Any, response: str) -> list[int]:
        key = (prompt_key(prompt), normalize_response(response))
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
