"""Labeler-vs-labeler agreement and per-labeler quality figures, computed from plain records.

Metrics (all on rankings as tiers, best first), each over the pairs of items both rankings
hold, and each with its own tie rule, said in its name and docstring:
- `pairwise_agreement(a, b)`: share of pairs two rankings order the same way, where a tie is
  a third relation beside above and below (ties="match": a tie agrees only with a tie);
- `pairwise_accuracy(predicted, gold)`: share of the pairs gold orders that `predicted` orders
  the same way (ties="gold excluded": pairs gold ties drop out, a tie in `predicted` is wrong);
- `agreement_with_consensus`: `pairwise_agreement` of each ranking with the comparison's
  consensus (`annotation.rules.consensus`);
- Kendall's tau-b between two rankings, which corrects for ties in either;
- Krippendorff's alpha (ordinal) over a project, each (comparison, candidate) a unit and each
  annotation's mid-rank position of that candidate a value;
- per labeler: count, median time, agreement with the consensus of each comparison, accuracy on
  gold, position bias (how often the first candidate shown lands in the top tier, beside the
  rate expected without bias), flag rate.

Pure Python (no Django, torch or numpy): the stats selector feeds it records from the ORM.
"""

from __future__ import annotations

import math
import statistics
from array import array
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import groupby
from typing import TypeVar

from annotation.rules.consensus import DEFAULT_PRIOR, consensus_ranking, items_of
from annotation.rules.ranking import Tiers, tier_of

K = TypeVar("K", bound=Hashable)

__all__ = [
    "KrippendorffOrdinal",
    "LabelerPairStats",
    "LabelerStats",
    "ProjectAgreement",
    "RankingRecord",
    "agreement_with_consensus",
    "kendall_tau_b",
    "krippendorff_alpha_ordinal",
    "mid_ranks",
    "pairwise_accuracy",
    "pairwise_agreement",
    "project_agreement",
]


def _shared_pair_gaps(a: Tiers, b: Tiers) -> Iterator[tuple[int, int]]:
    """(tier of p - tier of q in a, the same in b) for every pair {p, q} both rankings hold."""
    tier_a, tier_b = tier_of(a), tier_of(b)
    shared = [c for c in tier_a if c in tier_b]
    for x in range(len(shared)):
        p = shared[x]
        for y in range(x + 1, len(shared)):
            q = shared[y]
            yield tier_a[p] - tier_a[q], tier_b[p] - tier_b[q]


def pairwise_agreement(a: Tiers, b: Tiers) -> float | None:
    """Share of item pairs (over items both rank) that a and b order the same way.

    Tie rule "match": the same way is one of above, below or tied, so a tie agrees only with
    a tie. Symmetric in a and b. None when fewer than two items are shared.
    """
    agree = total = 0
    for da, db in _shared_pair_gaps(a, b):
        agree += (da > 0) - (da < 0) == (db > 0) - (db < 0)
        total += 1
    return agree / total if total else None


def pairwise_accuracy(predicted: Tiers, gold: Tiers) -> float | None:
    """Share of the pairs gold orders strictly that `predicted` orders the same way.

    Tie rule "gold excluded": pairs gold ties are left out (no right answer); a tie in
    `predicted` where gold has an order counts as wrong. None when gold orders no pair.
    """
    right = total = 0
    for dp, dg in _shared_pair_gaps(predicted, gold):
        if dg:
            total += 1
            right += dp * dg > 0
    return right / total if total else None


def kendall_tau_b(a: Tiers, b: Tiers) -> float | None:
    """Kendall's tau-b over the items both rankings hold; None when either ties them all."""
    concordant = discordant = tied_a = tied_b = total = 0
    for da, db in _shared_pair_gaps(a, b):
        total += 1
        if da == 0:
            tied_a += 1
        if db == 0:
            tied_b += 1
        if da * db > 0:
            concordant += 1
        elif da * db < 0:
            discordant += 1
    denominator = math.sqrt((total - tied_a) * (total - tied_b))
    return (concordant - discordant) / denominator if denominator else None


def agreement_with_consensus(
    rankings: Mapping[K, Tiers],
    *,
    items: Iterable[int] | None = None,
    leave_one_out: bool = False,
    prior: float = DEFAULT_PRIOR,
) -> dict[K, float | None]:
    """`pairwise_agreement` of each ranking with the consensus of one comparison.

    A lone ranking gets None: agreeing with itself measures nothing. By default the consensus
    pools every ranking, the labeler's own included, so with a 2-to-1 split the two agreeing
    labelers score 1 and the outlier 0. `leave_one_out` compares each ranking with the
    consensus of the others instead; it avoids self-influence but, with three labelers split
    2-to-1, leaves each majority labeler facing an all-tied consensus and scoring 0, which
    makes it a poor filter for small overlaps.
    """
    keys = list(rankings)
    if len(keys) < 2:
        return {k: None for k in keys}
    all_items = items_of(list(rankings.values()), items)
    if not leave_one_out:
        reference = consensus_ranking(list(rankings.values()), items=all_items, prior=prior)
        return {k: pairwise_agreement(rankings[k], reference.tiers) for k in keys}
    result: dict[K, float | None] = {}
    for k in keys:
        others = [rankings[o] for o in keys if o != k]
        reference = consensus_ranking(others, items=all_items, prior=prior)
        result[k] = pairwise_agreement(rankings[k], reference.tiers)
    return result


def mid_ranks(tiers: Tiers) -> dict[int, float]:
    """Rank position (1 = best) of each item; tied items share the mean of their positions."""
    ranks: dict[int, float] = {}
    position = 1
    for tier in tiers:
        mid = position + (len(tier) - 1) / 2
        for candidate in tier:
            ranks[candidate] = mid
        position += len(tier)
    return ranks


class KrippendorffOrdinal:
    """Krippendorff's alpha with the ordinal metric, accumulated one unit at a time.

    Only the coincidence matrix is kept (one cell per pair of distinct values), so memory does
    not grow with the number of units. Follows Krippendorff (2011), "Computing Krippendorff's
    Alpha-Reliability".
    """

    def __init__(self) -> None:
        self._coincidence: defaultdict[tuple[float, float], float] = defaultdict(float)

    def add_unit(self, values: Sequence[float]) -> None:
        """Add one unit's values (one per coder); a unit with fewer than two is not pairable."""
        m = len(values)
        if m < 2:
            return
        counts = Counter(values)
        for c, n_c in counts.items():
            for k, n_k in counts.items():
                pairs = n_c * (n_k - 1) if c == k else n_c * n_k
                if pairs:
                    self._coincidence[(c, k)] += pairs / (m - 1)

    def alpha(self) -> float | None:
        """Alpha, or None when it is undefined (fewer than two pairable values, or no variation)."""
        totals: defaultdict[float, float] = defaultdict(float)
        for (c, _k), o in self._coincidence.items():
            totals[c] += o
        values = sorted(totals)
        n = sum(totals.values())
        if n <= 1 or len(values) < 2:
            return None
        cumulative = [0.0]
        for v in values:
            cumulative.append(cumulative[-1] + totals[v])
        index = {v: i for i, v in enumerate(values)}

        def delta2(c: float, k: float) -> float:
            i, j = sorted((index[c], index[k]))
            # Sum of the marginals from c to k inclusive, minus half of the two end points.
            return (cumulative[j + 1] - cumulative[i] - (totals[c] + totals[k]) / 2) ** 2

        observed = sum(o * delta2(c, k) for (c, k), o in self._coincidence.items())
        expected = sum(totals[c] * totals[k] * delta2(c, k) for c in values for k in values)
        if expected == 0:
            return None
        return 1.0 - (n - 1) * observed / expected


def krippendorff_alpha_ordinal(units: Iterable[Sequence[float]]) -> float | None:
    """Ordinal Krippendorff's alpha of units given as the list of values each unit received."""
    acc = KrippendorffOrdinal()
    for values in units:
        acc.add_unit(values)
    return acc.alpha()


@dataclass(frozen=True, slots=True)
class RankingRecord:
    """One (latest) annotation as the agreement code needs it."""

    annotation_id: int
    comparison_id: int
    labeler: Hashable
    tiers: Tiers
    shown: Sequence[int] = ()  # candidate ids in the order this labeler saw them
    time_spent_ms: int = 0  # 0 = not reported
    flagged: bool = False  # any flag on any candidate
    all_bad: bool = False
    gold: Tiers | None = None  # the gold ranking when the comparison is gold


@dataclass
class LabelerStats:
    """Quality figures of one labeler; rates are None when there is nothing to measure."""

    labeler: Hashable
    annotations: int = 0
    median_time_ms: float | None = None
    agreement_with_consensus: float | None = None
    consensus_compared: int = 0
    gold_accuracy: float | None = None
    gold_annotations: int = 0
    first_shown_top_rate: float | None = None
    first_shown_top_expected: float | None = None
    flag_rate: float | None = None
    all_bad_rate: float | None = None


@dataclass
class LabelerPairStats:
    """Agreement of two labelers over the comparisons both ranked."""

    labelers: tuple[Hashable, Hashable]
    shared_comparisons: int
    pairwise_agreement: float | None
    kendall_tau_b: float | None


@dataclass
class ProjectAgreement:
    """Project-wide agreement and the per-labeler figures."""

    annotations: int = 0
    comparisons: int = 0
    shared_comparisons: int = 0  # comparisons ranked by at least two labelers
    pairwise_agreement: float | None = None  # mean over pairs of annotations by two labelers
    kendall_tau_b: float | None = None
    krippendorff_alpha: float | None = None
    labelers: list[LabelerStats] = field(default_factory=list)
    labeler_pairs: list[LabelerPairStats] = field(default_factory=list)

    def as_dict(self) -> dict:
        """Plain JSON-ready dict (labelers as strings)."""
        data = asdict(self)
        for row in data["labelers"]:
            row["labeler"] = str(row["labeler"])
        for row in data["labeler_pairs"]:
            row["labelers"] = [str(x) for x in row["labelers"]]
        return data


class _Mean:
    __slots__ = ("n", "total")

    def __init__(self) -> None:
        self.n = 0
        self.total = 0.0

    def add(self, value: float | None) -> None:
        if value is not None:
            self.n += 1
            self.total += value

    @property
    def mean(self) -> float | None:
        return self.total / self.n if self.n else None


class _LabelerAccumulator:
    def __init__(self) -> None:
        self.count = 0
        self.times = array("q")  # 8 bytes per annotation: medians need every value
        self.consensus = _Mean()
        self.gold = _Mean()
        self.first_top = _Mean()
        self.first_top_expected = _Mean()
        self.flagged = 0
        self.all_bad = 0


def project_agreement(records: Iterable[RankingRecord]) -> ProjectAgreement:
    """Agreement figures of a project from its latest annotations, grouped by comparison.

    `records` must arrive grouped by comparison (e.g. ordered by comparison id) so each
    comparison is processed once and memory stays bounded; a comparison that shows up again
    after another one raises ValueError rather than silently splitting its figures. A labeler
    with several records on one comparison is counted once there (the last record wins).
    """
    result = ProjectAgreement()
    per_labeler: dict[Hashable, _LabelerAccumulator] = defaultdict(_LabelerAccumulator)
    per_pair: dict[tuple[Hashable, Hashable], list] = {}
    project_pairwise, project_tau = _Mean(), _Mean()
    alpha = KrippendorffOrdinal()
    seen: set[int] = set()

    for comparison_id, group in groupby(records, key=lambda r: r.comparison_id):
        if comparison_id in seen:
            raise ValueError(
                f"records of comparison {comparison_id} are not contiguous: order them by comparison"
            )
        seen.add(comparison_id)
        latest = {r.labeler: r for r in group}
        rows = list(latest.values())
        result.comparisons += 1
        result.annotations += len(rows)

        for r in rows:
            acc = per_labeler[r.labeler]
            acc.count += 1
            if r.time_spent_ms > 0:
                acc.times.append(r.time_spent_ms)
            acc.flagged += r.flagged
            acc.all_bad += r.all_bad
            if r.gold is not None:
                acc.gold.add(pairwise_accuracy(r.tiers, r.gold))
            if r.shown and r.tiers:
                acc.first_top.add(1.0 if r.shown[0] in r.tiers[0] else 0.0)
                acc.first_top_expected.add(len(r.tiers[0]) / len(r.shown))

        if len(rows) < 2:
            continue
        result.shared_comparisons += 1
        agreements = agreement_with_consensus({r.labeler: r.tiers for r in rows})
        for labeler, value in agreements.items():
            per_labeler[labeler].consensus.add(value)

        for a in range(len(rows)):
            for b in range(a + 1, len(rows)):
                first, second = sorted((rows[a], rows[b]), key=lambda r: str(r.labeler))
                agree = pairwise_agreement(first.tiers, second.tiers)
                tau = kendall_tau_b(first.tiers, second.tiers)
                project_pairwise.add(agree)
                project_tau.add(tau)
                stats = per_pair.setdefault((first.labeler, second.labeler), [0, _Mean(), _Mean()])
                stats[0] += 1
                stats[1].add(agree)
                stats[2].add(tau)

        positions = [mid_ranks(r.tiers) for r in rows]
        for candidate in sorted({c for p in positions for c in p}):
            alpha.add_unit([p[candidate] for p in positions if candidate in p])

    result.pairwise_agreement = project_pairwise.mean
    result.kendall_tau_b = project_tau.mean
    result.krippendorff_alpha = alpha.alpha()
    for labeler in sorted(per_labeler, key=str):
        acc = per_labeler[labeler]
        result.labelers.append(
            LabelerStats(
                labeler=labeler,
                annotations=acc.count,
                median_time_ms=float(statistics.median(acc.times)) if acc.times else None,
                agreement_with_consensus=acc.consensus.mean,
                consensus_compared=acc.consensus.n,
                gold_accuracy=acc.gold.mean,
                gold_annotations=acc.gold.n,
                first_shown_top_rate=acc.first_top.mean,
                first_shown_top_expected=acc.first_top_expected.mean,
                flag_rate=acc.flagged / acc.count if acc.count else None,
                all_bad_rate=acc.all_bad / acc.count if acc.count else None,
            )
        )
    for (a, b), (n, agree, tau) in sorted(per_pair.items(), key=lambda kv: str(kv[0])):
        result.labeler_pairs.append(
            LabelerPairStats(
                labelers=(a, b),
                shared_comparisons=n,
                pairwise_agreement=agree.mean,
                kendall_tau_b=tau.mean,
            )
        )
    return result
