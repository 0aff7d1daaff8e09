"""PPO for language models (being split into phase modules)."""

from training.ppo.train import *  # noqa: F403
from training.ppo.train import __all__  # noqa: F401
