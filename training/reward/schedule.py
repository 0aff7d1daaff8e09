"""How long and how fast a reward model trains: data-scaled defaults and early stopping (no torch).

Default epochs and learning rate scale with the number of training pairs (`scaled_defaults`);
early stopping evaluates on the held-out split after every epoch, keeps the best epoch and
stops after `patience` epochs without improvement (`early_stopping`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# The rule of `scaled_defaults`, stated once for docs and the report.
TARGET_STEPS = 400  # optimizer steps a run aims at, whatever the data size
MIN_EPOCHS, MAX_EPOCHS = 3, 20
FULL_LR, LORA_LR = 5e-4, 1e-3  # at REFERENCE_PAIRS pairs or fewer
REFERENCE_PAIRS = 1000
MIN_LR = 1e-5
SCALING_RULE = (
    f"epochs = clamp(ceil({TARGET_STEPS} * batch_size / training pairs), {MIN_EPOCHS}, "
    f"{MAX_EPOCHS}) with early stopping keeping the best epoch; lr = {FULL_LR:g} "
    f"({LORA_LR:g} with LoRA) up to {REFERENCE_PAIRS} pairs, times "
    f"sqrt({REFERENCE_PAIRS} / pairs) above (floor {MIN_LR:g})"
)


def scaled_defaults(num_pairs: int, batch_size: int, *, lora: bool = False) -> tuple[float, float]:
    """(epochs, learning rate) for `num_pairs` training pairs: see SCALING_RULE.

    Small exports get more passes (a few hundred optimizer steps in all, which a tiny reward
    model needs to learn anything) and a large learning rate; large exports fewer passes and a
    learning rate falling as 1/sqrt(pairs), as more steps at the same rate would overfit.
    """
    if num_pairs < 1:
        raise ValueError(f"need at least one training pair, got {num_pairs}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    epochs = math.ceil(TARGET_STEPS * batch_size / num_pairs)
    epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, epochs))
    base = LORA_LR if lora else FULL_LR
    lr = base * min(1.0, math.sqrt(REFERENCE_PAIRS / num_pairs))
    return float(epochs), max(MIN_LR, lr)


@dataclass(frozen=True)
class StoppingState:
    """Where early stopping stands after the epochs evaluated so far."""

    best_index: int | None  # index of the best epoch so far (None: nothing evaluated)
    is_best: bool  # the last epoch is the best so far (keep its weights)
    stop: bool  # `patience` epochs in a row did not improve on the best: stop training


def early_stopping(
    evaluations: Sequence[tuple[float | None, float | None]], *, patience: int
) -> StoppingState:
    """The state after per-epoch held-out (accuracy, loss) evaluations, oldest first.

    An epoch is better than the best so far when its accuracy is higher, or equal with a
    lower loss (a missing figure compares worst). The first epoch is the first best. `stop`
    once the last `patience` epochs all failed to improve; patience 0 never stops.
    """
    if patience < 0:
        raise ValueError(f"patience must be >= 0, got {patience}")

    def key(evaluation: tuple[float | None, float | None]) -> tuple[float, float]:
        accuracy, loss = evaluation
        return (
            -math.inf if accuracy is None or math.isnan(accuracy) else accuracy,
            -math.inf if loss is None or math.isnan(loss) else -loss,
        )

    best: int | None = None
    for index, evaluation in enumerate(evaluations):
        if best is None or key(evaluation) > key(evaluations[best]):
            best = index
    if best is None:
        return StoppingState(None, False, False)
    last = len(evaluations) - 1
    since_best = last - best
    return StoppingState(best, best == last, patience > 0 and since_best >= patience)


CHANCE = 0.5
NEAR_CHANCE = 0.05  # held-out accuracy within this of chance: the model learned ~nothing
BELOW_AGREEMENT = 0.10  # this far below the labelers' own agreement: far from the ceiling


def accuracy_warnings(accuracy: float | None, labeler_agreement: float | None) -> list[str]:
    """Warnings about a reward model's held-out accuracy (against the labels).

    Near chance (within NEAR_CHANCE of 0.5), or more than BELOW_AGREEMENT below the labelers'
    agreement with each other (the ceiling a model of these labels can reach): optimising a
    policy against such a model mostly optimises its noise.
    """
    if accuracy is None or math.isnan(accuracy):
        return []
    warnings = []
    if accuracy < CHANCE + NEAR_CHANCE:
        warnings.append(
            f"warning: reward-model held-out accuracy {accuracy:.3f} is within "
            f"{NEAR_CHANCE:.2f} of chance ({CHANCE:.2f}): it learned little from these labels"
        )
    if (
        labeler_agreement is not None
        and not math.isnan(labeler_agreement)
        and accuracy < labeler_agreement - BELOW_AGREEMENT
    ):
        warnings.append(
            f"warning: reward-model held-out accuracy {accuracy:.3f} is far below the "
            f"labelers' agreement {labeler_agreement:.3f} (more than {BELOW_AGREEMENT:.2f}): "
            "more epochs, a larger learning rate or more labels may help"
        )
    return warnings
