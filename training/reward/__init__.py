"""Reward-model training from a preference export (no Django).

Two losses, one model (`AutoModelForSequenceClassification` with one label), one module each:

- `pairwise`: Bradley-Terry per pair through trl's RewardTrainer, weighted by the export;
- `kwise`: the InstructGPT loss, one ranking per batch element, each completion forwarded once.

Around them: `config` (RewardConfig, RewardResult), `data` (reading and validating exports),
`dataset` (held-out split, rendering, trainer rows), `collators`, `calibrate` (held-out
accuracy and the bias that gives reference rewards mean 0), `scoring` (rendering inputs and
scoring with a saved model: what PPO uses), and `train` (the run).
"""

from __future__ import annotations

import importlib
from typing import Any

# Each public name and the submodule that defines it, imported on first use: so the command's
# --help (training.reward.config) and export reading (training.reward.data) load without
# torch and trl, which are an optional extra.
_EXPORTS = {
    "RankingCollator": "training.reward.collators",
    "WeightedPreferenceCollator": "training.reward.collators",
    "RewardConfig": "training.reward.config",
    "RewardResult": "training.reward.config",
    "RewardDataError": "training.reward.data",
    "KwiseRewardTrainer": "training.reward.kwise",
    "kwise_loss": "training.reward.kwise",
    "PairwiseRewardTrainer": "training.reward.pairwise",
    "pairwise_loss": "training.reward.pairwise",
    "RewardModelScorer": "training.reward.scoring",
    "load_reward_model": "training.reward.scoring",
    "normalize_response": "training.reward.scoring",
    "render_reward_input": "training.reward.scoring",
    "train_reward_model": "training.reward.train",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value
