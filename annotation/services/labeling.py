"""The assignment engine: lease comparisons to labelers, take their rankings, free slots.

Invariants (SPEC section 2) and what holds them:

- A comparison never collects more than `required` submitted annotations. Every write that
  changes a comparison's reservations (a new lease, a submit) holds the comparison's row
  lock (PostgreSQL `SELECT ... FOR UPDATE`; SQLite serializes writers with IMMEDIATE
  transactions) and recounts `submitted_count` + unexpired leases under it; the check
  constraint `comparison_never_over_annotated` catches anything that slips past.
- A labeler never gets the same comparison twice: the queue query excludes comparisons the
  labeler ever had an assignment for (submitted, skipped or expired), and the unique
  constraint on (comparison, labeler) backs it.
- An expired lease frees its slot: "open" always means `status = leased AND expires_at >
  now`, so nothing depends on `leases_expire` having run.

The hot path uses indexed lookups only: the queue walks `comparison_queue_idx` in order
(fewest submitted first, then oldest) and stops at the first comparison that has room and
that this labeler has not seen; per row it probes the (comparison, labeler) unique index and
the partial index of open leases. No query counts rows over the whole project.

Decisions where SPEC is silent:

- "Both bad" (pairwise `[[a, b]]` with `all_bad`) and, in general, one tier holding every
  candidate with `all_bad` set are accepted even where ties are off: they state no
  preference. Any other tie needs `project.allow_ties`.
- Gold comparisons obey `required` like any other; to score every labeler on a gold item,
  give it a `required` as large as the team. Gold is served when one more keeps the
  labeler's gold share at or below `gold_rate`; when no regular work is left and the rate is
  above 0, remaining gold is served; at rate 0 gold is never served.
- A correction (a second submit on a submitted assignment) is always allowed to its owner,
  lease or not, and never changes the counts. A skipped assignment cannot be submitted.
- An inactive project serves nothing: `assignment_next` answers None.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from annotation.errors import ConflictError, NotAllowedError, ServiceValidationError
from annotation.models import Annotation, Assignment, Comparison, LabelerQueue, Project
from annotation.queue import (
    assignment_of_labeler,
    comparison_has_room,
    comparison_locked_for,
    display_order_for,
    is_member,
    labeler_queue_locked,
    leased_by,
    queue_head,
)

# PositiveIntegerField holds up to 2**31 - 1 on every backend; larger would be a 500.
TIME_SPENT_MAX_MS = 2**31 - 1
# How many queue heads one `assignment_next` may find taken (locked or filled meanwhile by
# another labeler on PostgreSQL) before it concludes that nothing is free right now.
MAX_QUEUE_RETRIES = 20


# ---------------------------------------------------------------------------------------
# Submission validation (pure: plain values in, cleaned values out)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CleanSubmission:
    """A validated submission, normalized for storage (string candidate-id keys)."""

    ranking: list[list[int]]
    flags: dict[str, list[str]]
    ratings: dict[str, int]
    all_bad: bool
    rationale: str
    time_spent_ms: int


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _candidate_id(key: Any) -> int | None:
    """A flags/ratings key as a candidate id: JSON gives "12", Python callers give 12."""
    if _is_int(key):
        return key
    if isinstance(key, str) and key.isascii() and key.isdigit():
        return int(key)
    return None


def _clean_ranking(
    ranking: Any, candidate_ids: list[int], *, allow_ties: bool, all_bad: bool
) -> list[str]:
    if not isinstance(ranking, list) or not ranking:
        return ["The ranking must be a non-empty list of tiers (lists of candidate ids)."]
    errors: list[str] = []
    seen: list[int] = []
    for position, tier in enumerate(ranking, start=1):
        if not isinstance(tier, list) or not tier:
            errors.append(f"Tier {position} must be a non-empty list of candidate ids.")
            continue
        for item in tier:
            if not _is_int(item):
                errors.append(f"Tier {position} holds {item!r}, which is not a candidate id.")
            else:
                seen.append(item)
    known = set(candidate_ids)
    for item in dict.fromkeys(seen):
        if item not in known:
            errors.append(f"Candidate {item} is not part of this comparison.")
        elif seen.count(item) > 1:
            errors.append(f"Candidate {item} appears more than once.")
    for item in candidate_ids:
        if item not in seen:
            errors.append(f"Candidate {item} is missing from the ranking.")
    # "Both/all bad" is one tier holding every candidate with all_bad set: it states no
    # preference, so it is accepted even where ties are off (SPEC section 2, pairwise).
    all_bad_tier = all_bad and len(ranking) == 1
    if not allow_ties and not all_bad_tier:
        for position, tier in enumerate(ranking, start=1):
            if isinstance(tier, list) and len(tier) > 1:
                errors.append(f"Tier {position} is a tie; this project does not allow ties.")
    return errors


def submission_clean(
    *,
    candidate_ids: list[int],
    ranking: Any,
    flags: Any = None,
    ratings: Any = None,
    all_bad: Any = False,
    rationale: Any = "",
    time_spent_ms: Any = 0,
    allow_ties: bool,
    flag_codes: list[str],
    rating_scale: int,
    rationale_max_length: int,
) -> CleanSubmission:
    """Check a submission against a comparison's candidates and its project's settings."""
    errors: dict[str, list[str]] = {}

    def add(field: str, messages: list[str]) -> None:
        if messages:
            errors.setdefault(field, []).extend(messages)

    if not isinstance(all_bad, bool):
        add("all_bad", ["all_bad must be true or false."])
        all_bad = False
    add("ranking", _clean_ranking(ranking, candidate_ids, allow_ties=allow_ties, all_bad=all_bad))

    clean_flags: dict[str, list[str]] = {}
    if flags is None:
        flags = {}
    if not isinstance(flags, dict):
        add("flags", ["flags must map candidate ids to lists of flag codes."])
        flags = {}
    for key, codes in flags.items():
        cid = _candidate_id(key)
        if cid is None or cid not in candidate_ids:
            add("flags", [f"{key!r} is not a candidate of this comparison."])
            continue
        if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
            add("flags", [f"Candidate {cid}: flags must be a list of codes."])
            continue
        unknown = [c for c in codes if c not in flag_codes]
        if unknown:
            add("flags", [f"Candidate {cid}: unknown flag code {c!r}." for c in unknown])
            continue
        if codes:
            # Merge "3" and 3 if a caller sent both; keep first-seen order, drop repeats.
            merged = clean_flags.setdefault(str(cid), [])
            merged.extend(c for c in codes if c not in merged)

    clean_ratings: dict[str, int] = {}
    if ratings is None:
        ratings = {}
    if not isinstance(ratings, dict):
        add("ratings", ["ratings must map candidate ids to integer scores."])
        ratings = {}
    if ratings and rating_scale == 0:
        add("ratings", ["This project does not collect ratings."])
        ratings = {}
    for key, value in ratings.items():
        cid = _candidate_id(key)
        if cid is None or cid not in candidate_ids:
            add("ratings", [f"{key!r} is not a candidate of this comparison."])
        elif not _is_int(value) or not 1 <= value <= rating_scale:
            add(
                "ratings", [f"Candidate {cid}: rating must be an integer from 1 to {rating_scale}."]
            )
        elif clean_ratings.get(str(cid), value) != value:
            add("ratings", [f"Candidate {cid} has two different ratings."])
        else:
            clean_ratings[str(cid)] = value

    if not isinstance(rationale, str):
        add("rationale", ["rationale must be text."])
        rationale = ""
    elif len(rationale) > rationale_max_length:
        add("rationale", [f"rationale is longer than {rationale_max_length} characters."])
    elif "\x00" in rationale:
        # PostgreSQL text cannot hold NUL; reject it here rather than fail with a 500.
        add("rationale", ["rationale must not contain NUL characters."])

    if not _is_int(time_spent_ms) or not 0 <= time_spent_ms <= TIME_SPENT_MAX_MS:
        add("time_spent_ms", [f"time_spent_ms must be an integer from 0 to {TIME_SPENT_MAX_MS}."])

    if errors:
        first = next(iter(errors.values()))[0]
        raise ServiceValidationError(f"Invalid submission: {first}", errors)
    return CleanSubmission(
        ranking=[list(tier) for tier in ranking],
        flags=clean_flags,
        ratings=clean_ratings,
        all_bad=all_bad,
        rationale=rationale.strip(),
        time_spent_ms=time_spent_ms,
    )


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
    lapsed = [a.pk for a in leased if a.expires_at <= now]
    current = next((a for a in leased if a.expires_at > now), None)
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


def _lease(comparison: Comparison, labeler, now: datetime, lease: timedelta) -> Assignment:
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
    def head(exclude: list[int], lock: str = "") -> Comparison | None:
        return queue_head(
            project=project, labeler=labeler, gold=gold, now=now, exclude=exclude, lock=lock
        )

    if not connection.features.has_select_for_update_skip_locked:
        # SQLite: the IMMEDIATE transaction shuts out every other writer, so what the queue
        # query sees stays true until commit.
        comparison = head([])
        return _lease(comparison, labeler, now, lease) if comparison is not None else None
    taken: list[int] = []
    for _ in range(MAX_QUEUE_RETRIES):
        # Each try runs in a savepoint so a comparison that turns out to be full is unlocked
        # again at once: this transaction then never holds a lock while waiting for one.
        with transaction.atomic():
            comparison = head(taken, "FOR UPDATE OF c SKIP LOCKED")
            if comparison is None:
                # SKIP LOCKED hides comparisons that other labelers hold locked right now,
                # maybe to take the last slot, maybe not. Wait for the first of them rather
                # than answer "nothing left" while one may still free up.
                first = head(taken)
                if first is None:
                    return None
                comparison = Comparison.objects.select_for_update().filter(pk=first.pk).first()
                if comparison is None:  # deleted meanwhile
                    taken.append(first.pk)
                    continue
            # The queue's subqueries read a snapshot from before the lock was granted;
            # recount now that nobody else can change this comparison's reservations.
            if comparison_has_room(comparison.pk, now):
                return _lease(comparison, labeler, now, lease)
            transaction.set_rollback(True)
        taken.append(comparison.pk)
    return None


def assignment_next(*, project: Project, labeler, now: datetime | None = None) -> Assignment | None:
    """The labeler's open lease in the project (renewed), else a new lease, else None.

    Raises NotAllowedError for a user who is neither a member nor staff. An inactive
    project serves nothing (None), so a paused project reads as "nothing left".
    """
    now = now or timezone.now()
    if not is_member(project, labeler):
        raise NotAllowedError("You are not a member of this project.", {"project": [project.slug]})
    if not project.active:
        return None
    lease = timedelta(seconds=project.lease_seconds)
    with transaction.atomic():
        # Lock this labeler's queue row first: concurrent calls from one labeler (two tabs)
        # then run one after the other and share one lease instead of taking two.
        queue = labeler_queue_locked(project, labeler)
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
    ranking: list[list[int]],
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
    """
    now = now or timezone.now()
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


@transaction.atomic
def _ranking_submit(
    *, assignment: Assignment, labeler, token: uuid.UUID, now: datetime, values: dict
) -> tuple[Annotation, bool]:
    # Lock order everywhere: comparison, then assignment.
    comparison = comparison_locked_for(assignment.comparison_id, labeler)
    current = assignment_of_labeler(assignment.pk, labeler, lock=True) if comparison else None
    if current is None:  # deleted meanwhile (an admin removed the project, say)
        raise ConflictError("This assignment no longer exists.", {"assignment": [assignment.pk]})
    project = comparison.project
    if not (labeler.is_staff or comparison.labeler_is_member):
        raise NotAllowedError("You are not a member of this project.")
    if current.status == Assignment.Status.SUBMITTED:
        # Only a submitted assignment can hold this token already: then it is a replay.
        # (A token used on another assignment trips the unique constraint on insert.)
        first = Annotation.objects.filter(labeler=labeler, client_token=token).first()
        if first is not None:
            if first.assignment_id != assignment.pk:
                raise ConflictError(
                    "This client_token was already used for another assignment.",
                    {"client_token": [str(token)]},
                )
            return first, False
    clean = submission_clean(
        candidate_ids=list(comparison.candidate_ids),
        **values,
        allow_ties=project.allow_ties,
        flag_codes=list(project.flags or []),
        rating_scale=project.rating_scale,
        rationale_max_length=settings.RATIONALE_MAX_LENGTH,
    )
    previous = None
    if current.status == Assignment.Status.SKIPPED:
        raise ConflictError("This assignment was skipped; it can no longer be submitted.")
    if current.status == Assignment.Status.SUBMITTED:
        previous = (
            Annotation.objects.filter(assignment=current, superseded_by__isnull=True)
            .order_by("-id")
            .first()
        )
    else:
        lease_open = current.status == Assignment.Status.LEASED and current.expires_at > now
        # An open lease holds its slot; a lapsed one needs a slot nobody took meanwhile.
        fits = comparison.submitted_count < comparison.required and (
            lease_open or comparison_has_room(comparison.pk, now, exclude_assignment=current.pk)
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
        comparison.submitted_count += 1
        fields = ["submitted_count"]
        if comparison.submitted_count >= comparison.required:
            comparison.status = Comparison.Status.COMPLETE
            comparison.completed_at = now
            fields += ["status", "completed_at"]
        comparison.save(update_fields=fields)
    return annotation, True


def assignment_skip(*, assignment: Assignment, labeler, now: datetime | None = None) -> Assignment:
    """Give the comparison back; this labeler is never served it again.

    Skipping twice is a no-op; skipping a submitted assignment is a ConflictError. `now` is
    accepted for symmetry with the other services (a skip frees the slot at once).
    """
    if assignment.labeler_id != labeler.pk:
        raise NotAllowedError("This assignment belongs to another labeler.")
    with transaction.atomic():
        current = Assignment.objects.select_for_update().get(pk=assignment.pk)
        if current.status == Assignment.Status.SUBMITTED:
            raise ConflictError("This assignment was already submitted; it cannot be skipped.")
        if current.status != Assignment.Status.SKIPPED:
            current.status = Assignment.Status.SKIPPED
            current.save(update_fields=["status"])
    return current


def leases_expire(*, now: datetime | None = None) -> int:
    """Mark leases past their time as expired; returns how many. Housekeeping only."""
    now = now or timezone.now()
    return Assignment.objects.filter(status=Assignment.Status.LEASED, expires_at__lte=now).update(
        status=Assignment.Status.EXPIRED
    )
