"""Reward-model training (being split into modules)."""

from training.reward.train import *  # noqa: F403
from training.reward.train import __all__  # noqa: F401
