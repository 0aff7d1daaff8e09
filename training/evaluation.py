"""Evaluation of a loop round against a gold judge (no Django): gold scores, win rate, plots."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Prompt = str | list[dict[str, Any]]
JudgeFn = Callable[[Sequence[Prompt], Sequence[str]], list[float]]


def sample_answers(
    policy: str | Path | tuple,
    prompts: Sequence[Prompt],
    *,
    max_new_tokens: int = 48,
    temperature: float = 0.7,
    seed: int = 1234,
    device: str = "auto",
) -> list[str]:
    """One seeded sample per prompt: the policy's answer used for gold scoring."""
    from training.generation import GenerationConfig, generate_candidates

    config = GenerationConfig(
        num_candidates=1,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        device=device,
        max_resample_rounds=0,
    )
    result = generate_candidates(policy, list(prompts), config, progress=False)
    return [row[0].text if row else "" for row in result.candidates]


def mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def win_rate(
    judge: JudgeFn, prompts: Sequence[Prompt], new: Sequence[str], old: Sequence[str]
) -> float:
    """Share of prompts where the new answer beats the old one under the judge (ties count 1/2)."""
    new_scores, old_scores = judge(list(prompts), list(new)), judge(list(prompts), list(old))
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(new_scores, old_scores))
    return wins / len(prompts) if prompts else float("nan")


# ---------------------------------------------------------------------------------------
# Agreement with the judge: how often an ordering of pairs agrees with the judge's scores
# ---------------------------------------------------------------------------------------

JudgeTies = Literal["exclude", "half"]
JUDGE_TIES: tuple[str, ...] = ("exclude", "half")


@dataclass(frozen=True)
class Agreement:
    """`agree` of `pairs` pairs ordered like the judge (a pair the ordering ties counts 1/2)."""

    agree: float
    pairs: int

    @property
    def rate(self) -> float:
        """agree / pairs; NaN when no pair was counted."""
        return self.agree / self.pairs if self.pairs else float("nan")


def agreement_with_judge(
    judge_margins: Sequence[float], margins: Sequence[float], *, judge_ties: JudgeTies
) -> Agreement:
    """How often an ordering of pairs agrees with the judge's, pair by pair.

    A margin is score(first) - score(second) of one pair, > 0 when the first is better;
    `margins` come from the ordering measured (labels, a reward model), `judge_margins`
    from the judge. Same sign agrees (1), opposite signs disagree (0), an ordering tie
    counts 1/2. `judge_ties` says what a pair the judge scores equal is: "exclude" leaves
    it out (agreement over the pairs the judge orders), "half" counts it 1/2 (so a judge
    that scores everything equal sits at chance).
    """
    if judge_ties not in JUDGE_TIES:
        raise ValueError(f"judge_ties must be one of {', '.join(JUDGE_TIES)}, got {judge_ties!r}")
    if len(judge_margins) != len(margins):
        raise ValueError("one judge margin per margin is needed")
    agree = 0.0
    pairs = 0
    for judge_margin, margin in zip(judge_margins, margins):
        if judge_margin == 0:
            if judge_ties == "exclude":
                continue
            agree += 0.5
        elif margin == 0:
            agree += 0.5
        elif (margin > 0) == (judge_margin > 0):
            agree += 1.0
        pairs += 1
    return Agreement(agree, pairs)


def ranking_agreement_with_judge(
    tiers: Sequence[Sequence[int]], scores: Mapping[int, float], *, judge_ties: JudgeTies
) -> Agreement:
    """Agreement with the judge of one ranking (tiers best first) over its candidate pairs."""
    tier_of = {cid: t for t, tier in enumerate(tiers) for cid in tier}
    ids = list(tier_of)
    judge_margins: list[float] = []
    margins: list[float] = []
    for x in range(len(ids)):
        for y in range(x + 1, len(ids)):
            a, b = ids[x], ids[y]
            judge_margins.append(scores[a] - scores[b])
            margins.append(tier_of[b] - tier_of[a])  # > 0: a is in a better tier
    return agreement_with_judge(judge_margins, margins, judge_ties=judge_ties)


def pairs_agreement_with_judge(
    judge: JudgeFn, pairs: Sequence[dict], *, judge_ties: JudgeTies
) -> Agreement:
    """Agreement with the judge of preference pairs (prompt, chosen, rejected) as labeled."""
    prompts = [p["prompt"] for p in pairs]
    chosen = judge(prompts, [text_of(p["chosen"]) for p in pairs])
    rejected = judge(prompts, [text_of(p["rejected"]) for p in pairs])
    judge_margins = [c - r for c, r in zip(chosen, rejected)]
    return agreement_with_judge(judge_margins, [1.0] * len(pairs), judge_ties=judge_ties)


def text_of(response) -> str:
    """An export's chosen/rejected: a string, or a list holding one assistant message."""
    if isinstance(response, list):
        return response[-1]["content"] if response else ""
    return str(response)


def _running_mean(values: Sequence[float], weight: float = 0.7) -> list[float]:
    """Exponential moving average (TensorBoard-style smoothing) of a noisy series."""
    smoothed, last = [], None
    for value in values:
        last = value if last is None else weight * last + (1 - weight) * value
        smoothed.append(last)
    return smoothed


def plot_overoptimization(
    history: Sequence[dict],
    path: str | Path,
    *,
    kl_key: str = "kl",
    gold_key: str = "gold_score",
    rm_key: str = "rm_score",
) -> Path | None:
    """Gold and RM score against KL during PPO (Gao et al. 2022); None when nothing to plot."""
    points = [(h.get(kl_key), h.get(gold_key), h.get(rm_key)) for h in history]
    points = [p for p in points if isinstance(p[0], (int, float))]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kl = [p[0] for p in points]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    # Gold scores live in the judge's range and RM scores in the RM's: one axis each.
    axes = {1: ax.twinx(), 2: ax}
    for index, label, marker, color in (
        (1, "gold score (judge), right axis", "o", "#d9822b"),
        (2, "RM score, left axis", "s", "#2a6fdb"),
    ):
        pairs = [(k, p[index]) for k, p in zip(kl, points) if isinstance(p[index], (int, float))]
        if not pairs:
            continue
        ax_ = axes[index]
        # Each step is one noisy batch: show the points faintly and the running mean as the
        # curve, in step order (KL mostly grows during PPO).
        ax_.scatter(*zip(*pairs), marker=marker, color=color, alpha=0.25, s=14)
        ax_.plot(
            _running_mean([k for k, _ in pairs]),
            _running_mean([v for _, v in pairs]),
            "-",
            marker=marker,
            markevery=max(1, len(pairs) // 8),
            label=label,
            color=color,
        )
    ax.set_xlabel("KL(policy || reference), nats")
    ax.set_ylabel("RM score")
    axes[1].set_ylabel("gold score")
    ax.set_title("Reward vs KL during PPO")
    ax.grid(alpha=0.3)
    handles = [h for a in (ax, axes[1]) for h in a.get_legend_handles_labels()[0]]
    if handles:
        ax.legend(handles=handles, loc="lower right")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
