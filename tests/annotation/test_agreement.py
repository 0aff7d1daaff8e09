"""Agreement metrics against hand-computed and published values (no database)."""

from __future__ import annotations

import math
from itertools import combinations

import pytest

from annotation.rules.agreement import (
    KrippendorffOrdinal,
    RankingRecord,
    kendall_tau_b,
    krippendorff_alpha_ordinal,
    mid_ranks,
    pairwise_accuracy,
    project_agreement,
)

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", the worked example with
# four observers, twelve units and missing values; the paper reports ordinal alpha = 0.815.
_ = None
PAPER_DATA = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, _, _, _],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, _, 3],
    [_, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, _],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, _],
]
PAPER_UNITS = [[v for v in column if v is not None] for column in zip(*PAPER_DATA)]


def alpha_by_pairs(units: list[list[float]]) -> float:
    """Alpha from its definition over pairs of values (no coincidence matrix): 1 - Do / De."""
    pairable = [u for u in units if len(u) >= 2]
    values = [v for u in pairable for v in u]
    n = len(values)
    marginal = {v: values.count(v) for v in set(values)}
    ordered = sorted(marginal)

    def d2(a, b):
        lo, hi = sorted((a, b))
        between = sum(marginal[g] for g in ordered if lo <= g <= hi)
        return (between - (marginal[lo] + marginal[hi]) / 2) ** 2

    observed = (
        sum(
            sum(d2(u[i], u[j]) for i in range(len(u)) for j in range(len(u)) if i != j)
            / (len(u) - 1)
            for u in pairable
        )
        / n
    )
    expected = sum(d2(values[i], values[j]) for i in range(n) for j in range(n) if i != j) / (
        n * (n - 1)
    )
    return 1 - observed / expected


def test_kendall_tau_b_hand_values():
    strict = [[1], [2], [3], [4]]
    assert kendall_tau_b(strict, strict) == 1.0
    assert kendall_tau_b(strict, [[4], [3], [2], [1]]) == -1.0
    # One tie in b: 5 concordant, 0 discordant, 6 pairs, 1 tied in b -> 5 / sqrt(6 * 5).
    assert kendall_tau_b(strict, [[1, 2], [3], [4]]) == pytest.approx(5 / math.sqrt(30))
    # Ties in both: a = 1 > {2,3} > 4, b = {1,2} > 3 > 4. Pairs: (1,2) tied in b, (2,3) tied
    # in a, the other four concordant -> 4 / sqrt((6 - 1) * (6 - 1)).
    assert kendall_tau_b([[1], [2, 3], [4]], [[1, 2], [3], [4]]) == pytest.approx(
        4 / math.sqrt((6 - 1) * (6 - 1))
    )
    assert kendall_tau_b([[1, 2, 3]], strict) is None  # no order in a: undefined


def test_pairwise_accuracy_skips_gold_ties_and_counts_labeler_ties_wrong():
    gold = [[1], [2, 3]]
    assert pairwise_accuracy([[2], [1], [3]], gold) == 0.5
    assert pairwise_accuracy([[1], [3], [2]], gold) == 1.0
    assert pairwise_accuracy([[1, 2, 3]], gold) == 0.0
    assert pairwise_accuracy([[1], [2], [3]], [[1, 2, 3]]) is None


def test_mid_ranks_share_positions_of_ties():
    assert mid_ranks([[1, 2], [3], [4, 5, 6]]) == {1: 1.5, 2: 1.5, 3: 3, 4: 5, 5: 5, 6: 5}


def test_krippendorff_ordinal_matches_the_published_example():
    assert krippendorff_alpha_ordinal(PAPER_UNITS) == pytest.approx(0.815, abs=5e-4)
    assert krippendorff_alpha_ordinal(PAPER_UNITS) == pytest.approx(alpha_by_pairs(PAPER_UNITS))


def test_krippendorff_ordinal_on_rank_positions_matches_the_pair_definition():
    units = [[1, 1], [2, 3], [3, 2], [1, 1], [2, 2], [3, 3], [1.5, 1.5, 3], [4, 1, 2]]
    assert krippendorff_alpha_ordinal(units) == pytest.approx(alpha_by_pairs(units))


def test_krippendorff_edge_cases():
    assert krippendorff_alpha_ordinal([[1, 1], [2, 2], [3, 3]]) == 1.0
    assert krippendorff_alpha_ordinal([[1, 1], [1, 1]]) is None  # no variation at all
    assert krippendorff_alpha_ordinal([[1], [2]]) is None  # nothing pairable
    acc = KrippendorffOrdinal()
    acc.add_unit([1, 2])
    acc.add_unit([2, 1])
    assert acc.alpha() < 0  # systematic disagreement is worse than chance


def test_krippendorff_package_agrees_when_installed():
    krippendorff = pytest.importorskip("krippendorff")
    rows = [[math.nan if v is None else v for v in row] for row in PAPER_DATA]
    expected = krippendorff.alpha(reliability_data=rows, level_of_measurement="ordinal")
    assert krippendorff_alpha_ordinal(PAPER_UNITS) == pytest.approx(expected)


def record(aid, cid, labeler, tiers, shown=(), time_ms=0, flagged=False, gold=None):
    return RankingRecord(
        annotation_id=aid,
        comparison_id=cid,
        labeler=labeler,
        tiers=tiers,
        shown=shown,
        time_spent_ms=time_ms,
        flagged=flagged,
        gold=gold,
    )


SMALL_PROJECT = [
    record(1, 1, "A", [[1], [2], [3]], shown=(1, 2, 3), time_ms=1000),
    record(2, 1, "B", [[1], [3], [2]], shown=(3, 1, 2), time_ms=3000, flagged=True),
    record(3, 2, "A", [[4], [5], [6]], shown=(5, 4, 6), time_ms=2000),
    record(4, 2, "B", [[4], [5], [6]], shown=(4, 5, 6), time_ms=5000),
    record(5, 3, "A", [[7], [8], [9]], gold=[[7], [8], [9]]),
]


def test_project_agreement_hand_computed():
    result = project_agreement(SMALL_PROJECT)
    assert (result.comparisons, result.annotations, result.shared_comparisons) == (3, 5, 2)
    assert result.pairwise_agreement == pytest.approx((2 / 3 + 1) / 2)
    assert result.kendall_tau_b == pytest.approx((1 / 3 + 1) / 2)
    # Units (mid-rank values): [1,1] [2,3] [3,2] [1,1] [2,2] [3,3]: o11=4 o22=2 o33=2 o23=o32=2,
    # n_c = 4 each, n = 12; d2(1,2) = d2(2,3) = 16, d2(1,3) = 64;
    # alpha = 1 - 11 * (2 * 2 * 16) / (2 * (16*16 + 16*16 + 16*64)).
    assert result.krippendorff_alpha == pytest.approx(1 - 11 * 64 / 3072)

    a, b = result.labelers
    assert a.labeler == "A" and b.labeler == "B"
    assert a.annotations == 3 and b.annotations == 2
    assert a.median_time_ms == 1500  # the unreported 0 is left out
    assert b.median_time_ms == 4000
    assert a.agreement_with_consensus == pytest.approx(5 / 6)
    assert a.consensus_compared == 2
    assert b.agreement_with_consensus == pytest.approx(5 / 6)
    assert (a.gold_accuracy, a.gold_annotations) == (1.0, 1)
    assert (b.gold_accuracy, b.gold_annotations) == (None, 0)
    assert a.first_shown_top_rate == 0.5 and b.first_shown_top_rate == 0.5
    assert a.first_shown_top_expected == pytest.approx(1 / 3)
    assert a.flag_rate == 0.0 and b.flag_rate == 0.5

    (pair,) = result.labeler_pairs
    assert pair.labelers == ("A", "B")
    assert pair.shared_comparisons == 2
    assert pair.pairwise_agreement == pytest.approx(5 / 6)
    data = result.as_dict()
    assert data["labeler_pairs"][0]["labelers"] == ["A", "B"]


def test_position_bias_is_visible():
    # A labeler who always puts the first shown candidate on top, whatever it is.
    records = []
    for cid in range(20):
        shown = [(cid + j) % 4 + 10 * cid for j in range(4)]
        records.append(record(cid, cid, "lazy", [[c] for c in shown], shown=shown))
    (lazy,) = project_agreement(records).labelers
    assert lazy.first_shown_top_rate == 1.0
    assert lazy.first_shown_top_expected == 0.25


def test_records_must_be_grouped_by_comparison():
    shuffled = [SMALL_PROJECT[0], SMALL_PROJECT[2], SMALL_PROJECT[1]]
    with pytest.raises(ValueError, match="contiguous"):
        project_agreement(shuffled)


def test_labeler_pair_figures_cover_every_pair_of_labelers():
    records = [
        record(i * 3 + j, i, name, [[1], [2], [3]] if name != "C" else [[3], [2], [1]])
        for i in range(3)
        for j, name in enumerate("ABC")
    ]
    result = project_agreement(records)
    pairs = {p.labelers: p for p in result.labeler_pairs}
    assert set(pairs) == set(combinations("ABC", 2))
    assert pairs[("A", "B")].kendall_tau_b == 1.0
    assert pairs[("A", "C")].kendall_tau_b == -1.0
    assert {s.labeler: s.agreement_with_consensus for s in result.labelers} == {
        "A": 1.0,  # the pooled consensus is the 2-to-1 majority order
        "B": 1.0,
        "C": 0.0,
    }
