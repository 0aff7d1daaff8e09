"""PPO with a KL penalty for language models: the RL stage of InstructGPT, on torch + accelerate.

Reads top to bottom like CleanRL, one module per phase, in the order `train.train_ppo` runs them:

- `config`: PPOConfig (every field with its one-line doc) and PPOResult;
- `models`: policy, frozen reference, critic and reward, and the forward passes that score;
- `rollout`: prompts drawn, responses sampled, scored, KL-shaped rewards and GAE advantages;
- `update`: epochs of clipped policy and value losses over minibatches, optimizer, schedule;
- `metrics`: what each step logs (METRICS) and where; `checkpoint`: save and exact resume;
- `best_gold`: with a judge, the policy of the eval step with the best held-out gold;
- `math`: the pure tensor math (GAE, whitening, KL estimators, losses), tested by hand.

Every detail of "The N Implementation Details of RLHF with PPO" (Huang et al., 2024) that
SPEC section 6 requires is marked with a `# detail:` comment:

- a separate value model initialised from the reward model (from the policy with a fresh
  scalar head when the reward is a Python callable, or when the reward model speaks another
  vocabulary);
- per-token KL to the frozen reference inside the reward (k1, or k3), fixed or adaptive
  coefficient; GAE (gamma 1, lambda 0.95); whitened advantages; clipped policy and value
  losses; several epochs over minibatches per rollout;
- logits divided by the sampling temperature in every log-probability;
- dropout off in all models; left padding with a pad token distinct from EOS;
- responses truncated after their first EOS; responses without EOS penalised;
- gradient clipping, AdamW, a linear learning-rate schedule;
- LoRA mode: the policy is a peft adapter and the reference is the same model with the
  adapter disabled, so only one base model sits in memory; merged weights are saved.

Also: sampling with exactly the configured settings (`training.sampling`: nothing from the
checkpoint's generation_config.json); fp32 master weights under `mixed_precision`; gradient
accumulation weighted by valid tokens; resume refused for another policy, reward, judge or
prompt set (`checkpoint.run_identity`); evals and `eval_kl` on held-out prompts.

Runs unchanged under `accelerate launch` (DDP, DeepSpeed ZeRO-2; see configs/accelerate/).
No Django here: the `train_ppo` command wraps `train_ppo()`.
"""

from __future__ import annotations

import importlib
from typing import Any

# Each public name and the submodule that defines it, imported on first use: so the command's
# --help (training.ppo.config, training.cli) loads without torch, which is an optional extra.
_EXPORTS = {
    "CallableLoadError": "training.callables",
    "load_callable": "training.callables",
    "PPOConfig": "training.ppo.config",
    "PPOResult": "training.ppo.config",
    "METRICS": "training.ppo.metrics",
    "SUPPRESSED_LOGIT": "training.ppo.models",
    "build_value_model": "training.ppo.models",
    "disable_dropout": "training.ppo.models",
    "response_logits": "training.ppo.models",
    # Not the function `rollout`: that name stays the submodule's.
    "Rollout": "training.ppo.rollout",
    "generation_config": "training.ppo.rollout",
    "train_ppo": "training.ppo.train",
    "check_setup": "training.ppo.train",
    # the pure math, so `training.ppo` is the one import for PPO
    **{
        name: "training.ppo.math"
        for name in (
            "AdaptiveKLController",
            "compute_gae",
            "kl_k1",
            "kl_k3",
            "logprobs_from_logits",
            "masked_mean",
            "masked_whiten",
            "policy_loss",
            "truncate_after_eos",
            "value_loss",
        )
    },
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value
