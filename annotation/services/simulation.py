"""Simulated labelers played in process through the labeling services (SPEC section 7).

Each simulated labeler is a real account (`sim-<slug>-<i>`, a member of the project) and goes
through `assignment_next` and `ranking_submit` exactly as a person behind the API would, so a
simulation exercises the same leases, overlap and gold serving as real work. The rankings
come from `annotation.simulation` (Plackett-Luce over the judge's scores).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from django.db.models import F, IntegerField, Sum, Value
from django.db.models.functions import Least

from annotation.errors import ConflictError, ServiceValidationError
from annotation.models import Comparison, Project
from annotation.selectors.queue import candidate_texts
from annotation.services.labeling import assignment_next, assignment_skip, ranking_submit
from annotation.services.projects import labeler_create
from annotation.simulation import (
    JudgeFn,
    SimulationResult,
    judge_scores,
    pairwise_agreement_with_scores,
    simulated_labelers,
)


def simulated_username(project: Project, index: int) -> str:
    """The account name of simulated labeler `index` (1-based) of a project."""
    return f"sim-{project.slug}-{index}"


def simulated_accounts_create(*, project: Project, labelers: int) -> list:
    """Create (or reuse) `labelers` simulated accounts, members of the project."""
    if labelers < 1:
        raise ServiceValidationError("At least one labeler is needed.", {"labelers": ["< 1"]})
    return [
        labeler_create(username=simulated_username(project, i), projects=[project])[0]
        for i in range(1, labelers + 1)
    ]


def simulation_remaining(*, project: Project, labelers: int) -> int:
    """Annotations still wanted that `labelers` labelers can give (each one per comparison)."""
    total = Comparison.objects.filter(project=project, status=Comparison.Status.OPEN).aggregate(
        n=Sum(
            Least(F("required") - F("submitted_count"), Value(labelers)),
            output_field=IntegerField(),
        )
    )["n"]
    return int(total or 0)


def _comparison_scores(comparison_id: int, judge: JudgeFn) -> dict[int, float]:
    """The judge's score of each candidate of a comparison, by candidate id."""
    comparison = Comparison.objects.select_related("prompt").get(pk=comparison_id)
    texts = candidate_texts(comparison.candidate_ids)
    ids = list(comparison.candidate_ids)
    scores = judge_scores(judge, comparison.prompt.as_model_input(), [texts[i] for i in ids])
    return dict(zip(ids, scores))


def labelers_simulate(
    *,
    project: Project,
    judge: JudgeFn,
    labelers: int,
    noise: float,
    random_share: float = 0.0,
    adversarial_share: float = 0.0,
    max_annotations: int | None = None,
    seed: int = 0,
    tie_epsilon: float | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> SimulationResult:
    """Play `labelers` simulated labelers in turn until the queue is empty or M annotations.

    Labelers take turns (one comparison each per round) so that, as with people working at
    once, overlapping annotations of a comparison come from different labelers. Ties are
    given only when `tie_epsilon` is set and the project allows them.
    """
    if max_annotations is not None and max_annotations < 0:
        raise ServiceValidationError("max_annotations must be >= 0.", {"max_annotations": ["< 0"]})
    try:
        # Validate shares and noise before any account is created.
        sims = simulated_labelers(
            [simulated_username(project, i) for i in range(1, labelers + 1)],
            noise=noise,
            random_share=random_share,
            adversarial_share=adversarial_share,
            seed=seed,
            ties=tie_epsilon is not None and project.allow_ties,
            tie_epsilon=tie_epsilon or 0.0,
        )
    except ValueError as exc:
        raise ServiceValidationError(f"Invalid simulation: {exc}") from None
    accounts = simulated_accounts_create(project=project, labelers=labelers)
    result = SimulationResult(labelers=labelers)
    # The judge's scores do not change between labelers: score each comparison once.
    scores_of: dict[int, dict[int, float]] = {}
    start = time.perf_counter()

    def budget_left() -> bool:
        return max_annotations is None or result.annotations < max_annotations

    active = list(zip(accounts, sims))
    while active and budget_left():
        still_working = []
        for user, sim in active:
            if not budget_left():
                break
            t0 = time.perf_counter()
            assignment = assignment_next(project=project, labeler=user)
            if assignment is None:
                continue  # nothing left for this labeler; others may still have work
            still_working.append((user, sim))
            if assignment.comparison_id not in scores_of:
                scores_of[assignment.comparison_id] = _comparison_scores(
                    assignment.comparison_id, judge
                )
            scores = scores_of[assignment.comparison_id]
            order = list(assignment.display_order)
            tiers = sim.rank(order, [scores[i] for i in order])
            try:
                annotation, created = ranking_submit(
                    assignment=assignment, labeler=user, ranking=tiers, client_token=uuid.uuid4()
                )
            except ConflictError:
                # Not expected in process (leases outlive a turn), but never loop on a lease.
                assignment_skip(assignment=assignment, labeler=user)
                result.conflicts += 1
                continue
            agree, judged = pairwise_agreement_with_scores(tiers, scores)
            result.record(
                kind=sim.kind.value,
                annotation_id=annotation.pk,
                created=created,
                agree=agree,
                judged=judged,
                round_trip_ms=(time.perf_counter() - t0) * 1000,
            )
            if on_progress is not None:
                on_progress(1)
        active = still_working
    result.seconds = time.perf_counter() - start
    return result
