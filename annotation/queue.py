"""Reads behind the assignment engine: which comparisons a labeler may lease, and in what order.

"Open lease" means `status = leased AND expires_at > now` everywhere, so a lease that ran out
frees its slot whether or not housekeeping has marked it expired yet.
"""

from __future__ import annotations

import random
from datetime import datetime

from django.db import connection

from annotation.models import Assignment, Comparison, Project, Prompt

# The queue as one hand-written statement: on the labeling hot path Django spent more time
# building and compiling an equivalent queryset (subqueries, annotations) than the database
# spent running it, by about ten times.
_QUEUE_HEAD_SQL = """
SELECT c.*, p.messages AS prompt_messages FROM {comparison} c
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
    with the open leases and skips at the head of the queue). The prompt's messages come
    along for the labeler's payload.
    """
    sql, params = queue_head_sql(
        project=project, labeler=labeler, gold=gold, now=now, exclude=exclude, lock=lock
    )
    comparison = next(iter(Comparison.objects.raw(sql, params)), None)
    if comparison is not None:
        # The prompt's messages came along (the labeler's payload needs them): attach them
        # as a Prompt whose other fields load on first use.
        messages = Prompt._meta.get_field("messages").from_db_value(
            comparison.prompt_messages, None, connection
        )
        comparison.prompt = Prompt.from_db(
            comparison._state.db, ["id", "messages"], [comparison.prompt_id, messages]
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
