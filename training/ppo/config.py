"""What a PPO run is told (PPOConfig) and what it returns (PPOResult).

Every field carries its one-line doc in `option(default, help)`: `train_ppo --help` shows it,
and `training_config.json` beside the policy records every value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from training.cli import config_from_options, option

# Weight dtypes too coarse for the optimizer's updates: only for frozen (LoRA base) weights.
LOW_PRECISION_DTYPES = ("bfloat16", "bf16", "float16", "fp16", "half")


@dataclass(frozen=True)
class PPOConfig:
    """Hyperparameters of one PPO run; defaults follow Huang et al. (2024) where they apply."""

    total_episodes: int = option(1024, "episodes (prompt + sampled response) to train on in total")
    batch_size: int = option(64, "episodes per rollout, over all processes")
    mini_batches: int = option(4, "minibatches each rollout is split into, one optimizer step each")
    ppo_epochs: int = option(4, "passes of PPO updates over each rollout")
    gradient_accumulation_steps: int = option(
        1, "micro-batches per minibatch (saves memory; losses weighted by valid tokens: same maths)"
    )
    lr: float = option(3e-6, "AdamW peak learning rate (policy and value model)")
    adam_eps: float = option(1e-5, "AdamW epsilon (1e-5 as in the OpenAI baselines)")
    weight_decay: float = option(0.0, "AdamW weight decay")
    anneal_lr: bool = option(True, "decay the learning rate linearly to 0 over the run")
    response_length: int = option(53, "most tokens sampled per response")
    max_prompt_length: int = option(512, "prompts longer than this keep their last tokens")
    temperature: float = option(
        0.7, "sampling temperature, also dividing the logits of every logprob"
    )
    kl_coef: float = option(
        0.05, "beta: weight of the per-token KL penalty (initial value if adaptive)"
    )
    kl_estimator: Literal["k1", "k3"] = option(
        "k1", "per-token KL estimate: k1 (log p - log q) or k3 ((r - 1) - log r)"
    )
    target_kl: float | None = option(
        None, "per-episode KL the adaptive controller steers to (None: fixed coefficient)"
    )
    horizon: int = option(10_000, "episodes over which the adaptive controller reacts")
    gamma: float = option(1.0, "discount factor of GAE")
    lam: float = option(0.95, "lambda of GAE")
    cliprange: float = option(0.2, "policy ratio clipping epsilon")
    cliprange_value: float = option(0.2, "value clipping epsilon around the rollout values")
    vf_coef: float = option(0.1, "weight of the value loss in the joint loss")
    max_grad_norm: float = option(1.0, "global gradient-norm clipping threshold")
    missing_eos_penalty: float | None = option(
        1.0, "subtracted from the scores of responses without EOS (None: no penalty)"
    )
    whiten_rewards: bool = option(False, "whiten per-token rewards (without shifting the mean)")
    ptx_data: str | None = option(
        None,
        "JSON lines of text or prompt/response examples whose LM loss joins every update "
        "(PPO-ptx; None: off)",
    )
    ptx_coef: float = option(
        1.0, "gamma: weight of the ptx LM loss (mean token NLL) beside the PPO loss"
    )
    lora: bool = option(False, "train a LoRA adapter; the reference is the adapter disabled")
    lora_r: int = option(16, "LoRA rank")
    lora_alpha: int = option(32, "LoRA alpha (scaling = alpha / r)")
    lora_target_modules: tuple[str, ...] | None = option(
        None, "modules to adapt, comma-separated (None: peft's default for the architecture)"
    )
    gradient_checkpointing: bool = option(
        False, "recompute policy and value activations in the backward pass (memory for compute)"
    )
    rollout_batch_size: int | None = option(
        None, "episodes per forward pass during the rollout (None: the whole local batch)"
    )
    seed: int = option(0, "seed of sampling, prompt order and minibatch shuffles")
    eval_every: int = option(10, "sample completions for the eval prompts every N steps (0: never)")
    num_eval_prompts: int = option(
        8, "prompts held out of training (with eval_every > 0) for eval samples and eval KL"
    )
    eval_fraction: float | None = option(
        None, "share of the prompts held out instead of num_eval_prompts (None: use the count)"
    )
    save_every: int = option(
        50, "write a resumable checkpoint every N steps (0: only the final policy)"
    )
    keep_checkpoints: int = option(2, "most recent checkpoints kept on disk (at least 1)")
    resume: bool = option(
        True, "continue from out_dir's latest checkpoint (False: delete them, start over)"
    )
    device: Literal["auto", "cpu", "cuda"] = option(
        "auto", "auto, cpu or cuda (under accelerate launch the launcher picks the GPU)"
    )
    dtype: str = option(
        "float32",
        "weights dtype; bfloat16/float16 only with LoRA (frozen base), else use mixed_precision",
    )
    mixed_precision: Literal["no", "bf16", "fp16"] = option(
        "no", "accelerate mixed precision: fp32 master weights, bf16/fp16 compute (fp16: CUDA only)"
    )
    progress: bool = option(True, "show a tqdm progress bar")

    def __post_init__(self) -> None:
        problems = []
        if self.kl_estimator not in ("k1", "k3"):
            problems.append(f"kl_estimator must be 'k1' or 'k3', not {self.kl_estimator!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            problems.append(f"device must be auto, cpu or cuda, not {self.device!r}")
        for name in ("batch_size", "mini_batches", "ppo_epochs", "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        if self.response_length < 1 or self.max_prompt_length < 1:
            problems.append("response_length and max_prompt_length must be at least 1")
        if self.total_episodes < self.batch_size:
            problems.append(
                f"total_episodes ({self.total_episodes}) must be at least batch_size ({self.batch_size})"
            )
        micro = self.mini_batches * self.gradient_accumulation_steps
        if self.batch_size % micro:
            problems.append(
                f"batch_size ({self.batch_size}) must be divisible by mini_batches x "
                f"gradient_accumulation_steps ({micro})"
            )
        if self.keep_checkpoints < 1:
            # Pruning slices checkpoints[:-keep]: 0 would keep them all, a negative count
            # would delete the oldest ones and keep the rest.
            problems.append("keep_checkpoints must be at least 1")
        if self.ptx_coef < 0:
            problems.append("ptx_coef must be 0 or more")
        if self.temperature <= 0:
            problems.append("temperature must be positive")
        if self.target_kl is not None and self.target_kl <= 0:
            problems.append("target_kl must be positive when set")
        if self.lr <= 0:
            problems.append("lr must be positive")
        if self.num_eval_prompts < 0:
            problems.append("num_eval_prompts must be >= 0")
        if self.eval_fraction is not None and not 0 < self.eval_fraction < 1:
            problems.append("eval_fraction must be in (0, 1) when set")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            problems.append(
                f"mixed_precision must be no, bf16 or fp16, not {self.mixed_precision!r}"
            )
        if self.dtype in LOW_PRECISION_DTYPES and not self.lora:
            problems.append(
                f"dtype {self.dtype} without LoRA would train {self.dtype} weights directly (small "
                "updates round away); use dtype float32 with mixed_precision bf16, or lora"
            )
        if problems:
            raise ValueError("invalid PPO config: " + "; ".join(problems))

    @property
    def num_steps(self) -> int:
        """Number of rollout + update steps in the run."""
        return self.total_episodes // self.batch_size

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> PPOConfig:
        """Build a config from command options: unknown keys and None values are ignored."""
        return config_from_options(cls, options)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        data = dataclasses.asdict(self)
        if data["lora_target_modules"] is not None:
            data["lora_target_modules"] = list(data["lora_target_modules"])
        return data


@dataclass(frozen=True)
class PPOResult:
    """What a finished PPO run produced."""

    output_dir: Path  # the trained policy (HF format, merged when LoRA) and its tokenizer
    steps: int  # PPO steps done in total (resumed runs included)
    episodes: int  # episodes trained on in total
    metrics: dict[str, float]  # the last step's metrics
    history: list[dict[str, float]] = field(default_factory=list)  # every step's metrics
    resumed_from: int | None = None  # the checkpoint step this call resumed from, if any
    # KL to the reference on the held-out eval prompts at the last eval (None: no evals); the
    # figure to report, unlike metrics["kl"] (the last training batch).
    eval_kl: float | None = None
    num_eval_prompts: int = 0  # prompts held out of training
    # The eval step with the best held-out gold (its policy in output_dir/best_gold/) and
    # that eval_gold; None without a judge or evals (and on processes other than the main).
    best_gold_step: int | None = None
    best_gold: float | None = None
