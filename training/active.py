"""Active preference learning glue: score the candidate pool, then build by uncertainty.

The reward models run here (training imports torch); the grouping rule and the queue
priority live in `annotation.rules.active` and `annotation.services.comparisons`, which
import no ML. `build_comparisons --strategy uncertainty` and the loop's `--strategy
uncertainty` both call `build_uncertain_comparisons`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from annotation.models import Project
from annotation.rules.active import DEFAULT_MAX_SHARE
from annotation.services.comparisons import BuildResult, comparison_pool, comparisons_build


def build_uncertain_comparisons(
    project: Project,
    reward_model_dir: str | Path | Sequence[str | Path],
    *,
    models: list[str] | None = None,
    max_share: float = DEFAULT_MAX_SHARE,
    device: str | None = None,
    batch_size: int = 16,
) -> BuildResult:
    """Build `project`'s comparisons from its unused candidates, most uncertain groups first.

    `reward_model_dir` is one reward-model directory (as `train_reward_model --out` wrote it)
    or several (an ensemble: their disagreement counts as uncertainty). Per prompt with more
    than K pooled candidates, the K whose order the models are least sure of form the first
    comparison, the next K of the rest the second, and so on; every comparison gets a queue
    priority in (0, 1], most uncertain first, with one prompt cluster (prompt `source`)
    holding at most `max_share` of any prefix of the serving order. `models` restricts the
    pool as in `comparisons_build`.

    Raises `training.reward.uncertainty.RewardModelDirError` (a ValueError) for a missing or
    unloadable model directory and `annotation.errors.ServiceValidationError` for bad
    `max_share`; in both cases nothing is built.
    """
    from training.reward.uncertainty import ensemble_scores

    dirs = (
        [reward_model_dir] if isinstance(reward_model_dir, (str, Path)) else list(reward_model_dir)
    )
    rows = list(
        comparison_pool(project=project, models=models).select_related("prompt").order_by("id")
    )
    if not rows:
        ensemble_scores(dirs, [], [], device=device, batch_size=batch_size)  # checks the dirs
        return comparisons_build(project=project, models=models, scores={}, max_share=max_share)
    scores = ensemble_scores(
        dirs,
        [c.prompt.as_model_input() for c in rows],
        [c.text for c in rows],
        device=device,
        batch_size=batch_size,
    )
    by_id = {c.pk: s for c, s in zip(rows, scores)}
    return comparisons_build(project=project, models=models, scores=by_id, max_share=max_share)
