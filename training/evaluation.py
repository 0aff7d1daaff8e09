"""Evaluation of a loop round against a gold judge (no Django): gold scores, win rate, plots."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

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


def pair_agreement(judge: JudgeFn, pairs: Sequence[dict]) -> float:
    """Share of preference pairs (prompt, chosen, rejected) the judge orders the same way.

    Pairs the judge scores equal count 1/2, so a constant judge sits at chance.
    """
    if not pairs:
        return float("nan")
    prompts = [p["prompt"] for p in pairs]
    chosen = judge(prompts, [text_of(p["chosen"]) for p in pairs])
    rejected = judge(prompts, [text_of(p["rejected"]) for p in pairs])
    return sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected)) / len(
        pairs
    )


def text_of(response) -> str:
    """An export's chosen/rejected: a string, or a list holding one assistant message."""
    if isinstance(response, list):
        return response[-1]["content"] if response else ""
    return str(response)


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


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
    if any(isinstance(p[1], (int, float)) for p in points):
        ax.plot(kl, [p[1] for p in points], "o-", label="gold score (judge)", color="#d9822b")
    if any(isinstance(p[2], (int, float)) for p in points):
        ax.plot(kl, [p[2] for p in points], "s-", label="RM score", color="#2a6fdb")
    ax.set_xlabel("KL(policy || reference), nats")
    ax.set_ylabel("score")
    ax.set_title("Reward vs KL during PPO")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
