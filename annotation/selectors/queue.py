"""Reads behind the assignment engine: which comparisons a labeler may lease, and in what order.

Every read on the labeling hot path (next and submit) is a plain SQL statement here, written
once for SQLite and PostgreSQL alike: Django took about ten times longer to build and
compile the equivalent querysets than the database took to run them, and that was most of
a labeling call's CPU (bench/README.md). Writes stay ORM calls in
`annotation/services/labeling.py`.

The statements do not leak (`annotation.selectors.sql`): every table and column name comes
from the models' `_meta`, so a renamed field renames its SQL or fails at import; rows come
back as model instances built from exactly their own columns, converted by Django's own
converters, or as small typed rows (`MemberQueue`, `SubmitTarget`) where a statement answers
more than one model holds. The open-lease condition is `annotation.leases.open_lease_sql`,
the same rule the ORM and Python forms state.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import datetime
from typing import NamedTuple

from django.db import connection

from annotation.leases import open_lease_params, open_lease_sql
from annotation.models import Assignment, Candidate, Comparison, LabelerQueue, Project, Prompt
from annotation.selectors.sql import Table, converted, fetchone, for_update, instance

# The aliases the statements below use, one per table role.
c = Table(Comparison, "c")
p = Table(Prompt, "p")
a = Table(Assignment, "a")
q = Table(LabelerQueue, "q")
pr = Table(Project, "pr")
m = Table(Project.members.through, "m")
seen = Table(Assignment, "seen")
prior = Table(Assignment, "prior")
lease = Table(Assignment, "lease")
cand = Table(Candidate, "cand")


# ---------------------------------------------------------------------------------------
# The queue
# ---------------------------------------------------------------------------------------

_COMPARISON_COLUMNS = len(Comparison._meta.concrete_fields)
_PROMPT_FIELDS = [Prompt._meta.get_field("messages"), Prompt._meta.get_field("is_chat")]

# `{exclude}` and `{lock}` are filled per call; everything else once, here.
# Only a submitted or skipped assignment (or the labeler's own open lease) excludes its
# labeler (SPEC section 11); a lapsed or expired lease does not, and its row comes back as
# the last column so the lease reuses it (one row per (comparison, labeler) is unique).
# Both probes use that unique index, so the walk stays two index probes per row.
_QUEUE_HEAD_SQL = f"""
SELECT {c.columns()}, {p.messages}, {p.is_chat}, (
    SELECT {prior.id} FROM {prior} WHERE {prior.comparison} = {c.id} AND {prior.labeler} = %s
  ) FROM {c}
JOIN {p} ON {p.id} = {c.prompt}
WHERE {c.project} = %s AND {c.status} = %s AND {c.is_gold} = %s
  AND NOT EXISTS (
    SELECT 1 FROM {seen} WHERE {seen.comparison} = {c.id} AND {seen.labeler} = %s
      AND ({seen.status} IN ({", ".join(["%s"] * len(Assignment.DONE_STATUSES))})
           OR {open_lease_sql("seen")})
  )
  AND {c.submitted_count} + (
    SELECT COUNT(*) FROM {lease} WHERE {lease.comparison} = {c.id} AND {open_lease_sql("lease")}
  ) < {c.required}{{exclude}}
ORDER BY {c.priority} DESC, {c.submitted_count}, {c.id}
LIMIT 1{{lock}}"""


def queue_head_sql(
    *, project: Project, labeler, gold: bool, now: datetime, exclude=(), lock: str = ""
) -> tuple[str, list]:
    """SQL and parameters of `queue_head`'s statement (tests EXPLAIN it).

    `exclude` drops comparisons by id; `lock` is appended as is ("" or a FOR UPDATE clause,
    which PostgreSQL needs as `FOR UPDATE OF c ...` to leave the prompt unlocked).
    """
    exclude = list(exclude)
    sql = _QUEUE_HEAD_SQL.format(
        exclude=f"\n  AND {c.id} NOT IN ({', '.join(['%s'] * len(exclude))})" if exclude else "",
        lock=f" {lock}" if lock else "",
    )
    params = [
        labeler.pk,
        project.pk,
        Comparison.Status.OPEN.value,
        gold,
        labeler.pk,
        *(status.value for status in Assignment.DONE_STATUSES),
        *open_lease_params(now),
        *open_lease_params(now),
        *exclude,
    ]
    return sql, params


class QueueHead(NamedTuple):
    """The comparison at the head of a labeler's queue, and their earlier lease on it."""

    comparison: Comparison
    prior_assignment_id: int | None  # the labeler's lapsed or expired assignment, to reuse


def queue_head(
    *, project: Project, labeler, gold: bool, now: datetime, exclude=(), lock: str = ""
) -> QueueHead | None:
    """The first comparison this labeler may lease now, in serving order, or None.

    Serving order is highest priority first (`build_comparisons --strategy uncertainty`
    sets it; random builds leave 0), then fewest submitted, then oldest. The statement walks
    `comparison_queue_idx` in order and stops at the first row with room that the labeler
    never had; each row costs two index probes, so it does not grow with the project (only
    with the open leases and skips at the head of the queue). The prompt comes along as
    `comparison.prompt` with its id, messages and is_chat loaded (the labeler's payload
    needs them). With it comes the labeler's lapsed or expired assignment for that
    comparison, if any: a new lease reuses that row.
    """
    sql, params = queue_head_sql(
        project=project, labeler=labeler, gold=gold, now=now, exclude=exclude, lock=lock
    )
    row = fetchone(sql, params)
    if row is None:
        return None
    comparison = instance(Comparison, row[:_COMPARISON_COLUMNS])
    messages, is_chat = converted(
        _PROMPT_FIELDS, row[_COMPARISON_COLUMNS : _COMPARISON_COLUMNS + 2]
    )
    # A Prompt whose other fields load on first use, cached as the comparison's prompt.
    comparison.prompt = Prompt.from_db(
        connection.alias,
        ["id", "messages", "is_chat"],
        [comparison.prompt_id, messages, bool(is_chat)],  # SQLite hands booleans back as 0/1
    )
    return QueueHead(comparison, row[_COMPARISON_COLUMNS + 2])


_ROOM_SQL = f"""
SELECT {c.status}, {c.submitted_count}, {c.required}, (
  SELECT COUNT(*) FROM {lease}
  WHERE {lease.comparison} = {c.id} AND {open_lease_sql("lease")}{{exclude}}
) FROM {c} WHERE {c.id} = %s"""


def comparison_has_room(
    comparison_id: int, now: datetime, *, exclude_assignment: int | None = None
) -> bool:
    """Whether one more annotation fits: open, and submitted + open leases < required.

    Callers hold the comparison's row lock, so the answer stays true until they commit.
    `exclude_assignment` leaves that lease out of the count (the caller's own).
    """
    excluded = exclude_assignment is not None
    sql = _ROOM_SQL.format(exclude=f" AND {lease.id} <> %s" if excluded else "")
    params = [*open_lease_params(now), *([exclude_assignment] if excluded else []), comparison_id]
    row = fetchone(sql, params)
    if row is None:
        raise Comparison.DoesNotExist(f"comparison {comparison_id} does not exist")
    status, submitted, required, leases = row
    return status == Comparison.Status.OPEN and submitted + leases < required


# ---------------------------------------------------------------------------------------
# Projects, queues, assignments
# ---------------------------------------------------------------------------------------

_MEMBER_SQL = f"EXISTS (SELECT 1 FROM {m} WHERE {m.project} = {{project}} AND {m.user} = %s)"
_PROJECT_SQL = f"SELECT {pr.columns()} FROM {pr} WHERE {pr.slug} = %s"
_PROJECT_BY_ID_SQL = f"SELECT {pr.columns()} FROM {pr} WHERE {pr.id} = %s"
_QUEUE_SQL = f"SELECT {q.columns()} FROM {q} WHERE {q.project} = %s AND {q.labeler} = %s"
_ASSIGNMENT_SQL = f"SELECT {a.columns()} FROM {a} WHERE {a.id} = %s AND {a.labeler} = %s"


def project_for_member(slug: str, user) -> Project | None:
    """The project with this slug if the user may label it (members; staff: any), else None."""
    sql, params = _PROJECT_SQL, [slug]
    if not user.is_staff:
        sql += " AND " + _MEMBER_SQL.format(project=pr.id)
        params.append(user.pk)
    row = fetchone(sql, params)
    return instance(Project, row) if row is not None else None


def is_member(project: Project, user) -> bool:
    """Staff may label any project; everyone else only the projects they belong to."""
    return user.is_staff or project.members.filter(pk=user.pk).exists()


class MemberQueue(NamedTuple):
    """May the user label this project, and their queue row there (row-locked) if they have one."""

    is_member: bool
    queue: LabelerQueue | None  # None until the labeler's first lease in the project


def member_queue_locked(project: Project, labeler) -> MemberQueue:
    """Membership and the labeler's row-locked queue row in one statement on the hot path.

    The statement finds the row only for a member (or staff); when it finds nothing, a
    second query tells a newcomer (no row yet) from a user who may not label here.
    """
    sql, params = _QUEUE_SQL, [project.pk, labeler.pk]
    if not labeler.is_staff:
        sql += " AND " + _MEMBER_SQL.format(project=q.project)
        params.append(labeler.pk)
    row = fetchone(for_update(sql), params)
    if row is not None:
        return MemberQueue(True, instance(LabelerQueue, row))
    return MemberQueue(is_member(project, labeler), None)


def assignment_of_labeler(assignment_id: int, labeler, *, lock: bool = False) -> Assignment | None:
    """The labeler's own assignment with this id (row-locked if `lock`), else None."""
    sql = for_update(_ASSIGNMENT_SQL) if lock else _ASSIGNMENT_SQL
    row = fetchone(sql, [assignment_id, labeler.pk])
    return instance(Assignment, row) if row is not None else None


class SubmitTarget(NamedTuple):
    """What a submit reads under the comparison's row lock."""

    comparison: Comparison
    project: Project
    labeler_is_member: bool


_SUBMIT_TARGET_SQL = (
    f"SELECT {c.columns()}, "
    + _MEMBER_SQL.format(project=c.project)
    + f" FROM {c} WHERE {c.id} = %s"
)


def comparison_locked_for(comparison_id: int, labeler) -> SubmitTarget | None:
    """The comparison row-locked for a submit, its project, and whether the labeler is a member."""
    row = fetchone(for_update(_SUBMIT_TARGET_SQL), [labeler.pk, comparison_id])
    if row is None:
        return None
    comparison = instance(Comparison, row[:_COMPARISON_COLUMNS])
    project = instance(Project, fetchone(_PROJECT_BY_ID_SQL, [comparison.project_id]))
    return SubmitTarget(comparison, project, bool(row[_COMPARISON_COLUMNS]))


_LEASED_BY_SQL = f"""SELECT {a.columns()} FROM {a} JOIN {c} ON {c.id} = {a.comparison}
WHERE {a.labeler} = %s AND {a.status} = %s AND {c.project} = %s ORDER BY {a.id}"""


def leased_by(*, project: Project, labeler) -> list[Assignment]:
    """The labeler's assignments in this project still marked leased (open or lapsed), oldest first.

    Usually none or one; read on every `next`, hence a plain statement.
    """
    with connection.cursor() as cursor:
        cursor.execute(_LEASED_BY_SQL, [labeler.pk, Assignment.Status.LEASED.value, project.pk])
        return [instance(Assignment, row) for row in cursor.fetchall()]


def candidate_texts(candidate_ids: Iterable[int]) -> dict[int, str]:
    """Candidate id -> text for these ids (repeats are fine), as one plain statement."""
    ids = sorted(set(candidate_ids))
    if not ids:
        return {}
    placeholders = ", ".join(["%s"] * len(ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {cand.id}, {cand.text} FROM {cand} WHERE {cand.id} IN ({placeholders})", ids
        )
        return dict(cursor.fetchall())


def display_order_for(comparison: Comparison, labeler) -> list[int]:
    """The candidate order one labeler sees: a shuffle seeded by (comparison, labeler).

    Seeded rather than drawn from the OS so the order can be reproduced when auditing
    position bias; across labelers it is a uniform random permutation all the same.
    """
    order = list(comparison.candidate_ids)
    random.Random(f"display:{comparison.pk}:{labeler.pk}").shuffle(order)
    return order
