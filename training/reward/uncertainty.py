"""Reward-model scores of a candidate pool, one per model of an ensemble (no Django).

What `build_comparisons --strategy uncertainty` hands to `annotation.rules.active`: for each
(prompt, response), the reward of every model given, in the order given. Several model
directories make an ensemble (for example reward models trained with different seeds, or on
bootstrap resamples of the export); their disagreement counts as uncertainty.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from training.modeling import Prompt


class RewardModelDirError(ValueError):
    """A --reward-model directory that does not hold a loadable reward model."""


def check_reward_model_dir(path: str | Path) -> Path:
    """The directory as a Path, if it looks like a saved reward model; else RewardModelDirError."""
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise RewardModelDirError(f"reward model {path}: no such directory")
    if (
        not (directory / "config.json").is_file()
        and not (directory / "adapter_config.json").is_file()
    ):
        raise RewardModelDirError(
            f"reward model {path}: neither config.json nor adapter_config.json "
            "(not a directory written by train_reward_model)"
        )
    return directory


def ensemble_scores(
    model_dirs: Sequence[str | Path],
    prompts: Sequence[Prompt],
    responses: Sequence[str],
    *,
    device: str | None = None,
    batch_size: int = 16,
) -> list[list[float]]:
    """For each (prompt, response), the normalized reward of each model, models in given order.

    Every directory is checked before any model loads; a model that fails to load raises
    RewardModelDirError naming its directory. Models load one at a time (one in memory).
    """
    if not model_dirs:
        raise RewardModelDirError("no reward model given")
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    directories = [check_reward_model_dir(d) for d in model_dirs]
    from training.modeling import ModelLoadError
    from training.reward.scoring import load_reward_model

    columns: list[list[float]] = []
    for directory in directories:
        try:
            scorer: Any = load_reward_model(directory, device=device, batch_size=batch_size)
        except (ModelLoadError, OSError, ValueError, KeyError) as exc:
            raise RewardModelDirError(f"reward model {directory}: cannot load: {exc}") from None
        columns.append(scorer.score(list(prompts), list(responses)))
        del scorer
    return [list(row) for row in zip(*columns)] if columns[0] else []
