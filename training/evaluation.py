"""Evaluation of a loop round against a gold judge (no Django): gold scores, win rate, plots."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Prompt = str | list[dict[str, Any]]
JudgeFn = Callable[[Sequence[Prompt], Sequence[str]], list[float]]


def mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


# The temperature held-out answers are sampled at, and their KL is measured at.
EVAL_TEMPERATURE = 0.7


class AnswerSets(list):
    """Answer sets (`sets[s][p]`, a list of lists of text) and, beside them, `finished[s][p]`:
    whether that answer ended on its end-of-sequence token (False where `max_new_tokens`
    cut it, or nothing was sampled), and `token_ids[s][p]`: the tokens sampled (its
    end-of-sequence token included where it ended on one). An empty answer ("") is one the
    model ended at once or filled with whitespace: its tokens are kept too, so the held-out
    KL counts a policy that learnt to say nothing."""

    finished: list[list[bool]]
    token_ids: list[list[tuple[int, ...]]]


def sample_answer_sets(
    policy: str | Path | tuple,
    prompts: Sequence[Prompt],
    *,
    samples: int = 1,
    max_new_tokens: int = 48,
    temperature: float = EVAL_TEMPERATURE,
    seed: int = 1234,
    device: str = "auto",
) -> AnswerSets:
    """`samples` answer sets, one seeded sample per prompt in each (set s under `seed + s`;
    "" where a prompt gave nothing), the model loaded once: the answers gold is scored on.

    With one answer per prompt, a small eval set's gold and win rate are as much the luck of
    the sampled answer as the policy's quality; the mean over sets is the same estimate with
    a fraction of that noise.
    """
    from training.generation import GenerationConfig, generate_candidates
    from training.modeling import load_causal_lm

    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    if not isinstance(policy, tuple):
        policy = load_causal_lm(policy, device=device, dtype=GenerationConfig().dtype)
    sets = AnswerSets()
    sets.finished, sets.token_ids = [], []
    for s in range(samples):
        config = GenerationConfig(
            num_candidates=1,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            seed=seed + s,
            device=device,
            max_resample_rounds=0,
        )
        result = generate_candidates(policy, list(prompts), config, progress=False)
        sets.append([row[0].text if row else "" for row in result.candidates])
        # The answer, or the empty one the model gave instead (None: nothing at all).
        answers = [
            row[0] if row else result.first_empty.get(p) for p, row in enumerate(result.candidates)
        ]
        sets.finished.append(
            [a is not None and a.metadata.get("finish_reason") == "eos" for a in answers]
        )
        sets.token_ids.append([a.token_ids if a else () for a in answers])
    return sets


def prompt_means(score_sets: Sequence[Sequence[float]]) -> list[float]:
    """Per prompt, the mean of its scores over the answer sets (`score_sets[s][p]`)."""
    return [mean(scores) for scores in zip(*score_sets)]


def heldout_gold_figures(
    gold_before: Sequence[Sequence[float]],
    gold_after: Sequence[Sequence[float]],
    *,
    seed: int = 0,
) -> dict[str, Any]:
    """Gold before/after, win rate and their paired 95% intervals over the held-out prompts.

    `gold_before[s][p]` is the judge's score of the start policy's answer set s on prompt p,
    `gold_after` the same for the new policy (any number of sets each). Per prompt: gold is
    the mean over its answers; the win is the share of (new answer, start answer) pairs of
    that prompt, all against all, where the new one scores higher (equal scores count 1/2),
    the chance that a new answer beats a start answer to it. The intervals resample prompts
    (`bootstrap_mean_ci`), each prompt's figures kept together.
    """
    if not gold_before or not gold_after:
        raise ValueError("need at least one answer set before and one after")
    n = len(gold_before[0])
    if any(len(row) != n for row in [*gold_before, *gold_after]):
        raise ValueError("every answer set must score the same prompts")
    before, after = prompt_means(gold_before), prompt_means(gold_after)
    wins = []
    for p in range(n):
        pairs = [(a[p], b[p]) for a in gold_after for b in gold_before]
        wins.append(mean(win_indicators([x for x, _ in pairs], [y for _, y in pairs])))
    diffs = [a - b for a, b in zip(after, before)]
    return {
        "gold_before": mean(before),
        "gold_after": mean(after),
        "gold_ci": list(bootstrap_mean_ci(diffs, seed=seed)),
        "win_rate_vs_start": mean(wins),
        "win_rate_ci": list(bootstrap_mean_ci(wins, seed=seed)),
    }


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


# ---------------------------------------------------------------------------------------
# Labeler agreement, intervals, over-optimization and shortcut flags (all pure)
# ---------------------------------------------------------------------------------------


def labeler_agreement(comparisons: Sequence[Sequence[Sequence[Sequence[int]]]]) -> Agreement:
    """How often two labelers order a pair of candidates the same way.

    `comparisons` holds, per comparison, the rankings (tiers best first) of its labelers.
    For every two rankings of a comparison, in both directions, each candidate pair the first
    orders strictly is one trial: the second ordering it the same way agrees (1), a tie counts
    1/2, the opposite order 0. Pairs the first ties are left out, as a reward model's accuracy
    leaves out tied labels, so the figure is the accuracy one labeler would score predicting
    another's labels: the ceiling for `rm_accuracy_vs_labels` (InstructGPT: 72.6%).
    """
    agree = 0.0
    pairs = 0
    for rankings in comparisons:
        tiers = [{c: t for t, tier in enumerate(r) for c in tier} for r in rankings]
        for i, first in enumerate(tiers):
            for j, second in enumerate(tiers):
                if i == j:
                    continue
                shared = [c for c in first if c in second]
                for x in range(len(shared)):
                    for y in range(x + 1, len(shared)):
                        a, b = shared[x], shared[y]
                        label = first[a] - first[b]
                        if label == 0:
                            continue
                        other = second[a] - second[b]
                        agree += 0.5 if other == 0 else 1.0 if (other > 0) == (label > 0) else 0.0
                        pairs += 1
    return Agreement(agree, pairs)


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 1]) of sorted values."""
    position = q * (len(sorted_values) - 1)
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def bootstrap_mean_ci(
    values: Sequence[float], *, level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (resampling the values).

    For paired figures pass the per-prompt differences (gold after - before) or per-prompt
    win indicators (1, 1/2, 0): resampling prompts keeps each prompt's pair together.
    (nan, nan) without values.
    """
    import random

    if not values:
        return float("nan"), float("nan")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))
    tail = (1 - level) / 2
    return _percentile(means, tail), _percentile(means, 1 - tail)


def win_indicators(new_scores: Sequence[float], old_scores: Sequence[float]) -> list[float]:
    """Per prompt: 1 when the new answer scores above the old one, 1/2 when equal, else 0."""
    return [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(new_scores, old_scores)]


def _slope(values: Sequence[float]) -> float:
    """Least-squares slope of values against their index (0 for fewer than two)."""
    n = len(values)
    if n < 2:
        return 0.0
    mx = (n - 1) / 2
    my = sum(values) / n
    sxx = sum((i - mx) ** 2 for i in range(n))
    return sum((i - mx) * (v - my) for i, v in enumerate(values)) / sxx


@dataclass(frozen=True)
class Overoptimization:
    """Gold against RM score over PPO steps (Gao et al. 2022)."""

    flagged: bool  # RM score still rising while gold falls over the last third of the steps
    gold_slope: float | None  # per step, over the last third (None: too few steps)
    rm_slope: float | None
    gold_peak_step: int | None  # step (from the history) where the smoothed gold peaked
    gold_peak: float | None


def overoptimization(
    history: Sequence[Mapping[str, Any]],
    *,
    gold_key: str = "gold_score",
    rm_key: str = "score",
    step_key: str = "step",
) -> Overoptimization:
    """Flag over-optimization: over the last third of the steps holding both figures, the RM
    score's least-squares slope is above 0 and the gold score's below 0 (both smoothed with a
    running mean first, as each step is one noisy batch). Needs 6 such steps to flag."""
    rows = [
        h
        for h in history
        if isinstance(h.get(gold_key), (int, float)) and isinstance(h.get(rm_key), (int, float))
    ]
    if not rows:
        return Overoptimization(False, None, None, None, None)
    gold = _running_mean([float(h[gold_key]) for h in rows])
    rm = _running_mean([float(h[rm_key]) for h in rows])
    peak = max(range(len(gold)), key=lambda i: gold[i])
    peak_step = rows[peak].get(step_key, peak + 1)
    if len(rows) < 6:
        return Overoptimization(False, None, None, peak_step, gold[peak])
    tail = len(rows) - len(rows) // 3
    gold_slope, rm_slope = _slope(gold[tail:]), _slope(rm[tail:])
    return Overoptimization(
        rm_slope > 0 and gold_slope < 0, gold_slope, rm_slope, peak_step, gold[peak]
    )


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson correlation; None for fewer than 3 points or a constant series."""
    if len(xs) != len(ys):
        raise ValueError("pearson needs as many x as y values")
    n = len(xs)
    if n < 3:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / (sxx * syy) ** 0.5


def _shingles(text: str, n: int = 3) -> set[tuple[str, ...]]:
    import re

    tokens = re.findall(r"[a-z0-9']+", text.lower())
    if len(tokens) < n:
        return {tuple(tokens)} if tokens else set()
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def near_duplicate_share(texts: Sequence[str], *, threshold: float = 0.8) -> float:
    """Share of answers that are near-duplicates of at least one other answer.

    Two answers are near-duplicates when the Jaccard similarity of their word 3-gram sets
    (lowercased words, punctuation dropped; shorter answers: the whole answer) is >= `threshold`;
    two empty answers are duplicates. A policy that answers every prompt with the same
    text the reward model likes (reward hacking) shows up here first. nan without texts.
    """
    if not texts:
        return float("nan")
    sets = [_shingles(t) for t in texts]
    duplicate = [False] * len(sets)
    for i in range(len(sets)):
        for j in range(i + 1, len(sets)):
            a, b = sets[i], sets[j]
            union = len(a | b)
            similar = union == 0 or len(a & b) / union >= threshold
            if similar:
                duplicate[i] = duplicate[j] = True
    return sum(duplicate) / len(sets)


def heldout_kl(
    policy: str | Path,
    reference: str | Path,
    prompts: Sequence[Prompt],
    responses: Sequence[str],
    *,
    finished: Sequence[bool] | None = None,
    answer_ids: Sequence[Sequence[int]] | None = None,
    temperature: float = EVAL_TEMPERATURE,
    device: str = "auto",
) -> float:
    """Mean over prompts of sum_t log pi(y_t | x, y_<t) - log pi_ref(y_t | x, y_<t).

    The k1 estimate of KL(pi || pi_ref) in nats per answer, on answers sampled from the new
    policy at `temperature`: both models' logits are divided by it, as PPO's are, so this is
    the KL between the distributions the answers came from. The estimate holds for the
    tokens the policy sampled: `answer_ids` (AnswerSets.token_ids, the end-of-sequence token
    included where an answer ended on one). Without them each text in `responses` is
    tokenised again after the rendered prompt, its end-of-sequence token counted where it
    ended on one (`finished`; None: every answer did); a decoded, stripped text can tokenise
    otherwise than it was sampled. nan without prompts.
    """
    import torch

    from training.modeling import encode_prompt, load_causal_lm
    from training.ppo.math import logprobs_from_logits

    if not prompts:
        return float("nan")
    model, tokenizer = load_causal_lm(policy, device=device)
    ref_model, _ = load_causal_lm(reference, device=device)
    if finished is None:
        finished = [True] * len(responses)
    if answer_ids is None:
        answer_ids = []
        for response, ended in zip(responses, finished):
            ids = tokenizer(response, add_special_tokens=False)["input_ids"]
            if ended and tokenizer.eos_token_id is not None:
                ids = [*ids, tokenizer.eos_token_id]
            answer_ids.append(ids)
    totals = []
    with torch.no_grad():
        for prompt, answer in zip(prompts, answer_ids):
            prompt_ids = encode_prompt(tokenizer, prompt)
            if not answer:
                totals.append(0.0)
                continue
            ids = torch.tensor([prompt_ids + list(answer)], device=model.device)
            start = len(prompt_ids)
            diffs = []
            for m in (model, ref_model):
                logits = m(input_ids=ids).logits[:, start - 1 : -1]  # (1, T, V)
                diffs.append(logprobs_from_logits(logits, ids[:, start:], temperature).sum())
            totals.append(float(diffs[0] - diffs[1]))
    return mean(totals)
