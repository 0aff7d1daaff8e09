"""The assignment engine: lease comparisons to labelers, take their rankings, free slots.

Invariants (SPEC section 2) and what holds them:

- A comparison never collects more than `required` submitted annotations. Every write that
  changes a comparison's reservations (a new lease, a submit) holds the comparison's row
  lock (PostgreSQL `SELECT ... FOR UPDATE`; SQLite serializes writers with IMMEDIATE
  transactions) and recounts `submitted_count` + unexpired leases under it; the check
  constraint `comparison_never_over_annotated` catches anything that slips past.
- A labeler never annotates the same comparison twice: the queue query excludes comparisons
  the labeler submitted or skipped, and the unique constraint on (comparison, labeler) backs
  it. An expired lease does not exclude its labeler (SPEC section 11): while the slot is
  free the comparison is served to them again, on the same assignment row, leased anew.
- An expired lease frees its slot: "open" always means `status = leased AND expires_at >
  now` (`annotation.leases`), so nothing depends on `leases_expire` having run.

The hot path uses indexed lookups only: the queue walks `comparison_queue_idx` in order
(highest priority first, then fewest submitted, then oldest) and stops at the first
comparison that has room and that this labeler has not seen; per row it probes the
(comparison, labeler) unique index and the partial index of open leases.
No query counts rows over the whole project.

Decisions where SPEC is silent:

- "Both bad" (pairwise `[[a, b]]` with `all_bad`) and, in general, one tier holding every
  candidate with `all_bad` set are accepted even where ties are off: they state no
  preference. Any other tie needs `project.allow_ties`.
- Gold comparisons obey `required` like any other; to score every labeler on a gold item,
  give it a `required` as large as the team. Gold is served when one more keeps the
  labeler's gold share at or below `gold_rate`; when no regular work is left and the rate is
  above 0, remaining gold is served; at rate 0 gold is never served.
- A correction (a second submit on a submitted assignment) is allowed to its owner, lease
  or not, up to CORRECTIONS_MAX per assignment (then 409), and never changes the counts. A
  skipped assignment cannot be submitted.
- An inactive project serves nothing: `assignment_next` answers None, and submits (first
  ones on earlier leases and corrections alike) are refused with 409; replaying a
  client_token that was already stored still returns its annotation.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from annotation.errors import ConflictError, NotAllowedError, ServiceValidationError
from annotation.leases import lapsed_lease_q, lease_is_open
from annotation.models import (
    Annotation,
    Assignment,
    Comparison,
    LabelerQueue,
    Project,
    TaskType,
)
from annotation.rules.answers import demonstration_clean, edited_text_clean
from annotation.rules.ranking import submission_clean
from annotation.selectors.queue import (
    QueueHead,
    assignment_of_labeler,
    comparison_has_room,
    comparison_locked_for,
    display_order_for,
    leased_by,
    member_queue_locked,
    queue_head,
)

# How many queue heads one `assignment_next` may find taken (locked or filled meanwhile by
# another labeler on PostgreSQL) before it concludes that nothing is free right now.
MAX_QUEUE_RETRIES = 20


def _gold_due(queue: LabelerQueue, rate: float) -> bool:
    """Serve gold when one more keeps this labeler's gold share at or below the rate."""
    # The epsilon absorbs float error, e.g. 0.57 * 100 == 56.99999999999999.
    return rate > 0 and queue.served_gold + 1 <= rate * (queue.served + 1) + 1e-9


# ---------------------------------------------------------------------------------------
# Services
# ---------------------------------------------------------------------------------------


def _renew_open_lease(
    *, project: Project, labeler, now: datetime, lease: timedelta
) -> tuple[Assignment | None, list[int]]:
    """The labeler's open lease in this project, renewed, and the ids of lapsed leases."""
    leased = leased_by(project=project, labeler=labeler)
    lapsed = [a.pk for a in leased if not lease_is_open(a, now)]
    current = next((a for a in leased if lease_is_open(a, now)), None)
    if current is None:
        return None, lapsed
    # Lock the comparison before extending: another labeler may have taken the slot the
    # moment this lease ran out by their clock, and a renewal must not steal it back. The
    # savepoint releases the lock again when the lease cannot be renewed.
    with transaction.atomic():
        Comparison.objects.select_for_update().filter(pk=current.comparison_id).exists()
        if comparison_has_room(current.comparison_id, now, exclude_assignment=current.pk):
            renewed = Assignment.objects.filter(
                pk=current.pk, status=Assignment.Status.LEASED
            ).update(expires_at=now + lease)
            if renewed:
                current.expires_at = now + lease
                return current, lapsed
        transaction.set_rollback(True)
    return None, [*lapsed, current.pk]


def _lease(
    comparison: Comparison, labeler, now: datetime, lease: timedelta, prior: int | None
) -> Assignment | None:
    """A lease on `comparison` for the labeler; None when their prior row was closed meanwhile."""
    if prior is not None:
        # The labeler's lapsed or expired lease on it: the same row, leased again (the
        # display order is seeded per (comparison, labeler), so it does not change). The
        # queue read it before the comparison's lock; a late submit or a skip of that lease
        # may have committed since, and must not be turned back into a lease.
        assignment = Assignment.objects.select_for_update().get(pk=prior)
        if assignment.status not in (Assignment.Status.LEASED, Assignment.Status.EXPIRED):
            return None
        assignment.status = Assignment.Status.LEASED
        assignment.leased_at = now
        assignment.expires_at = now + lease
        assignment.save(update_fields=["status", "leased_at", "expires_at"])
        assignment.comparison = comparison
        return assignment
    assignment = Assignment.objects.create(
        comparison=comparison,
        labeler=labeler,
        display_order=display_order_for(comparison, labeler),
        status=Assignment.Status.LEASED,
        leased_at=now,
        expires_at=now + lease,
    )
    assignment.comparison = comparison
    return assignment


def _lease_from_queue(
    *, project: Project, labeler, gold: bool, now: datetime, lease: timedelta
) -> Assignment | None:
    def head(exclude: list[int], lock: str = "") -> QueueHead | None:
        return queue_head(
            project=project, labeler=labeler, gold=gold, now=now, exclude=exclude, lock=lock
        )

    if not connection.features.has_select_for_update_skip_locked:
        # SQLite: the IMMEDIATE transaction shuts out every other writer, so what the queue
        # query sees stays true until commit.
        found = head([])
        if found is None:
            return None
        return _lease(found.comparison, labeler, now, lease, found.prior_assignment_id)
    taken: list[int] = []
    for _ in range(MAX_QUEUE_RETRIES):
        # Each try runs in a savepoint so a comparison that turns out to be full is unlocked
        # again at once: this transaction then never holds a lock while waiting for one.
        with transaction.atomic():
            found = head(taken, "FOR UPDATE OF c SKIP LOCKED")
            if found is None:
                # SKIP LOCKED hides comparisons that other labelers hold locked right now,
                # maybe to take the last slot, maybe not. Wait for the first of them rather
                # than answer "nothing left" while one may still free up.
                found = head(taken)
                if found is None:
                    return None
                first = found.comparison
                comparison = Comparison.objects.select_for_update().filter(pk=first.pk).first()
                if comparison is None:  # deleted meanwhile
                    taken.append(first.pk)
                    continue
            else:
                comparison = found.comparison
            # The queue's subqueries read a snapshot from before the lock was granted;
            # recount now that nobody else can change this comparison's reservations.
            if comparison_has_room(comparison.pk, now):
                leased = _lease(comparison, labeler, now, lease, found.prior_assignment_id)
                if leased is not None:
                    return leased
            transaction.set_rollback(True)
        taken.append(comparison.pk)
    return None


def assignment_next(*, project: Project, labeler, now: datetime | None = None) -> Assignment | None:
    """The labeler's open lease in the project (renewed), else a new lease, else None.

    Raises NotAllowedError for a user who is neither a member nor staff. An inactive
    project serves nothing (None), so a paused project reads as "nothing left".
    """
    now = now or timezone.now()
    lease = timedelta(seconds=project.lease_seconds)
    with transaction.atomic():
        # Lock this labeler's queue row first: concurrent calls from one labeler (two tabs)
        # then run one after the other and share one lease instead of taking two.
        member, queue = member_queue_locked(project, labeler)
        if not member:
            raise NotAllowedError(
                "You are not a member of this project.", {"project": [project.slug]}
            )
        if not project.active:
            return None
        if queue is None:  # first lease in this project: get_or_create settles a race to create
            queue, _ = LabelerQueue.objects.select_for_update().get_or_create(
                project=project, labeler=labeler
            )
        assignment, lapsed = _renew_open_lease(
            project=project, labeler=labeler, now=now, lease=lease
        )
        if assignment is None:
            # Gold when due; otherwise regular work, and gold once regular work runs out.
            due = _gold_due(queue, project.gold_rate)
            order = [True, False] if due else [False, True] if project.gold_rate > 0 else [False]
            for gold in order:
                assignment = _lease_from_queue(
                    project=project, labeler=labeler, gold=gold, now=now, lease=lease
                )
                if assignment is not None:
                    queue.served += 1
                    queue.served_gold += int(gold)
                    queue.save(update_fields=["served", "served_gold"])
                    break
        if assignment is not None:
            lapsed = [pk for pk in lapsed if pk != assignment.pk]  # leased again just now
        if lapsed:
            # Housekeeping for this labeler, last so that no lock is held while waiting.
            Assignment.objects.filter(pk__in=lapsed, status=Assignment.Status.LEASED).update(
                status=Assignment.Status.EXPIRED
            )
    return assignment


def _as_uuid(value: Any) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except (TypeError, ValueError, AttributeError):
        raise ServiceValidationError(
            "client_token must be a UUID.", {"client_token": ["Not a valid UUID."]}
        ) from None


def ranking_submit(
    *,
    assignment: Assignment,
    labeler,
    ranking: list[list[int]] | None = None,
    demonstration: str = "",
    edited_text: str = "",
    flags: dict | None = None,
    ratings: dict | None = None,
    all_bad: bool = False,
    rationale: str = "",
    time_spent_ms: int = 0,
    client_token: uuid.UUID,
    now: datetime | None = None,
) -> tuple[Annotation, bool]:
    """Store a labeler's ranking for an assignment; returns (annotation, created).

    Replaying a client_token returns the first annotation with created=False. A lease that
    ran out is still accepted while its slot is free, else ConflictError and nothing is
    stored. Submitting again on a submitted assignment (new token) stores a correction
    that supersedes the previous annotation without counting twice.

    On a `demonstration` project the submission is the written `demonstration` (required;
    nothing is ranked, the candidates were references); on a ranking project with
    `allow_edit`, `edited_text` optionally rewrites the best answer.
    """
    token = _as_uuid(client_token)
    if assignment.labeler_id != labeler.pk:
        raise NotAllowedError("This assignment belongs to another labeler.")
    try:
        return _ranking_submit(
            assignment=assignment,
            labeler=labeler,
            token=token,
            now=now,
            values={
                "ranking": ranking,
                "demonstration": demonstration,
                "edited_text": edited_text,
                "flags": flags,
                "ratings": ratings,
                "all_bad": all_bad,
                "rationale": rationale,
                "time_spent_ms": time_spent_ms,
            },
        )
    except IntegrityError:
        # Only a race gets here (the checks run under the comparison's lock): the same token
        # sent for two assignments at once, say. The transaction rolled back; report it.
        # The unique (labeler, client_token) constraint is also how a token already used on
        # another assignment is caught: the hot path does not look tokens up beforehand.
        first = Annotation.objects.filter(labeler=labeler, client_token=token).first()
        if first is not None and first.assignment_id == assignment.pk:
            return first, False
        if first is not None:
            raise ConflictError(
                "This client_token was already used for another assignment.",
                {"client_token": [str(token)]},
            ) from None
        raise ConflictError(
            "The submission collided with a concurrent one; nothing was stored.",
            {"client_token": [str(token)]},
        ) from None


def _locked_own_assignment(assignment: Assignment, labeler):
    """(comparison target, assignment), both row-locked in the one order: comparison, then
    assignment. ConflictError when the assignment was deleted meanwhile (an admin removed the
    project, say); NotAllowedError when the labeler is no longer a member of the project.
    """
    target = comparison_locked_for(assignment.comparison_id, labeler)
    current = assignment_of_labeler(assignment.pk, labeler, lock=True) if target else None
    if current is None:
        raise ConflictError("This assignment no longer exists.", {"assignment": [assignment.pk]})
    if not (labeler.is_staff or target.labeler_is_member):
        raise NotAllowedError("You are not a member of this project.")
    return target, current


@transaction.atomic
def _ranking_submit(
    *, assignment: Assignment, labeler, token: uuid.UUID, now: datetime | None, values: dict
) -> tuple[Annotation, bool]:
    target, current = _locked_own_assignment(assignment, labeler)
    # The clock is read once the locks are held: read before, a submit that waited on another
    # labeler's transaction would judge its lease (and stamp submitted_at) by a stale time.
    now = now or timezone.now()
    comparison, project = target.comparison, target.project
    if current.status in (Assignment.Status.SUBMITTED, Assignment.Status.REJECTED):
        # Only an assignment with an annotation can hold this token already: then it is a
        # replay (a client retrying after a lost response), answered with what was stored,
        # even when staff have rejected it since. A token used on another assignment trips
        # the unique constraint on insert.
        first = Annotation.objects.filter(labeler=labeler, client_token=token).first()
        if first is not None:
            if first.assignment_id != assignment.pk:
                raise ConflictError(
                    "This client_token was already used for another assignment.",
                    {"client_token": [str(token)]},
                )
            return first, False
    if not project.active:
        raise ConflictError(
            f"Project {project.slug!r} is not active; it accepts no submissions.",
            {"project": [project.slug]},
        )
    answer = dict(values)
    demonstration, edited_text = answer.pop("demonstration"), answer.pop("edited_text")
    written = project.task_type == TaskType.DEMONSTRATION
    clean = submission_clean(
        candidate_ids=list(comparison.candidate_ids),
        **answer,
        allow_ties=project.allow_ties,
        flag_codes=list(project.flags or []),
        rating_scale=project.rating_scale,
        rationale_max_length=settings.RATIONALE_MAX_LENGTH,
        ranked=not written,
    )
    if written:
        demonstration = demonstration_clean(
            demonstration=demonstration, max_length=settings.ANSWER_MAX_LENGTH
        )
        if edited_text:
            raise ServiceValidationError(
                "Invalid submission: a demonstration project takes `demonstration`, "
                "not `edited_text`.",
                {"edited_text": ["Write the answer in `demonstration`."]},
            )
    else:
        if demonstration:
            raise ServiceValidationError(
                "Invalid submission: only demonstration projects take `demonstration`.",
                {"demonstration": [f"Project {project.slug!r} is a {project.task_type} project."]},
            )
        edited_text = edited_text_clean(
            edited_text=edited_text,
            allow_edit=project.allow_edit,
            max_length=settings.ANSWER_MAX_LENGTH,
        )
    previous = None
    if current.status == Assignment.Status.SKIPPED:
        raise ConflictError("This assignment was skipped; it can no longer be submitted.")
    if current.status == Assignment.Status.REJECTED:
        # Review gave this slot back (annotation/services/review.py); no correction either.
        raise ConflictError(
            "Staff rejected this answer; the assignment can no longer be submitted."
        )
    if current.status == Assignment.Status.SUBMITTED:
        corrections = Annotation.objects.filter(assignment=current).count() - 1
        if corrections >= settings.CORRECTIONS_MAX:
            raise ConflictError(
                f"This assignment already has {corrections} corrections, the most allowed "
                f"(CORRECTIONS_MAX = {settings.CORRECTIONS_MAX}); no more are accepted.",
                {"assignment": [current.pk]},
            )
        previous = (
            Annotation.objects.filter(assignment=current, superseded_by__isnull=True)
            .order_by("-id")
            .first()
        )
    else:
        # An open lease holds its slot; a lapsed one needs a slot nobody took meanwhile.
        fits = comparison.submitted_count < comparison.required and (
            lease_is_open(current, now)
            or comparison_has_room(comparison.pk, now, exclude_assignment=current.pk)
        )
        if not fits:
            raise ConflictError(
                "Your lease ran out and this comparison has been taken by others.",
                {"assignment": ["lease expired, slot taken"]},
            )
    annotation = Annotation.objects.create(
        assignment=current,
        comparison=comparison,
        labeler=labeler,
        ranking=clean.ranking,
        demonstration=demonstration,
        edited_text=edited_text,
        ratings=clean.ratings,
        flags=clean.flags,
        all_bad=clean.all_bad,
        rationale=clean.rationale,
        time_spent_ms=clean.time_spent_ms,
        client_token=token,
        supersedes=previous,
    )
    if previous is None:
        current.status = Assignment.Status.SUBMITTED
        current.submitted_at = now
        current.save(update_fields=["status", "submitted_at"])
        comparison_count_submission(comparison=comparison, now=now)
    return annotation, True


def comparison_count_submission(*, comparison: Comparison, now) -> None:
    """One more submitted annotation on a row-locked comparison; complete once it is full."""
    comparison.submitted_count += 1
    fields = ["submitted_count"]
    if comparison.submitted_count >= comparison.required:
        comparison.status = Comparison.Status.COMPLETE
        comparison.completed_at = now
        fields += ["status", "completed_at"]
    comparison.save(update_fields=fields)


def assignment_skip(*, assignment: Assignment, labeler, now: datetime | None = None) -> Assignment:
    """Give the comparison back; this labeler is never served it again.

    Skipping twice is a no-op; skipping a submitted or rejected assignment is a
    ConflictError, as is one deleted meanwhile; a labeler removed from the project gets
    NotAllowedError. `now` is accepted for symmetry with the other services (a skip frees
    the slot at once).
    """
    if assignment.labeler_id != labeler.pk:
        raise NotAllowedError("This assignment belongs to another labeler.")
    with transaction.atomic():
        _, current = _locked_own_assignment(assignment, labeler)
        if current.status == Assignment.Status.SUBMITTED:
            raise ConflictError("This assignment was already submitted; it cannot be skipped.")
        if current.status == Assignment.Status.REJECTED:
            # Its slot went back to the comparison already; a skip would let a restore
            # count the annotation again on top of whoever took the slot.
            raise ConflictError("Staff rejected this answer; the assignment cannot be skipped.")
        if current.status != Assignment.Status.SKIPPED:
            current.status = Assignment.Status.SKIPPED
            current.save(update_fields=["status"])
    return current


def assignment_renew(*, assignment: Assignment, labeler, now: datetime | None = None) -> Assignment:
    """Extend the lease of the comparison the labeler is working on, also after it ran out
    while its slot stayed free: the lease the labeling page keeps alive while its labeler is
    active. Unlike `assignment_next`, it never leases another comparison instead.

    ConflictError when the assignment was submitted, skipped or rejected, when somebody took
    the slot after the lease ran out, when the labeler holds another open lease in the
    project (they moved on, e.g. in another tab), or when the project is paused.
    """
    now = now or timezone.now()
    if assignment.labeler_id != labeler.pk:
        raise NotAllowedError("This assignment belongs to another labeler.")
    with transaction.atomic():
        target, current = _locked_own_assignment(assignment, labeler)
        project = target.project
        if current.status not in (Assignment.Status.LEASED, Assignment.Status.EXPIRED):
            raise ConflictError(
                f"This assignment was {current.get_status_display().lower()}: there is no "
                "lease to renew."
            )
        if not project.active:
            raise ConflictError("This project is paused: leases are not renewed.")
        if any(
            other.pk != current.pk and lease_is_open(other, now)
            for other in leased_by(project=project, labeler=labeler)
        ):
            raise ConflictError("You hold a lease on another comparison of this project.")
        if not comparison_has_room(current.comparison_id, now, exclude_assignment=current.pk):
            raise ConflictError(
                "Somebody else took this comparison after your lease ran out.",
                {"assignment": [current.pk]},
            )
        current.status = Assignment.Status.LEASED
        current.expires_at = now + timedelta(seconds=project.lease_seconds)
        current.save(update_fields=["status", "expires_at"])
    return current


def leases_expire(*, now: datetime | None = None) -> int:
    """Mark leases past their time as expired; returns how many. Housekeeping only."""
    now = now or timezone.now()
    return Assignment.objects.filter(lapsed_lease_q(now)).update(status=Assignment.Status.EXPIRED)


def leases_release(*, project_ids, labeler_ids) -> int:
    """Expire the leases these labelers hold in these projects; returns how many.

    Called when labelers leave a project (annotation/signals.py): they can no longer submit,
    so their open leases would only hold slots others could fill until they ran out. Staff
    keep theirs: they may label any project. Status LEASED is re-checked on each row, so a
    submit that commits first keeps its answer.
    """
    return Assignment.objects.filter(
        status=Assignment.Status.LEASED,
        comparison__project_id__in=list(project_ids),
        labeler_id__in=list(labeler_ids),
        labeler__is_staff=False,
    ).update(status=Assignment.Status.EXPIRED)
