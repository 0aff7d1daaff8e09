"""Rollout phase: draw prompts, sample responses, score them, shape KL-penalised rewards.

`rollout` samples and records what PPO needs about each token (logprobs under policy and
reference, values, entropy); `score_and_shape` turns the reward's scores into per-token
rewards with the KL penalty, then GAE advantages and returns.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from training.modeling import Prompt
from training.ppo.config import PPOConfig
from training.ppo.math import (
    INVALID_LOGPROB,
    apply_missing_eos_penalty,
    compute_gae,
    entropy_from_logits,
    kl_k1,
    kl_k3,
    logprobs_from_logits,
    masked_whiten,
    token_rewards,
    truncate_after_eos,
)
from training.ppo.models import Reward, RewardFn, call_scorer, response_logits, response_values
from training.sampling import generate, neutral_generation_config

# =========================================================================== prompts


def prompt_indices(step: int, batch_size: int, n_prompts: int, seed: int) -> list[int]:
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


def held_out_count(config: PPOConfig, n_prompts: int) -> int:
    """How many prompts are held out for evals: eval_fraction of them, else num_eval_prompts;
    refused when none would be left to train on."""
    if config.eval_fraction is not None:
        count = max(1, round(config.eval_fraction * n_prompts))
    else:
        count = config.num_eval_prompts
    if count and count >= n_prompts:
        raise ValueError(
            f"holding out {count} eval prompts leaves none of the {n_prompts} prompts to train "
            "on; lower num_eval_prompts / eval_fraction, or set eval_every 0"
        )
    return count


def held_out_split(prompts: list[Prompt], count: int) -> tuple[list[int], list[int]]:
    """(training indices, held-out indices): the `count` prompts whose sha256 is smallest.

    A function of the prompts' content only, so the same prompt is held out wherever it sits
    in the list and in every process.
    """
    keys = [
        hashlib.sha256(json.dumps(p, sort_keys=True).encode()).hexdigest() + f"{i:012d}"
        for i, p in enumerate(prompts)
    ]
    held = set(sorted(range(len(prompts)), key=keys.__getitem__)[:count])
    train = [i for i in range(len(prompts)) if i not in held]
    return train, sorted(held)


def left_pad(rows: list[list[int]], pad_id: int) -> torch.Tensor:
    """Token rows as one (B, C) tensor, padded on the left as generation expects."""
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


# =========================================================================== sampling


def synced_clock(device: torch.device) -> float:
    """perf_counter after the device's queued work is done (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


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
    those would make the sampling distribution differ from the one PPO scores, so every
    processor is set off explicitly (training.sampling) and `rollout` generates through
    `training.sampling.generate`, which clears the rest.
    """
    return neutral_generation_config(
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
    timings: dict[str, float] | None = None,
) -> Rollout:
    """Sample responses to left-padded `queries` and score them with policy, reference and critic.

    `ref_policy` None means LoRA mode: the reference is `policy` with its adapter disabled.
    `timings`, when given, gets the seconds spent in `generate` added under "generation".
    """
    pad_id = tokenizer.pad_token_id
    context_length = queries.size(1)
    parts: dict[str, list[torch.Tensor]] = {
        k: [] for k in ("qr", "logprobs", "ref", "values", "entropy")
    }
    for chunk in _chunks(queries.size(0), config.rollout_batch_size):
        query = queries[chunk]
        with autocast():
            started = synced_clock(query.device)
            sequences = generate(
                policy, gen_config, input_ids=query, attention_mask=query != pad_id
            )
            if timings is not None:
                timings["generation"] = (
                    timings.get("generation", 0.0) + synced_clock(query.device) - started
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


# =========================================================================== rewards and advantages


@dataclass
class Shaped:
    """A rollout's scores, per-token rewards and advantages; all (B,) or (B, T) tensors."""

    score_raw: torch.Tensor  # (B,) the reward as its model outputs it
    score: torch.Tensor  # (B,) normalised (raw - bias), before the missing-EOS penalty
    penalised: torch.Tensor  # (B,) score after the missing-EOS penalty
    kl: torch.Tensor  # (B, T) per-token KL estimate to the reference, 0 on padding
    non_score: torch.Tensor  # (B, T) -beta * kl
    advantages: torch.Tensor  # (B, T) whitened GAE advantages
    returns: torch.Tensor  # (B, T) value targets


def score_and_shape(
    batch: Rollout,
    prompts: list[Prompt],
    reward: Reward,
    kl_coef: float,
    config: PPOConfig,
    device: torch.device,
) -> Shaped:
    """Score the responses, subtract the per-token KL penalty and compute GAE advantages."""
    mask = batch.mask  # (B, T)
    score_raw, score = reward(prompts, batch.texts)
    score_raw, score = score_raw.to(device), score.to(device)
    # detail: responses without EOS are penalised (missing_eos_penalty, None: off).
    penalised = apply_missing_eos_penalty(score, batch.has_eos, config.missing_eos_penalty)
    # detail: per-token KL to the frozen reference, inside the reward.
    kl_fn = kl_k1 if config.kl_estimator == "k1" else kl_k3
    kl = kl_fn(batch.logprobs, batch.ref_logprobs).masked_fill(~mask, 0.0)  # (B, T)
    rewards, non_score = token_rewards(penalised, kl, batch.lengths, kl_coef)
    if config.whiten_rewards:
        rewards = masked_whiten(rewards, mask, shift_mean=False)
    # detail: GAE with gamma 1, lambda 0.95; advantages whitened over valid tokens.
    advantages, returns = compute_gae(rewards, batch.values, mask, config.gamma, config.lam)
    advantages = masked_whiten(advantages, mask)
    return Shaped(
        score_raw=score_raw,
        score=score,
        penalised=penalised,
        kl=kl,
        non_score=non_score,
        advantages=advantages,
        returns=returns,
    )


# =========================================================================== eval samples


def eval_samples(
    sample: Callable[[torch.Tensor], Rollout],
    queries: torch.Tensor,
    prompts: list[Prompt],
    reward: Reward,
    judge: RewardFn | None,
    *,
    step: int,
    seed: int,
    device: torch.device,
    kl_estimator: str = "k1",
) -> list[dict[str, Any]]:
    """Completions of the held-out eval prompts with their scores and KL to the reference
    (summed over the response, as the training metric "kl"): rows for samples.jsonl."""
    devices = [device] if device.type == "cuda" else []
    # A forked RNG, re-seeded: the same noise at every eval, and training's RNG untouched.
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        batch = sample(queries.to(device))
    raw, normalized = reward(prompts, batch.texts)
    gold = call_scorer(judge, prompts, batch.texts, "judge") if judge else None
    kl_fn = kl_k1 if kl_estimator == "k1" else kl_k3
    kl = kl_fn(batch.logprobs, batch.ref_logprobs).masked_fill(~batch.mask, 0.0).sum(1)
    rows = []
    for i, prompt in enumerate(prompts):
        row = {
            "step": step,
            "prompt": prompt,
            "response": batch.texts[i],
            "score": float(normalized[i]),
            "score_raw": float(raw[i]),
            "eos": bool(batch.has_eos[i]),
            "kl": float(kl[i]),
        }
        if gold is not None:
            row["gold"] = float(gold[i])
        rows.append(row)
    return rows


def eval_figures(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Means over the held-out samples: eval_kl, eval_score, eval_score_raw (eval_gold)."""
    if not rows:
        return {}
    figures = {
        "eval_kl": sum(r["kl"] for r in rows) / len(rows),
        "eval_score": sum(r["score"] for r in rows) / len(rows),
        "eval_score_raw": sum(r["score_raw"] for r in rows) / len(rows),
    }
    if all("gold" in r for r in rows):
        figures["eval_gold"] = sum(r["gold"] for r in rows) / len(rows)
    return figures
