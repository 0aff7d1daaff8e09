"""Simulated labelers played in process through the labeling services (SPEC section 7).

Each simulated labeler is a real account (`sim-<slug>-<i>`, a member of the project) and goes
through `assignment_next` and `ranking_submit` exactly as a person behind the API would, so a
simulation exercises the same leases, overlap and gold serving as real work. The loop and
the rankings are `simulation.run.play`'s, as over HTTP.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from django.db.models import F, IntegerField, Sum, Value
from django.db.models.functions import Least

from annotation.errors import ConflictError, ServiceValidationError
from annotation.models import Assignment, Comparison, Project, TaskType
from annotation.selectors.queue import candidate_texts
from annotation.services.labeling import assignment_next, assignment_skip, ranking_submit
from annotation.services.projects import labeler_create
from simulation.backends import Outcome, Served, Submitted
from simulation.labelers import simulated_labelers
from simulation.run import JudgeFn, SimulationResult, play


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


class ServiceBackend:
    """A labeler working on one project through annotation's services, in this process."""

    def __init__(self, project: Project, labeler):
        self.project = project
        self.labeler = labeler
        self._leased: dict[int, Assignment] = {}

    def next(self) -> Served | None:
        assignment = assignment_next(project=self.project, labeler=self.labeler)
        if assignment is None:
            return None
        self._leased = {assignment.pk: assignment}  # a labeler holds one lease at a time
        comparison = assignment.comparison
        order = list(assignment.display_order)
        texts = candidate_texts(order)
        return Served(
            assignment_id=assignment.pk,
            comparison_id=comparison.pk,
            prompt=comparison.prompt.as_model_input(),
            candidate_ids=order,
            texts=[texts[i] for i in order],
        )

    def submit(self, served: Served, tiers: list[list[int]], client_token: uuid.UUID) -> Submitted:
        try:
            annotation, created = ranking_submit(
                assignment=self._leased[served.assignment_id],
                labeler=self.labeler,
                ranking=tiers,
                client_token=client_token,
            )
        except ConflictError:
            # Not expected in process (leases outlive a turn), but never loop on a lease.
            return Submitted(Outcome.CONFLICT)
        return Submitted(Outcome.CREATED if created else Outcome.REPLAY, annotation.pk)

    def skip(self, served: Served) -> None:
        assignment_skip(assignment=self._leased.pop(served.assignment_id), labeler=self.labeler)


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
    if project.task_type == TaskType.DEMONSTRATION:
        message = (
            f"Project {project.slug!r} collects demonstrations: simulated labelers rank "
            "answers with the judge, they cannot write them."
        )
        raise ServiceValidationError(message, {"project": [message]})
    try:
        # Validate shares and noise before any account is created.
        sims = simulated_labelers(
            [simulated_username(project, i) for i in range(1, labelers + 1)],
            noise=noise,
            random_share=random_share,
            adversarial_share=adversarial_share,
            seed=seed,
            tie_epsilon=tie_epsilon,
        )
    except ValueError as exc:
        raise ServiceValidationError(f"Invalid simulation: {exc}") from None
    accounts = simulated_accounts_create(project=project, labelers=labelers)
    return play(
        [(sim, ServiceBackend(project, user)) for user, sim in zip(accounts, sims)],
        judge=judge,
        allow_ties=project.allow_ties,
        max_annotations=max_annotations,
        on_progress=on_progress,
    )
