"""The networks of a PPO run: policy, frozen reference, critic and reward, and how they score.

`load_models` builds them in a fixed order (the RNG draws of fresh heads and LoRA weights
depend on it, and so does exact resumption).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from training.modeling import Prompt, load_causal_lm, lora_fan_in_fan_out, set_pad_token_id
from training.ppo.config import PPOConfig

logger = logging.getLogger(__name__)

RewardFn = Callable[[list[Prompt], list[str]], Sequence[float]]

# A finite stand-in for -inf on the pad logit: exp() of it is exactly 0 in float32, and unlike
# -inf it keeps p * log p (entropy) free of 0 * inf = NaN.
SUPPRESSED_LOGIT = -1e4


# =========================================================================== forward passes


# Float probabilities that attention modules copy from the config when they are built and
# apply in train mode with a functional dropout, out of reach of nn.Dropout (Llama, Qwen2,
# Mistral and most newer architectures: `self.attention_dropout`).
MODULE_DROPOUT_ATTRIBUTES = ("attention_dropout", "attn_dropout", "dropout")


def disable_dropout(model: nn.Module) -> None:
    """Set every dropout probability to 0 (detail: dropout off, so logprobs are reproducible)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        for name in MODULE_DROPOUT_ATTRIBUTES:
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)
    config = getattr(model, "config", None)
    for name in ("attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop"):
        if config is not None and isinstance(getattr(config, name, None), float):
            setattr(config, name, 0.0)


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Recompute `model`'s activations in the backward pass (transformers, non-reentrant).

    Non-reentrant checkpointing needs no input that requires grad, so it also works under a
    LoRA adapter whose embeddings are frozen. transformers only recomputes in train mode:
    `update_mode` switches the trained models to it for the update.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})


@contextlib.contextmanager
def update_mode(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Train mode for the duration of the update when `enabled`, eval mode again after.

    Dropout is 0 everywhere (`disable_dropout`), so train mode changes no result: it only lets
    transformers' gradient checkpointing run. Without checkpointing the models stay in eval.
    """
    if not enabled:
        yield
        return
    model.train()
    try:
        yield
    finally:
        model.eval()


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
    # The head may be fp32 over a bf16 trunk (LoRA, see load_models): feed it the dtype of its
    # trained weights (peft's wrapper also holds the frozen original).
    params = list(head.parameters())
    dtype = next((p.dtype for p in params if p.requires_grad), params[0].dtype)
    hidden = hidden[:, context_length - 1 : -1].to(dtype)
    return head(hidden).squeeze(-1).float()


class PolicyAndValue(nn.Module):
    """Policy and value model as one module, so that one optimizer, one backward and one
    DDP / DeepSpeed engine cover both (DeepSpeed accepts one trained model per accelerator)."""

    def __init__(self, policy: nn.Module, value_model: nn.Module) -> None:
        super().__init__()
        self.policy = policy
        self.value_model = value_model

    def forward(
        self,
        query_responses: torch.Tensor,
        context_length: int,
        pad_id: int,
        ptx: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """Response logits and values; with a `ptx` batch also the policy's LM loss on it
        (computed here, inside the one forward the DDP / DeepSpeed wrapper sees)."""
        logits = response_logits(self.policy, query_responses, context_length, pad_id)
        values = response_values(self.value_model, query_responses, context_length, pad_id)
        if ptx is None:
            return logits, values
        return logits, values, self.policy(**ptx, use_cache=False).loss


# =========================================================================== the reward


def call_scorer(
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


class Reward:
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
            from training.reward.scoring import load_reward_model

            # merged=True: a LoRA reward model becomes a plain model the critic can copy.
            self.scorer = load_reward_model(
                str(reward), device=device, dtype=dtype, merged=True, batch_size=batch_size
            )
            disable_dropout(self.scorer.model)

    def __call__(
        self, prompts: list[Prompt], responses: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.fn is not None:
            scores = call_scorer(self.fn, prompts, responses, "reward function")
            return scores, scores
        # The RM scores text: render_reward_input re-tokenises the decoded response with the
        # RM's own tokenizer and template, so a reward model with another vocabulary works.
        raw = torch.tensor(self.scorer.score(prompts, responses, normalize=False))
        # Normalised = raw - bias, the bias that gives reference responses mean 0 (InstructGPT).
        return raw, raw - self.scorer.bias


# =========================================================================== building them


def apply_lora(model: nn.Module, config: PPOConfig, task_type: str) -> nn.Module:
    """Wrap `model` in a peft LoRA adapter configured by `config`."""
    from peft import LoraConfig, get_peft_model

    target = list(config.lora_target_modules) if config.lora_target_modules else None
    lora = LoraConfig(
        task_type=task_type,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=0.0,  # PPO turns every dropout off (disable_dropout), the adapter's too
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
    set_pad_token_id(value_model, policy_tokenizer.pad_token_id)
    return value_model.to(dtype), source


@dataclass
class Models:
    """Everything a run scores with; `ref_policy` None means LoRA (the adapter disabled)."""

    policy: nn.Module
    ref_policy: nn.Module | None
    value_model: nn.Module
    tokenizer: Any
    stop_ids: list[int]  # EOS ids of the tokenizer and the generation config
    reward: Reward
    value_source: str  # what the critic was initialised from: "reward_model" or "policy"


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def load_models(
    policy_path: str | os.PathLike,
    reward: str | os.PathLike | RewardFn,
    config: PPOConfig,
    device: torch.device,
    reward_batch_size: int,
) -> Models:
    """Load the policy, the reward, a critic and the reference, with dropout off in all."""
    policy, tokenizer = load_causal_lm(policy_path, device="cpu", dtype=config.dtype)
    weights_dtype = next(policy.parameters()).dtype
    reward_fn = Reward(reward, device, weights_dtype, reward_batch_size)
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
        policy = apply_lora(policy, config, "CAUSAL_LM")
        value_model = apply_lora(value_model, config, "SEQ_CLS")
        ref_policy = None  # detail: the reference is the policy with its adapter disabled
        for model in (policy, value_model):
            # peft keeps adapters fp32 over a bf16 base, but not the critic's trained scalar
            # head (modules_to_save): trained weights are fp32, as in a full fine-tune.
            for param in model.parameters():
                if param.requires_grad and param.dtype != torch.float32:
                    param.data = param.data.float()
    else:
        # A copy, not a second load: an added pad row must be identical in both models.
        ref_policy = copy.deepcopy(policy).requires_grad_(False).to(device)
    for model in (policy, value_model, ref_policy):
        if model is not None:
            disable_dropout(model)  # detail: dropout off in policy, reference, critic (and RM)
            model.eval()
    if config.gradient_checkpointing:
        for model in (policy, value_model):  # the trained ones; the reference runs no backward
            enable_gradient_checkpointing(model)
    return Models(
        policy=policy,
        ref_policy=ref_policy,
        value_model=value_model,
        tokenizer=tokenizer,
        stop_ids=stop_ids,
        reward=reward_fn,
        value_source=value_source,
    )
