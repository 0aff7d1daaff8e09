"""What the training commands do on the ranks of a torchrun / accelerate job other than 0."""

from __future__ import annotations

from collections.abc import Callable

from django.core.management.base import CommandError

from training.distributed import wait_for_everyone


def train_on_another_rank(train: Callable[[], object], errors: tuple[type[Exception], ...]) -> None:
    """Train this process's share and write nothing: rank 0 records the one TrainingRun and
    ModelVersion, and this rank waits at the barrier until it has."""
    try:
        train()
    except errors as exc:
        raise CommandError(str(exc).splitlines()[0]) from None
    wait_for_everyone()
