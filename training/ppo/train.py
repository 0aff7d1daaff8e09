"""PPO with a KL penalty for language models: the RL stage of InstructGPT, on torch + accelerate.

Reads top to bottom like CleanRL: config, models, then the loop (rollout, rewards, advantages,
PPO epochs, logging, checkpoints). The pure math lives in `training.ppo_math`. Every detail of
"The N Implementation Details of RLHF with PPO" (Huang et al., 2024) that SPEC section 6
requires is marked with a `# detail:` comment:

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

Runs unchanged under `accelerate launch` (DDP, DeepSpeed ZeRO-2; see configs/accelerate/).
No Django here: the `train_ppo` command wraps `train_ppo()` below.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import torch
from torch import nn

from training.callables import CallableLoadError, load_callable  # noqa: F401  (re-exported)
from training.modeling import Prompt, encode_prompt, load_causal_lm, lora_fan_in_fan_out
from training.ppo.math import (
    INVALID_LOGPROB,
    AdaptiveKLController,
    apply_missing_eos_penalty,
    compute_gae,
    entropy_from_logits,
    explained_variance,
    kl_k1,
    kl_k3,
    logprobs_from_logits,
    masked_mean,
    masked_whiten,
    policy_loss,
    token_rewards,
    truncate_after_eos,
    value_loss,
)

__all__ = [
    "METRICS",
    "CallableLoadError",
    "PPOConfig",
    "PPOResult",
    "load_callable",
    "train_ppo",
    # re-exported pure math, so `training.ppo` is the one import for PPO
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
]

logger = logging.getLogger(__name__)

RewardFn = Callable[[list[Prompt], list[str]], Sequence[float]]

# A finite stand-in for -inf on the pad logit: exp() of it is exactly 0 in float32, and unlike
# -inf it keeps p * log p (entropy) free of 0 * inf = NaN.
SUPPRESSED_LOGIT = -1e4
CHECKPOINT_PREFIX = "step-"
# Not config.json: out_dir is a transformers model directory whose config.json is the model's.
CONFIG_FILE = "training_config.json"


# What each per-step metric means (metrics.jsonl rows, TensorBoard "ppo/<name>", on_metrics).
# Means over the rollout's episodes (all processes); token-level figures over valid tokens.
METRICS: dict[str, str] = {
    "step": "PPO steps done (rollout + update)",
    "episodes": "episodes trained on so far",
    "lr": "learning rate used by this step's updates",
    "kl_coef": "KL coefficient (beta) used in this step's rewards",
    "score": "reward-model score, normalised (raw - bias), before the missing-EOS penalty",
    "score_raw": "reward-model score as the model outputs it (callables: the returned value)",
    "non_score_reward": "sum over an episode's tokens of -beta * KL",
    "rlhf_reward": "what PPO maximises: penalised score + non-score reward",
    "kl": "sum over an episode's tokens of the KL estimate (k1 or k3) to the reference",
    "kl_k3": "the same sum with the k3 estimate ((r - 1) - log r): never negative, for reports",
    "entropy": "policy entropy per token at the sampling temperature",
    "response_length": "response tokens, EOS included",
    "eos_rate": "share of responses that ended with EOS",
    "explained_variance": "1 - Var(returns - values) / Var(returns): critic quality",
    "policy_loss": "clipped surrogate loss, mean over updates",
    "value_loss": "clipped value loss, mean over updates",
    "clipfrac": "share of tokens where the policy ratio was clipped",
    "value_clipfrac": "share of tokens where the value was clipped",
    "approx_kl": "0.5 * mean (log ratio)^2: how far each update moved from the rollout policy",
    "ratio": "mean probability ratio new / rollout policy",
    "grad_norm": "global gradient norm before clipping",
    "gold_score": "the judge's score of the responses (only with a judge)",
    "step_time": "seconds this step took",
    "episodes_per_s": "episodes per second since this call started training",
}


# =========================================================================== configuration


@dataclass(frozen=True)
class PPOConfig:
    """Hyperparameters of one PPO run; defaults follow Huang et al. (2024) where they apply."""

    total_episodes: int = 1024  # episodes (prompt + sampled response) to train on in total
    batch_size: int = 64  # episodes per rollout, over all processes
    mini_batches: int = 4  # minibatches each rollout is split into, one optimizer step each
    ppo_epochs: int = 4  # passes of PPO updates over each rollout
    gradient_accumulation_steps: int = 1  # micro-batches per minibatch (saves memory, same maths)
    lr: float = 3e-6  # AdamW peak learning rate (policy and value model)
    adam_eps: float = 1e-5  # AdamW epsilon (1e-5 as in the OpenAI baselines)
    weight_decay: float = 0.0  # AdamW weight decay
    anneal_lr: bool = True  # decay the learning rate linearly to 0 over the run
    response_length: int = 53  # most tokens sampled per response
    max_prompt_length: int = 512  # prompts longer than this keep their last tokens
    temperature: float = 0.7  # sampling temperature, also dividing the logits of every logprob
    kl_coef: float = 0.05  # beta: weight of the per-token KL penalty (initial value if adaptive)
    kl_estimator: str = "k1"  # "k1" (log p - log q) or "k3" ((r - 1) - log r) per-token KL
    target_kl: float | None = None  # per-episode KL the adaptive controller steers to (None: fixed)
    horizon: int = 10_000  # episodes over which the adaptive controller reacts
    gamma: float = 1.0  # discount factor of GAE
    lam: float = 0.95  # lambda of GAE
    cliprange: float = 0.2  # policy ratio clipping epsilon
    cliprange_value: float = 0.2  # value clipping epsilon around the rollout values
    vf_coef: float = 0.1  # weight of the value loss in the joint loss
    max_grad_norm: float = 1.0  # global gradient-norm clipping threshold
    missing_eos_penalty: float | None = 1.0  # subtracted from scores of responses without EOS
    whiten_rewards: bool = False  # whiten per-token rewards (without shifting the mean)
    lora: bool = False  # train a LoRA adapter; the reference is the adapter disabled
    lora_r: int = 16  # LoRA rank
    lora_alpha: int = 32  # LoRA alpha (scaling = alpha / r)
    lora_dropout: float = 0.0  # LoRA dropout (0: dropout stays off in all models)
    lora_target_modules: tuple[str, ...] | None = None  # modules to adapt (None: peft default)
    rollout_batch_size: int | None = None  # episodes per forward during the rollout (None: all)
    seed: int = 0  # seed of sampling, prompt order and minibatch shuffles
    eval_every: int = 10  # sample completions for the eval prompts every N steps (0: never)
    num_eval_prompts: int = 8  # the first N prompts are the fixed eval prompts
    save_every: int = 50  # write a resumable checkpoint every N steps (0: only at the end)
    keep_checkpoints: int = 2  # most recent checkpoints kept on disk
    resume: bool = (
        True  # continue from out_dir's latest checkpoint (False: delete them, start over)
    )
    device: str = "auto"  # "auto", "cpu" or "cuda" (accelerate launch decides the GPU)
    dtype: str = "float32"  # weights dtype; use accelerate's mixed precision for bf16 compute
    progress: bool = True  # show a tqdm progress bar

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
        if self.temperature <= 0:
            problems.append("temperature must be positive")
        if self.target_kl is not None and self.target_kl <= 0:
            problems.append("target_kl must be positive when set")
        if self.lr <= 0:
            problems.append("lr must be positive")
        if problems:
            raise ValueError("invalid PPO config: " + "; ".join(problems))

    @property
    def num_steps(self) -> int:
        """Number of rollout + update steps in the run."""
        return self.total_episodes // self.batch_size

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> PPOConfig:
        """Build a config from command options: unknown keys and None values are ignored."""
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in options or options[f.name] is None:
                continue
            values[f.name] = _coerce(f.name, hints[f.name], options[f.name])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        data = dataclasses.asdict(self)
        if data["lora_target_modules"] is not None:
            data["lora_target_modules"] = list(data["lora_target_modules"])
        return data


def _coerce(name: str, hint: Any, value: Any) -> Any:
    """Convert a command-line value to the field's type (a comma list for target modules)."""
    if name == "lora_target_modules":
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return tuple(value) or None
    kinds = getattr(hint, "__args__", (hint,))
    if type(None) in kinds and isinstance(value, str) and value.strip().lower() in ("none", "off"):
        return None  # e.g. --missing-eos-penalty none
    try:
        if bool in kinds:
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
        if int in kinds and not isinstance(value, bool):
            return int(value)
        if float in kinds:
            return float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"option {name}: {value!r} is not a valid {kinds[0].__name__}") from exc
    return value


@dataclass(frozen=True)
class PPOResult:
    """What a finished PPO run produced."""

    output_dir: Path  # the trained policy (HF format, merged when LoRA) and its tokenizer
    steps: int  # PPO steps done in total (resumed runs included)
    episodes: int  # episodes trained on in total
    metrics: dict[str, float]  # the last step's metrics
    history: list[dict[str, float]] = field(default_factory=list)  # every step's metrics
    resumed_from: int | None = None  # the checkpoint step this call resumed from, if any


# =========================================================================== callables


def _maybe_callable(value: Any) -> Any:
    """A `module:function` string becomes the callable; a path or a callable passes through."""
    if isinstance(value, str) and ":" in value and not os.path.exists(value):
        return load_callable(value)
    return value


def _call_scorer(
    fn: RewardFn, prompts: list[Prompt], responses: list[str], what: str
) -> torch.Tensor:
    """Call a reward or judge callable and check it returned one finite float per response."""
    try:
        out = [float(x) for x in fn(prompts, responses)]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the {what} must return a list of floats: {exc}") from exc
    if len(out) != len(responses):
        raise ValueError(f"the {what} returned {len(out)} scores for {len(responses)} responses")
    scores = torch.tensor(out, dtype=torch.float32)
    if not torch.isfinite(scores).all():
        raise ValueError(f"the {what} returned a non-finite score")
    return scores


class _Reward:
    """Scores responses; returns (raw, normalised) scores. Wraps an RM directory or a callable."""

    def __init__(
        self,
        reward: str | os.PathLike | RewardFn,
        device: torch.device,
        dtype: torch.dtype,
        batch_size: int,
    ) -> None:
        self.scorer = None
        self.fn: RewardFn | None = None
        if callable(reward):
            self.fn = reward
        else:
            from training.reward import load_reward_model

            # merged=True: a LoRA reward model becomes a plain model the critic can copy.
            self.scorer = load_reward_model(
                str(reward), device=device, dtype=dtype, merged=True, batch_size=batch_size
            )
            disable_dropout(self.scorer.model)

    def __call__(
        self, prompts: list[Prompt], responses: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.fn is not None:
            scores = _call_scorer(self.fn, prompts, responses, "reward function")
            return scores, scores
        # The RM scores text: render_reward_input re-tokenises the decoded response with the
        # RM's own tokenizer and template, so a reward model with another vocabulary works.
        raw = torch.tensor(self.scorer.score(prompts, responses, normalize=False))
        # Normalised = raw - bias, the bias that gives reference responses mean 0 (InstructGPT).
        return raw, raw - self.scorer.bias


# =========================================================================== models


def disable_dropout(model: nn.Module) -> None:
    """Set every dropout probability to 0 (detail: dropout off, so logprobs are reproducible)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    config = getattr(model, "config", None)
    for name in ("attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop"):
        if config is not None and isinstance(getattr(config, name, None), float):
            setattr(config, name, 0.0)


def model_inputs(query_responses: torch.Tensor, pad_id: int) -> dict[str, torch.Tensor]:
    """Inputs for a left-padded batch: padding masked out and positions counted from 0.

    detail: pad is distinct from EOS, so `ids != pad` is exactly the attention mask; position
    ids skip the left padding, as generation computes them, so logprobs match sampling.
    """
    attention_mask = query_responses != pad_id
    position_ids = attention_mask.long().cumsum(1) - attention_mask.long()
    input_ids = query_responses.masked_fill(~attention_mask, 0)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}


def response_logits(
    model: nn.Module, query_responses: torch.Tensor, context_length: int, pad_id: int
) -> torch.Tensor:
    """Logits that predicted each response token: (B, C + T) ids -> (B, T, V) logits."""
    response_len = query_responses.size(1) - context_length
    # logits_to_keep: the LM head runs on the response positions only, not on the prompt.
    out = model(
        **model_inputs(query_responses, pad_id), use_cache=False, logits_to_keep=response_len + 1
    )
    logits = out.logits[:, :-1]
    # The pad token is suppressed at sampling time, so it is outside the policy's action space
    # here too: the distribution we score is the distribution we sampled from.
    return logits.index_fill(-1, torch.tensor([pad_id], device=logits.device), SUPPRESSED_LOGIT)


def _value_parts(value_model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(backbone, scalar head) of a sequence-classification model, peft-wrapped or not."""
    inner = value_model.get_base_model() if hasattr(value_model, "get_base_model") else value_model
    backbone = getattr(inner, inner.base_model_prefix)
    for head_name in ("score", "classifier", "v_head"):
        head = getattr(inner, head_name, None)
        if isinstance(head, nn.Module):
            return backbone, head
    raise ValueError(f"{type(inner).__name__} has no scalar head named score or classifier")


def response_values(
    value_model: nn.Module, query_responses: torch.Tensor, context_length: int, pad_id: int
) -> torch.Tensor:
    """Per-token values V(s_t) of the state before each response token: (B, T)."""
    backbone, head = _value_parts(value_model)
    hidden = backbone(**model_inputs(query_responses, pad_id), use_cache=False).last_hidden_state
    return head(hidden[:, context_length - 1 : -1]).squeeze(-1).float()


class PolicyAndValue(nn.Module):
    """Policy and value model as one module, so that one optimizer, one backward and one
    DDP / DeepSpeed engine cover both (DeepSpeed accepts one trained model per accelerator)."""

    def __init__(self, policy: nn.Module, value_model: nn.Module) -> None:
        super().__init__()
        self.policy = policy
        self.value_model = value_model

    def forward(
        self, query_responses: torch.Tensor, context_length: int, pad_id: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = response_logits(self.policy, query_responses, context_length, pad_id)
        values = response_values(self.value_model, query_responses, context_length, pad_id)
        return logits, values


def _apply_lora(model: nn.Module, config: PPOConfig, task_type: str) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    target = list(config.lora_target_modules) if config.lora_target_modules else None
    lora = LoraConfig(
        task_type=task_type,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=target,
        fan_in_fan_out=lora_fan_in_fan_out(model),
    )
    return get_peft_model(model, lora)


def _same_vocabulary(a: Any, b: Any) -> bool:
    return len(a) == len(b) and a.get_vocab() == b.get_vocab()


def build_value_model(
    policy_path: str | os.PathLike,
    policy_tokenizer: Any,
    reward_model: nn.Module | None,
    reward_tokenizer: Any | None,
    dtype: torch.dtype,
) -> tuple[nn.Module, str]:
    """The critic and where it came from ("reward_model" or "policy").

    detail: the value model is a separate network initialised from the reward model, whose
    features already track reward. It reads policy tokens, so with a callable reward, or a
    reward model with another vocabulary, it is the policy's transformer with a fresh scalar
    head instead.
    """
    if reward_model is not None and _same_vocabulary(policy_tokenizer, reward_tokenizer):
        value_model = copy.deepcopy(reward_model)
        source = "reward_model"
    else:
        from training.reward.scoring import load_sequence_classifier

        # A fresh scalar head on the policy's transformer (the warning about it is silenced).
        value_model = load_sequence_classifier(str(policy_path), policy_tokenizer, dtype=dtype)
        source = "policy"
    value_model.config.pad_token_id = policy_tokenizer.pad_token_id
    return value_model.to(dtype), source


# =========================================================================== data


def _prompt_indices(step: int, batch_size: int, n_prompts: int, seed: int) -> list[int]:
    """Prompt indices of a global step: epochs of seeded shuffles, a pure function of the step
    so that a resumed run draws exactly the prompts the uninterrupted one would have."""
    start = step * batch_size
    perms: dict[int, list[int]] = {}
    indices: list[int] = []
    for position in range(start, start + batch_size):
        epoch, offset = divmod(position, n_prompts)
        if epoch not in perms:
            generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            perms[epoch] = torch.randperm(n_prompts, generator=generator).tolist()
        indices.append(perms[epoch][offset])
    return indices


def _left_pad(rows: list[list[int]], pad_id: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([[pad_id] * (width - len(r)) + r for r in rows], dtype=torch.long)


def _pad_right(tensor: torch.Tensor, width: int, value: float) -> torch.Tensor:
    if tensor.size(1) == width:
        return tensor
    return torch.nn.functional.pad(tensor, (0, width - tensor.size(1)), value=value)


def _chunks(n: int, size: int | None) -> Iterator[slice]:
    size = size or n
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


# =========================================================================== rollout


@dataclass
class Rollout:
    """One batch of sampled episodes and everything PPO needs about them."""

    query_responses: torch.Tensor  # (B, C + T) left-padded prompt, then response, then pad
    responses: torch.Tensor  # (B, T) response tokens, pad after the first EOS
    lengths: torch.Tensor  # (B,) valid response tokens (EOS included)
    has_eos: torch.Tensor  # (B,) whether the response ended with EOS
    logprobs: torch.Tensor  # (B, T) policy logprobs at sampling time
    ref_logprobs: torch.Tensor  # (B, T) reference logprobs
    values: torch.Tensor  # (B, T) value estimates
    entropy: torch.Tensor  # (B, T) policy entropy per token
    texts: list[str]  # decoded responses (EOS stripped)

    @property
    def context_length(self) -> int:
        return self.query_responses.size(1) - self.responses.size(1)

    @property
    def mask(self) -> torch.Tensor:
        positions = torch.arange(self.responses.size(1), device=self.responses.device)
        return positions.unsqueeze(0) < self.lengths.unsqueeze(1)


def generation_config(config: PPOConfig, tokenizer: Any, stop_ids: list[int]) -> Any:
    """Pure ancestral sampling at the training temperature, nothing inherited from the model.

    A model's own generation_config may carry top_p, top_k or a repetition penalty; any of
    those would make the sampling distribution differ from the one PPO scores.
    """
    from transformers import GenerationConfig

    return GenerationConfig(
        max_new_tokens=config.response_length,
        do_sample=True,
        temperature=config.temperature,
        top_k=0,
        top_p=1.0,
        eos_token_id=stop_ids,
        pad_token_id=tokenizer.pad_token_id,
        suppress_tokens=[tokenizer.pad_token_id],
    )


@torch.no_grad()
def rollout(
    policy: nn.Module,
    ref_policy: nn.Module | None,
    value_model: nn.Module,
    tokenizer: Any,
    queries: torch.Tensor,
    gen_config: Any,
    config: PPOConfig,
    stop_ids: list[int],
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> Rollout:
    """Sample responses to left-padded `queries` and score them with policy, reference and critic.

    `ref_policy` None means LoRA mode: the reference is `policy` with its adapter disabled.
    """
    pad_id = tokenizer.pad_token_id
    context_length = queries.size(1)
    parts: dict[str, list[torch.Tensor]] = {
        k: [] for k in ("qr", "logprobs", "ref", "values", "entropy")
    }
    for chunk in _chunks(queries.size(0), config.rollout_batch_size):
        query = queries[chunk]
        with autocast():
            sequences = policy.generate(
                input_ids=query, attention_mask=query != pad_id, generation_config=gen_config
            )
            # detail: truncate after the first EOS (generation pads finished rows, but a row
            # can also stop on a second stop id; one rule for all).
            responses, _, _ = truncate_after_eos(sequences[:, context_length:], stop_ids, pad_id)
            query_responses = torch.cat([query, responses], dim=1)
            logits = response_logits(policy, query_responses, context_length, pad_id)
            logprobs = logprobs_from_logits(logits, responses, config.temperature)
            entropy = entropy_from_logits(logits, config.temperature)
            del logits
            if ref_policy is None:
                with policy.disable_adapter():  # detail: LoRA reference = adapter disabled
                    ref_logits = response_logits(policy, query_responses, context_length, pad_id)
            else:
                ref_logits = response_logits(ref_policy, query_responses, context_length, pad_id)
            ref_logprobs = logprobs_from_logits(ref_logits, responses, config.temperature)
            del ref_logits
            values = response_values(value_model, query_responses, context_length, pad_id)
        parts["qr"].append(query_responses)
        parts["logprobs"].append(logprobs)
        parts["ref"].append(ref_logprobs)
        parts["values"].append(values)
        parts["entropy"].append(entropy)

    # Chunks stop generating at different lengths: right-pad them to one width.
    width = max(t.size(1) for t in parts["logprobs"])
    query_responses = torch.cat(
        [_pad_right(t, context_length + width, pad_id) for t in parts["qr"]]
    )
    responses, lengths, has_eos = truncate_after_eos(
        query_responses[:, context_length:], stop_ids, pad_id
    )
    batch = Rollout(
        query_responses=query_responses,
        responses=responses,
        lengths=lengths,
        has_eos=has_eos,
        logprobs=torch.cat([_pad_right(t, width, INVALID_LOGPROB) for t in parts["logprobs"]]),
        ref_logprobs=torch.cat([_pad_right(t, width, INVALID_LOGPROB) for t in parts["ref"]]),
        values=torch.cat([_pad_right(t, width, 0.0) for t in parts["values"]]),
        entropy=torch.cat([_pad_right(t, width, 0.0) for t in parts["entropy"]]),
        texts=[],
    )
    mask = batch.mask
    batch.logprobs = batch.logprobs.masked_fill(~mask, INVALID_LOGPROB)
    batch.ref_logprobs = batch.ref_logprobs.masked_fill(~mask, INVALID_LOGPROB)
    batch.values = batch.values.masked_fill(~mask, 0.0)
    # The text a reward sees ends before EOS: the reward renderer adds its own EOS handling.
    ids = batch.responses.masked_fill(
        ~mask | torch.isin(batch.responses, torch.tensor(stop_ids, device=mask.device)), pad_id
    )
    batch.texts = tokenizer.batch_decode(ids.tolist(), skip_special_tokens=True)
    return batch


# =========================================================================== checkpoints and logs


def _checkpoints(out_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (trainer_state.json is written last) sorted by step."""
    root = out_dir / "checkpoints"
    found = []
    if root.is_dir():
        for path in root.iterdir():
            if path.name.startswith(CHECKPOINT_PREFIX) and (path / "trainer_state.json").is_file():
                found.append((int(path.name[len(CHECKPOINT_PREFIX) :]), path))
    return sorted(found)


def _truncate_jsonl(path: Path, last_step: int) -> list[dict[str, Any]]:
    """Drop rows logged after `last_step` (work lost with the crash) and return the rest."""
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    kept = [r for r in rows if r.get("step", 0) <= last_step]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    return kept


def _tensorboard(log_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: metrics.jsonl is the record
        return None
    return SummaryWriter(log_dir=str(log_dir))


# =========================================================================== training


def train_ppo(
    policy_path: str | os.PathLike,
    reward: str | os.PathLike | RewardFn,
    prompts: Sequence[Prompt],
    out_dir: str | os.PathLike,
    config: PPOConfig,
    *,
    judge: RewardFn | str | None = None,
    on_metrics: Callable[[dict[str, float]], None] | None = None,
) -> PPOResult:
    """Fine-tune the policy at `policy_path` with PPO against `reward`; save it to `out_dir`.

    `reward` is a reward-model directory or a callable `(prompts, responses) -> list[float]`
    (or its "module:function" name); `judge`, same form, is only logged (gold score).
    `on_metrics` gets each step's metrics on the main process. Resumes from the latest
    checkpoint in `out_dir` (config.resume).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    reward = _maybe_callable(reward)
    judge = _maybe_callable(judge) if judge is not None else None
    prompts = list(prompts)
    if not prompts:
        raise ValueError("no prompts to train on")
    out = Path(out_dir)
    # cpu=True also on a GPU-less "auto": only then does accelerate see a torchrun multi-CPU job.
    use_cpu = config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available())
    accelerator = Accelerator(
        cpu=use_cpu, gradient_accumulation_steps=config.gradient_accumulation_steps
    )
    world = accelerator.num_processes
    if config.batch_size % (world * config.mini_batches * config.gradient_accumulation_steps):
        raise ValueError(
            f"batch_size {config.batch_size} must be divisible by processes ({world}) x "
            f"mini_batches x gradient_accumulation_steps"
        )
    local_batch = config.batch_size // world
    micro_batch = local_batch // (config.mini_batches * config.gradient_accumulation_steps)
    device = accelerator.device
    set_seed(config.seed, device_specific=True)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)

    # ----------------------------------------------------------------------- models
    policy, tokenizer = load_causal_lm(policy_path, device="cpu", dtype=config.dtype)
    weights_dtype = next(policy.parameters()).dtype
    reward_fn = _Reward(reward, device, weights_dtype, config.rollout_batch_size or local_batch)
    stop_ids = sorted(
        {tokenizer.eos_token_id, *_as_list(policy.generation_config.eos_token_id)} - {None}
    )
    if tokenizer.pad_token_id in stop_ids:
        raise ValueError("the pad token must differ from every EOS token")
    value_model, value_source = build_value_model(
        policy_path,
        tokenizer,
        reward_fn.scorer.model if reward_fn.scorer else None,
        reward_fn.scorer.tokenizer if reward_fn.scorer else None,
        weights_dtype,
    )
    if reward_fn.scorer is not None and value_source == "policy":
        logger.warning(
            "the reward model's vocabulary differs from the policy's: the value model starts "
            "from the policy with a fresh head instead of from the reward model"
        )
    if config.lora:
        policy = _apply_lora(policy, config, "CAUSAL_LM")
        value_model = _apply_lora(value_model, config, "SEQ_CLS")
        ref_policy = None  # detail: the reference is the policy with its adapter disabled
    else:
        # A copy, not a second load: an added pad row must be identical in both models.
        ref_policy = copy.deepcopy(policy).requires_grad_(False).to(device)
    for model in (policy, value_model, ref_policy):
        if model is not None:
            disable_dropout(model)  # detail: dropout off in policy, reference, critic (and RM)
            model.eval()
    model = PolicyAndValue(policy, value_model)
    trainable = [p for p in model.parameters() if p.requires_grad]  # listed once, not per step
    optimizer = _adamw(trainable, config)
    num_steps = config.num_steps
    # detail: linear LR schedule, one decrement per rollout (as CleanRL and the N details).
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 1.0 - step / num_steps if config.anneal_lr else 1.0
    )
    # The scheduler is not prepared: accelerate would step it once per process per call.
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    unwrapped: PolicyAndValue = accelerator.unwrap_model(model)
    gen_config = generation_config(config, tokenizer, stop_ids)
    kl_ctl = AdaptiveKLController(config.kl_coef, config.target_kl or 1.0, config.horizon)
    kl_fn = kl_k1 if config.kl_estimator == "k1" else kl_k3

    # ----------------------------------------------------------------------- resume
    metrics_path, samples_path = out / "metrics.jsonl", out / "samples.jsonl"
    start_step, resumed_from, history = 0, None, []
    found = _checkpoints(out) if config.resume else []
    if not config.resume and accelerator.is_main_process:
        # Starting over: a stale checkpoint must never be picked up by a later resume.
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    if found:
        resumed_from, ckpt = found[-1]
        _check_resumable(ckpt, config)
        accelerator.load_state(str(ckpt))
        state = json.loads((ckpt / "trainer_state.json").read_text())
        start_step, kl_ctl.value = state["step"], state["kl_coef"]
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            history = _truncate_jsonl(metrics_path, start_step)
            _truncate_jsonl(samples_path, start_step)
    elif accelerator.is_main_process:
        for path in (metrics_path, samples_path):
            path.unlink(missing_ok=True)
    if accelerator.is_main_process:
        run_info = {
            **config.to_dict(),
            "policy_path": str(policy_path),
            "value_model_init": value_source,
            "reward": reward if isinstance(reward, str | os.PathLike) else _qualname(reward),
            "num_processes": world,
        }
        (out / CONFIG_FILE).write_text(json.dumps(run_info, indent=2, default=str) + "\n")
    writer = _tensorboard(out / "tensorboard") if accelerator.is_main_process else None
    encoded = [encode_prompt(tokenizer, p)[-config.max_prompt_length :] for p in prompts]
    if empty := [i for i, ids in enumerate(encoded) if not ids]:
        raise ValueError(f"prompt {empty[0]} renders to no tokens: a prompt needs some text")
    eval_prompts = prompts[: config.num_eval_prompts]

    def autocast() -> contextlib.AbstractContextManager:
        return accelerator.autocast()

    def sample_eval(step: int) -> None:
        """Completions for the fixed eval prompts, saved to samples.jsonl."""
        if not (accelerator.is_main_process and config.eval_every and eval_prompts):
            return
        queries = _left_pad([encoded[i] for i in range(len(eval_prompts))], tokenizer.pad_token_id)
        devices = [device] if device.type == "cuda" else []
        # A forked RNG, re-seeded: the same noise at every eval, and training's RNG untouched.
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(config.seed)
            batch = rollout(
                unwrapped.policy,
                ref_policy,
                unwrapped.value_model,
                tokenizer,
                queries.to(device),
                gen_config,
                config,
                stop_ids,
                autocast,
            )
        raw, normalized = reward_fn(eval_prompts, batch.texts)
        gold = _call_scorer(judge, eval_prompts, batch.texts, "judge") if judge else None
        with samples_path.open("a") as fh:
            for i, prompt in enumerate(eval_prompts):
                row = {
                    "step": step,
                    "prompt": prompt,
                    "response": batch.texts[i],
                    "score": float(normalized[i]),
                    "score_raw": float(raw[i]),
                    "eos": bool(batch.has_eos[i]),
                }
                if gold is not None:
                    row["gold"] = float(gold[i])
                fh.write(json.dumps(row) + "\n")

    if start_step == 0:
        sample_eval(0)
    bar = tqdm(
        total=num_steps,
        initial=start_step,
        desc="ppo",
        unit="step",
        disable=not (accelerator.is_main_process and config.progress),
    )
    started = time.perf_counter()
    row: dict[str, float] = history[-1] if history else {}

    for step in range(start_step, num_steps):
        step_started = time.perf_counter()
        # ------------------------------------------------------------------- rollout
        indices = _prompt_indices(step, config.batch_size, len(prompts), config.seed)
        local = indices[
            accelerator.process_index * local_batch : (accelerator.process_index + 1) * local_batch
        ]
        batch_prompts = [prompts[i] for i in local]
        queries = _left_pad([encoded[i] for i in local], tokenizer.pad_token_id).to(device)
        batch = rollout(
            unwrapped.policy,
            ref_policy,
            unwrapped.value_model,
            tokenizer,
            queries,
            gen_config,
            config,
            stop_ids,
            autocast,
        )
        mask = batch.mask  # (B, T)
        context_length = batch.context_length

        # ------------------------------------------------------------------- rewards
        score_raw, score = reward_fn(batch_prompts, batch.texts)
        score_raw, score = score_raw.to(device), score.to(device)
        # detail: responses without EOS are penalised (missing_eos_penalty, None: off).
        penalised = apply_missing_eos_penalty(score, batch.has_eos, config.missing_eos_penalty)
        # detail: per-token KL to the frozen reference, inside the reward.
        kl = kl_fn(batch.logprobs, batch.ref_logprobs).masked_fill(~mask, 0.0)  # (B, T)
        rewards, non_score = token_rewards(penalised, kl, batch.lengths, kl_ctl.value)
        if config.whiten_rewards:
            rewards = masked_whiten(rewards, mask, shift_mean=False)
        # detail: GAE with gamma 1, lambda 0.95; advantages whitened over valid tokens.
        advantages, returns = compute_gae(rewards, batch.values, mask, config.gamma, config.lam)
        advantages = masked_whiten(advantages, mask)

        # ------------------------------------------------------------------- PPO epochs
        lr_now = scheduler.get_last_lr()[0]
        stats: dict[str, list[torch.Tensor]] = {
            k: []
            for k in (
                "policy_loss",
                "value_loss",
                "clipfrac",
                "value_clipfrac",
                "approx_kl",
                "ratio",
                "grad_norm",
            )
        }
        for _epoch in range(config.ppo_epochs):
            order = torch.randperm(local_batch, device=device)
            for micro in order.split(micro_batch):
                with accelerator.accumulate(model):
                    # Right-trim columns past the longest response of the micro-batch.
                    width = int(batch.lengths[micro].max().clamp(min=1))
                    qr = batch.query_responses[micro, : context_length + width]
                    mb_mask = mask[micro, :width]
                    with autocast():
                        logits, new_values = model(qr, context_length, tokenizer.pad_token_id)
                    new_logprobs = logprobs_from_logits(
                        logits, qr[:, context_length:], config.temperature
                    )
                    pg_loss, clipfrac, approx_kl = policy_loss(
                        new_logprobs,
                        batch.logprobs[micro, :width],
                        advantages[micro, :width],
                        mb_mask,
                        config.cliprange,
                    )
                    vf_loss, vf_clipfrac = value_loss(
                        new_values,
                        batch.values[micro, :width],
                        returns[micro, :width],
                        mb_mask,
                        config.cliprange_value,
                    )
                    loss = pg_loss + config.vf_coef * vf_loss
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        # detail: global gradient clipping (policy and critic together).
                        norm = accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
                        if norm is not None:
                            stats["grad_norm"].append(torch.as_tensor(norm, device=device).float())
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                with torch.no_grad():
                    ratio = masked_mean(
                        torch.exp(new_logprobs - batch.logprobs[micro, :width]), mb_mask
                    )
                for name, value in (
                    ("policy_loss", pg_loss),
                    ("value_loss", vf_loss),
                    ("clipfrac", clipfrac),
                    ("value_clipfrac", vf_clipfrac),
                    ("approx_kl", approx_kl),
                    ("ratio", ratio),
                ):
                    stats[name].append(value.detach().float())
        scheduler.step()

        # ------------------------------------------------------------------- metrics
        mean_kl = kl.sum(1).mean()
        local_stats = {
            "score": score.mean(),
            "score_raw": score_raw.mean(),
            "non_score_reward": non_score.sum(1).mean(),
            "rlhf_reward": penalised.mean() + non_score.sum(1).mean(),
            "kl": mean_kl,
            "kl_k3": kl_k3(batch.logprobs, batch.ref_logprobs)
            .masked_fill(~mask, 0.0)
            .sum(1)
            .mean(),
            "entropy": masked_mean(batch.entropy, mask),
            "response_length": batch.lengths.float().mean(),
            "eos_rate": batch.has_eos.float().mean(),
            "explained_variance": torch.tensor(
                explained_variance(batch.values, returns, mask), device=device
            ),
            **{k: torch.stack(v).mean() for k, v in stats.items() if v},
        }
        if judge is not None:
            gold = _call_scorer(judge, batch_prompts, batch.texts, "judge")
            local_stats["gold_score"] = gold.mean().to(device)
        names = list(local_stats)
        reduced = accelerator.reduce(torch.stack([local_stats[k].float() for k in names]), "mean")
        row = dict(zip(names, reduced.tolist(), strict=True))
        kl_coef_used = kl_ctl.value
        if config.target_kl is not None:
            # detail: adaptive KL coefficient (Ziegler et al.), updated after the rollout.
            kl_ctl.update(row["kl"], config.batch_size)
        done = step + 1
        elapsed = time.perf_counter() - started
        row = {
            "step": done,
            "episodes": done * config.batch_size,
            "lr": lr_now,
            "kl_coef": kl_coef_used,
            **row,
            "step_time": time.perf_counter() - step_started,
            "episodes_per_s": (done - start_step) * config.batch_size / max(elapsed, 1e-9),
        }
        if accelerator.is_main_process:
            history.append(row)
            with metrics_path.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            if writer is not None:
                for key, value in row.items():
                    if key != "step" and isinstance(value, float) and math.isfinite(value):
                        writer.add_scalar(f"ppo/{key}", value, done)
            bar.set_postfix(score=f"{row['score']:.3f}", kl=f"{row['kl']:.3f}")
        bar.update(1)
        if config.eval_every and (done % config.eval_every == 0 or done == num_steps):
            sample_eval(done)
        if config.save_every and done % config.save_every == 0 and done < num_steps:
            _save_checkpoint(accelerator, out, done, kl_ctl.value, config)
        if on_metrics is not None and accelerator.is_main_process:
            on_metrics(dict(row))
    bar.close()
    if writer is not None:
        writer.close()

    # ----------------------------------------------------------------------- save
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        final_policy = accelerator.unwrap_model(model).policy
        if config.lora:
            final_policy = final_policy.merge_and_unload()  # detail: merged weights, plain HF dir
        final_policy.save_pretrained(out)
        tokenizer.save_pretrained(out)
    accelerator.wait_for_everyone()
    return PPOResult(
        output_dir=out,
        steps=num_steps,
        episodes=num_steps * config.batch_size,
        metrics=row,
        history=history,
        resumed_from=resumed_from,
    )


# Fields that may change between a run and its resumption without changing the maths.
RESUME_FREE_FIELDS = {
    "eval_every",
    "num_eval_prompts",
    "save_every",
    "keep_checkpoints",
    "resume",
    "device",
    "progress",
}


def _check_resumable(ckpt: Path, config: PPOConfig) -> None:
    """Refuse to resume a checkpoint written with different hyperparameters."""
    saved_file = ckpt / CONFIG_FILE
    if not saved_file.is_file():
        return
    saved, current = json.loads(saved_file.read_text()), config.to_dict()
    changed = sorted(
        k for k in current if k not in RESUME_FREE_FIELDS and k in saved and saved[k] != current[k]
    )
    if changed:
        raise ValueError(
            f"cannot resume from {ckpt}: it was trained with different {', '.join(changed)}; "
            "use another output directory or resume=False to start over"
        )


def _adamw(params: list[nn.Parameter], config: PPOConfig) -> torch.optim.Optimizer:
    """AdamW, fused where torch supports it (6x faster steps than the per-tensor loop on CPU)."""
    kwargs = {"lr": config.lr, "eps": config.adam_eps, "weight_decay": config.weight_decay}
    try:
        return torch.optim.AdamW(params, fused=True, **kwargs)
    except (RuntimeError, TypeError):  # e.g. a device or dtype without a fused kernel
        return torch.optim.AdamW(params, **kwargs)


def _save_checkpoint(
    accelerator: Any, out: Path, step: int, kl_coef: float, config: PPOConfig
) -> None:
    """Save models, optimizer, scheduler and every RNG (accelerate), then our own counters."""
    path = out / "checkpoints" / f"{CHECKPOINT_PREFIX}{step}"
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        (path / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        # Written last: its presence marks the checkpoint complete.
        (path / "trainer_state.json").write_text(
            json.dumps({"step": step, "kl_coef": kl_coef}) + "\n"
        )
        for _, old in _checkpoints(out)[: -config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _qualname(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"
