"""After training, from the in-memory model: held-out figures and the reward's bias.

The bias is the mean raw reward over every distinct (prompt, response) of the export, so that
`score()` (raw - bias) gives the reference responses mean 0, as InstructGPT normalises.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch

from training.reward.data import PreferencePair
from training.reward.dataset import Renderer, prompt_key
from training.reward.pairwise import pairwise_loss
from training.reward.scoring import reward_statistics, score_token_ids


def evaluate_pairs(
    model: Any,
    pairs: list[PreferencePair],
    render: Renderer,
    *,
    margin_scale: float,
    batch_size: int,
) -> dict[str, Any]:
    """Accuracy, weighted loss and accuracy by margin of `model` on `pairs`, each text scored once."""
    if not pairs:
        return {"accuracy": None, "eval_loss": None, "accuracy_by_margin": {}}
    inputs: dict[tuple[str, str], list[int]] = {}
    for p in pairs:
        for response in (p.chosen, p.rejected):
            key = (prompt_key(p.prompt), response)
            if key not in inputs:
                inputs[key] = render(p.prompt, response)
    scores = score_token_ids(
        model, list(inputs.values()), render.tokenizer.pad_token_id, batch_size=batch_size
    )
    by_key = dict(zip(inputs, scores))
    chosen = torch.tensor([by_key[(prompt_key(p.prompt), p.chosen)] for p in pairs])  # (P,)
    rejected = torch.tensor([by_key[(prompt_key(p.prompt), p.rejected)] for p in pairs])  # (P,)
    margin = torch.tensor([p.margin * margin_scale for p in pairs])
    weight = torch.tensor([p.weight for p in pairs])
    correct = (chosen > rejected).float() + 0.5 * (chosen == rejected).float()
    groups: dict[float, list[float]] = defaultdict(list)
    for p, c in zip(pairs, correct.tolist()):
        groups[float(p.margin)].append(c)
    return {
        "accuracy": correct.mean().item(),
        "eval_loss": pairwise_loss(chosen, rejected, margin=margin, weight=weight).item(),
        # Keys are text (JSON), ordered by the gap's value: "2" before "10".
        "accuracy_by_margin": {f"{m:g}": sum(v) / len(v) for m, v in sorted(groups.items())},
    }


def reward_bias(model: Any, render: Renderer, *, batch_size: int) -> tuple[float, float, int]:
    """(bias, std, count) of the raw rewards of every input `render` has rendered."""
    references = list(render.cache.values())  # every distinct (prompt, response) of the export
    raw = score_token_ids(model, references, render.tokenizer.pad_token_id, batch_size=batch_size)
    bias, std = reward_statistics(raw)
    return bias, std, len(references)
