"""Active preference learning: which K candidates to group, and which comparison to ask first.

The reward model scores every candidate of a prompt's pool (one score per model of an
ensemble). Under Bradley-Terry, candidate i beats j with probability sigmoid(s_i - s_j); the
comparison of a group teaches the model most when it cannot tell its candidates apart: close
scores, or ensemble members that disagree. The measure used is the predictive entropy of each
pair, H(mean over models of sigmoid(s_i - s_j)), averaged over the group's pairs: it is ln 2
for a coin flip (equal scores, or two models confident in opposite directions) and falls to 0
when every model is sure of the same order.

Then the comparisons of all prompts are put in order, most uncertain first, with one limit on
diversity: in every prefix of that order, one cluster of prompts (their `source`; a prompt
without one is its own cluster) holds at most `max_share` of the comparisons, unless nothing
else is left. So a batch of labels is not all spent on one kind of prompt the model happens
to find hard.

Pure Python: no Django, torch or numpy (the service and the benchmark share it).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

STRATEGIES: tuple[str, ...] = ("random", "uncertainty")
DEFAULT_MAX_SHARE = 0.5
# Exhaustive search over K-subsets up to this many subsets per pick, greedy growth beyond.
EXHAUSTIVE_LIMIT = 5000


def validate_strategy(strategy: str) -> None:
    """Raise ValueError unless `strategy` is one of STRATEGIES."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")


def validate_max_share(max_share: float) -> None:
    if not (0 < max_share <= 1):
        raise ValueError(f"max_share must be in (0, 1], got {max_share}")


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _entropy(p: float) -> float:
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def pair_uncertainty(a: Sequence[float], b: Sequence[float]) -> float:
    """Predictive Bradley-Terry entropy (nats, 0..ln 2) of "a beats b" over an ensemble.

    `a` and `b` hold one score per model, models in the same order.
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"score lists differ in length or are empty: {len(a)} and {len(b)}")
    p = sum(_sigmoid(x - y) for x, y in zip(a, b)) / len(a)
    return _entropy(p)


def group_uncertainty(scores: Sequence[Sequence[float]]) -> float:
    """Mean pair uncertainty over all pairs of a group (one score list per candidate)."""
    pairs = list(itertools.combinations(range(len(scores)), 2))
    if not pairs:
        return 0.0
    return sum(pair_uncertainty(scores[i], scores[j]) for i, j in pairs) / len(pairs)


def most_uncertain_group(scores: Sequence[Sequence[float]], k: int) -> tuple[list[int], float]:
    """Indexes (ascending) of the k candidates whose order is least sure, and their uncertainty.

    Exhaustive over all k-subsets while there are at most EXHAUSTIVE_LIMIT of them; beyond,
    grown greedily from the most uncertain pair, adding the candidate that keeps the group's
    mean pair uncertainty highest. Ties go to the lower indexes (reproducible).
    """
    n = len(scores)
    if k < 2 or n < k:
        raise ValueError(f"need k >= 2 and at least k candidates, got k={k}, n={n}")
    u = [[0.0] * n for _ in range(n)]
    for i, j in itertools.combinations(range(n), 2):
        u[i][j] = u[j][i] = pair_uncertainty(scores[i], scores[j])
    pairs_in_group = k * (k - 1) / 2

    def value(group: Sequence[int]) -> float:
        return sum(u[i][j] for i, j in itertools.combinations(group, 2)) / pairs_in_group

    if math.comb(n, k) <= EXHAUSTIVE_LIMIT:
        best = max(itertools.combinations(range(n), k), key=lambda g: (value(g), [-i for i in g]))
        return list(best), value(best)
    i, j = max(itertools.combinations(range(n), 2), key=lambda p: (u[p[0]][p[1]], -p[0], -p[1]))
    group = [i, j]
    while len(group) < k:
        rest = [c for c in range(n) if c not in group]
        group.append(max(rest, key=lambda c: (sum(u[c][g] for g in group), -c)))
    group.sort()
    return group, value(group)


def uncertain_groups(
    candidates: Sequence[tuple[int, Sequence[float]]], k: int
) -> list[tuple[list[int], float]]:
    """Split (candidate id, scores) into groups of k, most uncertain first, and their uncertainty.

    The most uncertain k of the pool form the first group, the most uncertain k of what is
    left the next, and so on; fewer than k left over are not grouped. Ids come back in pool
    order within a group.
    """
    pool = list(candidates)
    groups = []
    while len(pool) >= k:
        picked, value = most_uncertain_group([s for _, s in pool], k)
        groups.append(([pool[i][0] for i in picked], value))
        chosen = set(picked)
        pool = [c for i, c in enumerate(pool) if i not in chosen]
    return groups


@dataclass(frozen=True)
class Scored:
    """One comparison to be, with the cluster of its prompt and its uncertainty."""

    key: Hashable
    cluster: Hashable
    uncertainty: float


def informative_order(items: Sequence[Scored], *, max_share: float = DEFAULT_MAX_SHARE) -> list:
    """Keys, most uncertain first, keeping each cluster under `max_share` of every prefix.

    At each position the most uncertain item whose cluster would still hold at most
    max(1, max_share * position) items is taken; when every remaining cluster is over its
    share, the most uncertain item overall is. Ties keep input order.
    """
    validate_max_share(max_share)
    by_cluster: dict[Hashable, list[tuple[float, int, Scored]]] = {}
    for index, item in enumerate(items):
        by_cluster.setdefault(item.cluster, []).append((-item.uncertainty, index, item))
    for queue in by_cluster.values():
        queue.sort(key=lambda entry: entry[:2])
    heads = [(q[0][0], q[0][1], cluster) for cluster, q in by_cluster.items()]
    heapq.heapify(heads)
    taken: dict[Hashable, int] = {}
    position = {cluster: 0 for cluster in by_cluster}
    order = []
    while heads:
        allowed = max(1.0, max_share * (len(order) + 1))
        skipped = []
        choice = None
        while heads:
            head = heapq.heappop(heads)
            if taken.get(head[2], 0) + 1 <= allowed:
                choice = head
                break
            skipped.append(head)
        if choice is None:  # every cluster over its share: the most uncertain overall
            choice = min(skipped)
            skipped.remove(choice)
        for head in skipped:
            heapq.heappush(heads, head)
        cluster = choice[2]
        queue = by_cluster[cluster]
        order.append(queue[position[cluster]][2].key)
        taken[cluster] = taken.get(cluster, 0) + 1
        position[cluster] += 1
        if position[cluster] < len(queue):
            nxt = queue[position[cluster]]
            heapq.heappush(heads, (nxt[0], nxt[1], cluster))
    return order


def priorities(order_length: int) -> list[float]:
    """The queue priority of each position of an informative order: (n - rank) / n, in (0, 1].

    The queue serves the highest priority first; comparisons built at random get 0, so a
    build by uncertainty goes ahead of what random builds left open.
    """
    return [(order_length - rank) / order_length for rank in range(order_length)]
