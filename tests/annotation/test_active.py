"""Active preference learning: the grouping rule, the build by uncertainty, and serving by priority.

Runs on SQLite and on PostgreSQL (DATABASE_URL) alike.
"""

from __future__ import annotations

import math
import uuid
from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from annotation.errors import ServiceValidationError
from annotation.models import Assignment, Comparison
from annotation.rules import active
from annotation.rules.active import (
    Scored,
    group_uncertainty,
    informative_order,
    most_uncertain_group,
    pair_uncertainty,
    priorities,
    uncertain_groups,
)
from annotation.services.comparisons import comparisons_build
from annotation.services.imports import (
    candidate_record,
    candidates_import,
    prompt_record,
    prompts_import,
)
from annotation.services.labeling import assignment_next, ranking_submit

LN2 = math.log(2)
T0 = timezone.now().replace(microsecond=0)


# ---------------------------------------------------------------------------------------
# the rule (pure)
# ---------------------------------------------------------------------------------------


def test_pair_uncertainty_is_a_coin_flip_for_equal_scores_or_opposed_models():
    assert pair_uncertainty([1.0], [1.0]) == pytest.approx(LN2)
    assert pair_uncertainty([9.0], [0.0]) < 0.002
    # Two models, each sure, in opposite directions: the ensemble cannot tell.
    assert pair_uncertainty([9.0, 0.0], [0.0, 9.0]) == pytest.approx(LN2, abs=1e-3)
    # Two models that agree keep the certainty of one.
    assert pair_uncertainty([9.0, 9.0], [0.0, 0.0]) == pytest.approx(pair_uncertainty([9], [0]))
    with pytest.raises(ValueError, match="differ in length"):
        pair_uncertainty([1.0, 2.0], [1.0])


def test_the_group_whose_order_is_least_sure_is_picked():
    # Candidates 1, 2 and 4 score within 0.1 of each other; 0 and 3 are far apart.
    scores = [[0.0], [5.0], [5.1], [10.0], [5.05]]
    group, value = most_uncertain_group(scores, 3)
    assert group == [1, 2, 4]
    assert value == pytest.approx(group_uncertainty([scores[1], scores[2], scores[4]]))
    assert value > 0.69  # nearly ln 2: the three are a toss-up


def test_ensemble_disagreement_beats_confident_agreement():
    # Both models are sure 1 beats 0; each is sure of an opposite order of 2 and 3.
    scores = [[0.0, 0.0], [4.0, 4.0], [12.0, 4.0], [4.0, 12.0]]
    assert most_uncertain_group(scores, 2)[0] == [2, 3]


def test_greedy_search_beyond_the_exhaustive_limit_finds_the_same_group(monkeypatch):
    scores = [[0.0], [5.0], [5.1], [10.0], [5.05], [-3.0]]
    exhaustive = most_uncertain_group(scores, 3)
    monkeypatch.setattr(active, "EXHAUSTIVE_LIMIT", 0)
    assert most_uncertain_group(scores, 3) == exhaustive


def test_uncertain_groups_take_the_most_uncertain_first_then_the_rest():
    pool = [(10, [0.0]), (11, [3.0]), (12, [3.02]), (13, [9.0]), (14, [9.5])]
    groups = uncertain_groups(pool, 2)
    assert [g for g, _ in groups] == [[11, 12], [13, 14]]  # 10 is left over
    assert groups[0][1] > groups[1][1]


def test_no_cluster_takes_more_than_its_share_of_any_prefix_while_others_remain():
    items = [Scored(f"a{i}", "A", 0.6 - i * 0.01) for i in range(4)]
    items += [Scored(f"b{i}", "B", 0.1 - i * 0.01) for i in range(2)]
    order = informative_order(items, max_share=0.5)
    assert order == ["a0", "b0", "a1", "b1", "a2", "a3"]
    # Without the cap the order is by uncertainty alone.
    assert informative_order(items, max_share=1.0) == ["a0", "a1", "a2", "a3", "b0", "b1"]
    with pytest.raises(ValueError, match="max_share"):
        informative_order(items, max_share=0)


def test_priorities_fall_from_one_and_stay_above_random_builds():
    assert priorities(4) == [1.0, 0.75, 0.5, 0.25]
    assert priorities(0) == []


# ---------------------------------------------------------------------------------------
# the build and the queue (database)
# ---------------------------------------------------------------------------------------


def make_pool(project, texts_per_prompt: dict[str, list[str]], source: str = ""):
    """Prompts (external id -> candidate texts) with their candidates, no comparison yet."""
    records = [
        prompt_record(
            {"external_id": pid, "text": f"Question {pid}?", "source": source}, line=i + 1
        )
        for i, pid in enumerate(texts_per_prompt)
    ]
    prompts_import(project=project, records=records)
    rows = [
        candidate_record({"prompt_external_id": pid, "text": text, "model": "m"}, line=n + 1)
        for n, (pid, text) in enumerate(
            (pid, text) for pid, texts in texts_per_prompt.items() for text in texts
        )
    ]
    candidates_import(project=project, records=rows)
    from annotation.models import Candidate

    return {c.text: c.pk for c in Candidate.objects.filter(prompt__project=project)}


@pytest.fixture
def pair_project(make_project):
    return make_project("active", num_candidates=2, overlap=2)


def hand_made(pair_project):
    """Two prompts of 4 candidates; the RM is unsure of x1/x2 (p) and of y3/y4 (q)."""
    ids = make_pool(
        pair_project,
        {"p": ["x1", "x2", "x3", "x4"], "q": ["y1", "y2", "y3", "y4"]},
    )
    reward = {"x1": 2.0, "x2": 2.01, "x3": 8.0, "x4": -5.0, "y1": 0.0, "y2": 6.0}
    reward |= {"y3": 3.0, "y4": 3.5}
    return ids, {ids[t]: [r] for t, r in reward.items()}


def test_uncertainty_build_groups_the_uncertain_candidates_and_ranks_them_first(pair_project):
    ids, scores = hand_made(pair_project)
    result = comparisons_build(project=pair_project, scores=scores, max_share=1.0)
    assert result.created == 4 and result.leftover == 0
    order = list(Comparison.objects.filter(project=pair_project).order_by("-priority"))
    assert [sorted(c.candidate_ids) for c in order[:2]] == [
        sorted([ids["x1"], ids["x2"]]),
        sorted([ids["y3"], ids["y4"]]),
    ]
    assert [c.priority for c in order] == [1.0, 0.75, 0.5, 0.25]
    assert all(c.required == 2 for c in order)


def test_uncertainty_build_refuses_unscored_candidates_and_changes_nothing(pair_project):
    ids, scores = hand_made(pair_project)
    del scores[ids["y4"]]
    with pytest.raises(ServiceValidationError, match=f"candidate {ids['y4']} has no"):
        comparisons_build(project=pair_project, scores=scores)
    scores[ids["y4"]] = [1.0, 2.0]
    with pytest.raises(ServiceValidationError, match="has 2 scores, others 1"):
        comparisons_build(project=pair_project, scores=scores)
    with pytest.raises(ServiceValidationError, match="max_share"):
        comparisons_build(
            project=pair_project, scores={k: [0.0] for k in ids.values()}, max_share=2
        )
    assert not Comparison.objects.exists()


def test_random_build_leaves_priority_zero_and_uncertainty_goes_ahead(pair_project, make_labeler):
    ids = make_pool(pair_project, {"r": ["r1", "r2"]})
    comparisons_build(project=pair_project)
    ids, scores = hand_made(pair_project)
    comparisons_build(project=pair_project, scores=scores, max_share=1.0)
    assert Comparison.objects.get(prompt__external_id="r").priority == 0.0
    alice = make_labeler("alice", projects=[pair_project])
    served = []
    for step in range(5):
        assignment = assignment_next(project=pair_project, labeler=alice, now=T0)
        served.append(assignment.comparison.priority)
        submit(assignment, alice, step)
    assert served == [1.0, 0.75, 0.5, 0.25, 0.0]


def submit(assignment, labeler, step):
    return ranking_submit(
        assignment=assignment,
        labeler=labeler,
        ranking=[[cid] for cid in assignment.display_order],
        client_token=uuid.uuid4(),
        now=T0 + timedelta(seconds=step + 1),
    )


def test_serving_by_priority_never_serves_twice_nor_over_required(pair_project, make_labeler):
    ids, scores = hand_made(pair_project)
    comparisons_build(project=pair_project, scores=scores, max_share=1.0)
    labelers = [make_labeler(f"l{i}", projects=[pair_project]) for i in range(3)]
    served: list[tuple[int, int]] = []
    step = 0
    for _ in range(10):  # round-robin over labelers until nothing is left
        for labeler in labelers:
            assignment = assignment_next(project=pair_project, labeler=labeler, now=T0)
            if assignment is None:
                continue
            served.append((assignment.comparison_id, labeler.pk))
            submit(assignment, labeler, step)
            step += 1
    assert len(served) == len(set(served))  # nobody was served a comparison twice
    per_comparison = Counter(cid for cid, _ in served)
    assert set(per_comparison.values()) == {2}  # each exactly `required`
    assert Assignment.objects.filter(status=Assignment.Status.SUBMITTED).count() == 8
    # The first labeler got the highest priority first; each comparison filled before the next.
    priority = dict(Comparison.objects.values_list("id", "priority"))
    first = [priority[cid] for cid, labeler in served if labeler == labelers[0].pk]
    assert first == sorted(first, reverse=True)
    assert [priority[cid] for cid, _ in served[:2]] == [1.0, 1.0]
