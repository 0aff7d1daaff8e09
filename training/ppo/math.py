"""The pure tensor math of PPO for language models: no models, no I/O, unit-tested by hand.

Shapes: B = batch of episodes, T = response tokens, V = vocabulary. A `mask` is True on the
valid response tokens of each row, which are always a prefix of the row (everything after the
first EOS is padding). Follows "The N Implementation Details of RLHF with PPO" (Huang et al.,
2024) and InstructGPT (Ouyang et al., 2022).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# Log-probability written into padded positions: finite (so sums stay finite), never read
# through a mask, and obviously not a real log-probability (> 0) when it leaks into a print.
INVALID_LOGPROB = 1.0


# --------------------------------------------------------------------------- masked statistics


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `values` over the positions where `mask` is True (along `dim`, or all)."""
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1.0)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of `values` over the masked positions (Bessel-corrected by default)."""
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    if unbiased:
        count = mask.sum()
        if count < 2:
            # One sample has no spread; returning 0 (not NaN) keeps whitening finite.
            return torch.zeros_like(variance)
        variance = variance * count / (count - 1)
    return variance


def masked_whiten(
    values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """Normalise `values` to unit variance (and zero mean when `shift_mean`) over the mask.

    Statistics come from valid tokens only: padding would drag the mean towards 0. Masked
    positions are returned as 0 so they can never contribute to a later sum.
    """
    mean = masked_mean(values, mask)
    var = masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened.masked_fill(~mask.bool(), 0.0)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(returns - values) / Var(returns) over valid tokens; 1 is a perfect critic."""
    var_returns = masked_var(returns, mask)
    if var_returns <= 0:
        return float("nan")
    return float(1.0 - masked_var(returns - values, mask) / var_returns)


# --------------------------------------------------------------------------- log-probabilities


def logprobs_from_logits(
    logits: torch.Tensor, ids: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Log-probabilities of `ids` under softmax(logits / temperature).

    logits (B, T, V), ids (B, T) -> (B, T). The temperature is applied here, in the one
    function every log-probability goes through, so that the rollout, the reference and the
    PPO update all score tokens under the distribution they were sampled from.
    """
    scaled = logits.float() / temperature
    picked = scaled.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    # gather - logsumexp never materialises the (B, T, V) log_softmax tensor.
    return picked - torch.logsumexp(scaled, dim=-1)


def entropy_from_logits(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Entropy of softmax(logits / temperature) at each position: (B, T, V) -> (B, T)."""
    scaled = logits.float() / temperature
    probs = torch.softmax(scaled, dim=-1)
    return torch.logsumexp(scaled, dim=-1) - (probs * scaled).sum(-1)


# --------------------------------------------------------------------------- KL estimators


def kl_k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k1 KL estimate log p(x) - log q(x): unbiased, can be negative per sample."""
    return logprobs - ref_logprobs


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 KL estimate (r - 1) - log r with r = q(x)/p(x): unbiased and never negative."""
    log_ratio = ref_logprobs - logprobs
    return torch.expm1(log_ratio) - log_ratio


class AdaptiveKLController:
    """The proportional KL controller of Ziegler et al. (2019): steers the KL towards a target.

    After each rollout, kl_coef *= 1 + clip(KL / target - 1, -0.2, 0.2) * n / horizon, where
    KL is the mean per-episode KL and n the number of episodes in the rollout.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int) -> None:
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        """Move the coefficient after a rollout of `n_steps` episodes; return the new value."""
        proportional_error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon
        return self.value


# --------------------------------------------------------------------------- responses and rewards


def first_true_indices(bools: torch.Tensor) -> torch.Tensor:
    """Index of the first True in each row of a (B, T) bool tensor; T when there is none."""
    row_len = bools.size(-1)
    positions = torch.arange(row_len, device=bools.device)
    return torch.where(bools, positions, row_len).min(dim=-1).values


def truncate_after_eos(
    responses: torch.Tensor, eos_ids: int | Sequence[int], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep each response up to and including its first EOS and pad everything after it.

    responses (B, T) -> (truncated (B, T), lengths (B,), has_eos (B,)). `lengths` counts the
    kept tokens (the EOS included); a pad token already in a row also ends it, since the
    model never attends past one.
    """
    eos = torch.as_tensor(
        [eos_ids] if isinstance(eos_ids, int) else list(eos_ids), device=responses.device
    )
    is_eos = torch.isin(responses, eos)
    # Positions strictly after the first EOS: the running count of EOS before them is > 0.
    after_eos = (torch.cumsum(is_eos.int(), dim=1) - is_eos.int()) > 0
    ended = after_eos | (responses == pad_id)
    lengths = first_true_indices(ended)
    positions = torch.arange(responses.size(1), device=responses.device)
    invalid = positions.unsqueeze(0) >= lengths.unsqueeze(1)
    truncated = responses.masked_fill(invalid, pad_id)
    has_eos = (is_eos & ~invalid).any(dim=1)
    return truncated, lengths, has_eos


def apply_missing_eos_penalty(
    scores: torch.Tensor, has_eos: torch.Tensor, penalty: float | None
) -> torch.Tensor:
    """Subtract `penalty` from the score of every response that never emitted EOS (None: off).

    A response cut at the length limit was never finished, so the reward model judged a
    fragment; penalising it teaches the policy to end its answers (N details, #23).
    """
    if penalty is None:
        return scores
    return scores - penalty * (~has_eos).to(scores.dtype)


def token_rewards(
    scores: torch.Tensor, kl: torch.Tensor, lengths: torch.Tensor, kl_coef: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: -kl_coef * KL on every token, plus the score on the last valid one.

    scores (B,), kl (B, T) already zero on padding, lengths (B,) -> (rewards, non_score) (B, T).
    """
    non_score = -kl_coef * kl
    rewards = non_score.clone()
    last = (lengths - 1).clamp(min=0)
    rows = torch.arange(rewards.size(0), device=rewards.device)
    rewards[rows, last] += scores.to(rewards.dtype)
    return rewards, non_score


# --------------------------------------------------------------------------- advantages


def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation; returns (advantages, returns), both (B, T).

    delta_t = r_t + gamma * V_{t+1} - V_t with V = 0 past the last valid token, and
    A_t = sum_k (gamma * lam)^k delta_{t+k}. The sum is one (T, T) matrix product instead
    of a Python loop over time steps.
    """
    mask_f = mask.to(values.dtype)
    values = values * mask_f
    rewards = rewards * mask_f
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)
    deltas = (rewards + gamma * next_values - values) * mask_f  # (B, T)
    steps = torch.arange(values.size(1), device=values.device)
    offset = steps.unsqueeze(0) - steps.unsqueeze(1)  # (T, T): offset[t, k] = k - t
    discount = (gamma * lam) ** offset.clamp(min=0).to(values.dtype)
    discount = discount * (offset >= 0).to(values.dtype)  # upper triangle: only the future counts
    advantages = deltas @ discount.T  # A[b, t] = sum_k deltas[b, k] * discount[t, k]
    returns = advantages + values
    return advantages * mask_f, returns * mask_f


# --------------------------------------------------------------------------- losses


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clipped surrogate loss over valid tokens; returns (loss, clip fraction, approx KL).

    loss = mean(max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps))); approx KL is
    0.5 * mean((log ratio)^2), the low-variance estimate of KL(old || new).
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    approx_kl = 0.5 * masked_mean(log_ratio**2, mask)
    return loss, clipfrac, approx_kl


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss over valid tokens; returns (loss, clip fraction).

    loss = 0.5 * mean(max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2)).
    """
    clipped_values = old_values + torch.clamp(
        values - old_values, -cliprange_value, cliprange_value
    )
    losses = (values - returns) ** 2
    losses_clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(losses, losses_clipped), mask)
    clipfrac = masked_mean((losses_clipped > losses).float(), mask)
    return loss, clipfrac
