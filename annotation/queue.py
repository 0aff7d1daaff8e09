"""Reads behind the assignment engine: which comparisons a labeler may lease, and in what order.

"Open lease" means `status = leased AND expires_at > now` everywhere, so a lease that ran out
frees its slot whether or not housekeeping has marked it expired yet.

Every read on the labeling hot path (next and submit) is a plain SQL statement here, written
once for SQLite and PostgreSQL alike: Django took about ten times longer to build and
compile the equivalent querysets than the database took to run them, and that was most of
a labeling call's CPU (bench/README.md). Rows come back as model instances through
`Model.objects.raw`, so field conversions (JSON, datetimes) stay Django's. Writes stay ORM
calls in `annotation/services/labeling.py`.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import datetime

from django.db import connection

from annotation.models import Assignment, Candidate, Comparison, LabelerQueue, Project, Prompt

_QUEUE_HEAD_SQL = """
SELECT c.*, p.messages AS prompt_messages, p.is_chat AS prompt_is_chat FROM {comparison} c
JOIN {prompt} p ON p.id = c.prompt_id
WHERE c.project_id = %s AND c.status = %s AND c.is_gold = %s
  AND NOT EXISTS (
    SELECT 1 FROM {assignment} seen WHERE seen.comparison_id = c.id AND seen.labeler_id = %s
  )
  AND c.submitted_count + (
    SELECT COUNT(*) FROM {assignment} lease
    WHERE lease.comparison_id = c.id AND lease.status = %s AND lease.expires_at > %s
  ) < c.required{exclude}
ORDER BY c.submitted_count, c.id
LIMIT 1{lock}"""


def queue_head_sql(
    *, project: Project, labeler, gold: bool, now: datetime, exclude=(), lock: str = ""
) -> tuple[str, list]:
    """SQL and parameters of `queue_head`'s statement (tests EXPLAIN it).

    `exclude` drops comparisons by id; `lock` is appended as is ("" or a FOR UPDATE clause,
    which PostgreSQL needs as `FOR UPDATE OF c ...` to leave the prompt unlocked).
    """
    exclude = list(exclude)
    sql = _QUEUE_HEAD_SQL.format(
        comparison=Comparison._meta.db_table,
        assignment=Assignment._meta.db_table,
        prompt=Prompt._meta.db_table,
        exclude=f"\n  AND c.id NOT IN ({', '.join(['%s'] * len(exclude))})" if exclude else "",
        lock=f" {lock}" if lock else "",
    )
    params = [
        project.pk,
        Comparison.Status.OPEN.value,
        gold,
        labeler.pk,
        Assignment.Status.LEASED.value,
        connection.ops.adapt_datetimefield_value(now),
        *exclude,
    ]
    return sql, params


def queue_head(
    *, project: Project, labeler, gold: bool, now: datetime, exclude=(), lock: str = ""
) -> Comparison | None:
    """The first comparison this labeler may lease now, in serving order, or None.

    Serving order is fewest submitted first, then oldest. The statement walks
    `comparison_queue_idx` in order and stops at the first row with room that the labeler
    never had; each row costs two index probes, so it does not grow with the project (only
    with the open leases and skips at the head of the queue). The prompt's messages and
    `is_chat` come along for the labeler's payload.
    """
    sql, params = queue_head_sql(
        project=project, labeler=labeler, gold=gold, now=now, exclude=exclude, lock=lock
    )
    comparison = next(iter(Comparison.objects.raw(sql, params)), None)
    if comparison is not None:
        # The prompt's messages and is_chat came along (the labeler's payload needs them):
        # attach them as a Prompt whose other fields load on first use.
        messages = Prompt._meta.get_field("messages").from_db_value(
            comparison.prompt_messages, None, connection
        )
        comparison.prompt = Prompt.from_db(
            comparison._state.db,
            ["id", "messages", "is_chat"],
            # SQLite hands booleans back as 0/1.
            [comparison.prompt_id, messages, bool(comparison.prompt_is_chat)],
        )
    return comparison


_ROOM_SQL = """
SELECT c.status, c.submitted_count, c.required, (
  SELECT COUNT(*) FROM {assignment} lease
  WHERE lease.comparison_id = c.id AND lease.status = %s AND lease.expires_at > %s{exclude}
) FROM {comparison} c WHERE c.id = %s"""


def comparison_has_room(
    comparison_id: int, now: datetime, *, exclude_assignment: int | None = None
) -> bool:
    """Whether one more annotation fits: open, and submitted + open leases < required.

    Callers hold the comparison's row lock, so the answer stays true until they commit.
    `exclude_assignment` leaves that lease out of the count (the caller's own).
    """
    sql = _ROOM_SQL.format(
        assignment=Assignment._meta.db_table,
        comparison=Comparison._meta.db_table,
        exclude=" AND lease.id <> %s" if exclude_assignment is not None else "",
    )
    params = [Assignment.Status.LEASED.value, connection.ops.adapt_datetimefield_value(now)]
    params += [exclude_assignment] if exclude_assignment is not None else []
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, comparison_id])
        row = cursor.fetchone()
    if row is None:
        raise Comparison.DoesNotExist(f"comparison {comparison_id} does not exist")
    status, submitted, required, leases = row
    return status == Comparison.Status.OPEN and submitted + leases < required


def _for_update(sql: str) -> str:
    """`sql` with FOR UPDATE where the database has row locks (SQLite serializes writers)."""
    return f"{sql} FOR UPDATE" if connection.features.has_select_for_update else sql


def _first(model, sql: str, params: list):
    return next(iter(model.objects.raw(sql, params)), None)


def project_for_member(slug: str, user) -> Project | None:
    """The project with this slug if the user may label it (members; staff: any), else None."""
    sql = f"SELECT * FROM {Project._meta.db_table} p WHERE p.slug = %s"
    params: list = [slug]
    if not user.is_staff:
        members = Project.members.through._meta.db_table
        sql += (
            f" AND EXISTS (SELECT 1 FROM {members} m WHERE m.project_id = p.id AND m.user_id = %s)"
        )
        params.append(user.pk)
    project = _first(Project, sql, params)
    if project is not None and not user.is_staff:
        project.verified_member_id = user.pk  # the query proved it; see is_member
    return project


def assignment_of_labeler(assignment_id: int, labeler, *, lock: bool = False) -> Assignment | None:
    """The labeler's own assignment with this id (row-locked if `lock`), else None."""
    sql = f"SELECT * FROM {Assignment._meta.db_table} WHERE id = %s AND labeler_id = %s"
    return _first(Assignment, _for_update(sql) if lock else sql, [assignment_id, labeler.pk])


def comparison_locked_for(comparison_id: int, labeler) -> Comparison | None:
    """The comparison row-locked for a submit, with its project, and `labeler_is_member`."""
    members = Project.members.through._meta.db_table
    sql = _for_update(
        f"SELECT c.*, EXISTS (SELECT 1 FROM {members} m "
        "WHERE m.project_id = c.project_id AND m.user_id = %s) AS labeler_is_member "
        f"FROM {Comparison._meta.db_table} c WHERE c.id = %s"
    )
    comparison = _first(Comparison, sql, [labeler.pk, comparison_id])
    if comparison is not None:
        comparison.labeler_is_member = bool(comparison.labeler_is_member)
        comparison.project = _first(
            Project,
            f"SELECT * FROM {Project._meta.db_table} WHERE id = %s",
            [comparison.project_id],
        )
    return comparison


def labeler_queue_locked(project: Project, labeler) -> LabelerQueue:
    """The labeler's queue row in this project, row-locked; created on first use."""
    sql = f"SELECT * FROM {LabelerQueue._meta.db_table} WHERE project_id = %s AND labeler_id = %s"
    queue = _first(LabelerQueue, _for_update(sql), [project.pk, labeler.pk])
    if queue is None:  # first lease in this project: get_or_create settles a race to create
        queue, _ = LabelerQueue.objects.select_for_update().get_or_create(
            project=project, labeler=labeler
        )
    return queue


def leased_by(*, project: Project, labeler) -> list[Assignment]:
    """The labeler's assignments in this project still marked leased (open or lapsed), oldest first.

    Usually none or one; read on every `next`, hence a plain statement.
    """
    sql = (
        f"SELECT a.* FROM {Assignment._meta.db_table} a "
        f"JOIN {Comparison._meta.db_table} c ON c.id = a.comparison_id "
        "WHERE a.labeler_id = %s AND a.status = %s AND c.project_id = %s ORDER BY a.id"
    )
    return list(
        Assignment.objects.raw(sql, [labeler.pk, Assignment.Status.LEASED.value, project.pk])
    )


def candidate_texts(candidate_ids: Iterable[int]) -> dict[int, str]:
    """Candidate id -> text for these ids (repeats are fine), as one plain statement."""
    ids = sorted(set(candidate_ids))
    if not ids:
        return {}
    placeholders = ", ".join(["%s"] * len(ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, text FROM {Candidate._meta.db_table} WHERE id IN ({placeholders})", ids
        )
        return dict(cursor.fetchall())


def is_member(project: Project, user) -> bool:
    """Staff may label any project; everyone else only the projects they belong to.

    A project fetched through the membership (`project_for_labeler`) carries the member's
    id in `verified_member_id`, which saves the hot path a query.
    """
    if user.is_staff or getattr(project, "verified_member_id", None) == user.pk:
        return True
    return project.members.filter(pk=user.pk).exists()


def display_order_for(comparison: Comparison, labeler) -> list[int]:
    """The candidate order one labeler sees: a shuffle seeded by (comparison, labeler).

    Seeded rather than drawn from the OS so the order can be reproduced when auditing
    position bias; across labelers it is a uniform random permutation all the same.
    """
    order = list(comparison.candidate_ids)
    random.Random(f"display:{comparison.pk}:{labeler.pk}").shuffle(order)
    return order
