"""Many labelers at once: no over-assignment, no duplicates, nothing lost (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from annotation.models import Annotation, Assignment, Comparison
from annotation.services.labeling import assignment_next, assignment_skip, ranking_submit


def _sqlite_in_memory() -> bool:
    database = settings.DATABASES["default"]
    name = (database.get("TEST") or {}).get("NAME")
    return database["ENGINE"].endswith("sqlite3") and (not name or name == ":memory:")


pytestmark = [
    pytest.mark.django_db(transaction=True),
    # Threads on an in-memory SQLite share one cache with table locks that never wait
    # ("database table is locked"); the real deployment is a file, and so must the test be.
    pytest.mark.skipif(
        _sqlite_in_memory(),
        reason="needs a file-backed SQLite test database: DATABASES['default']['TEST']['NAME']",
    ),
]

WORKERS = 8
DEADLINE_S = 90


def run_threads(count: int, target: Callable[[int], None]) -> list[BaseException]:
    """Start `count` threads together; return what they raised. Each closes its connection."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def body(index: int) -> None:
        try:
            close_old_connections()
            barrier.wait(timeout=30)
            target(index)
        except BaseException as exc:  # noqa: BLE001 - reported to the test below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=DEADLINE_S + 30)
    assert not any(t.is_alive() for t in threads), "a worker hung"
    return errors


def test_labelers_drain_the_queue_without_over_assignment(
    make_project, make_labeler, make_comparisons
):
    project = make_project("race", num_candidates=3, overlap=2)
    users = [make_labeler(f"w{i}", projects=[project]) for i in range(WORKERS)]
    comparisons = make_comparisons(project, 30)
    submitted: dict[int, list[int]] = {u.pk: [] for u in users}
    skipped: dict[int, list[int]] = {u.pk: [] for u in users}

    def work(index: int) -> None:
        user = users[index]
        deadline = time.monotonic() + DEADLINE_S
        served = 0
        while time.monotonic() < deadline:
            assignment = assignment_next(project=project, labeler=user)
            if assignment is None:
                # Nothing for me right now. Others may still skip or let go of a slot, so
                # stop only when every open comparison is one I already had.
                open_ids = set(
                    Comparison.objects.filter(project=project, status="open").values_list(
                        "id", flat=True
                    )
                )
                mine = set(
                    Assignment.objects.filter(labeler=user).values_list("comparison_id", flat=True)
                )
                if open_ids <= mine:
                    return
                time.sleep(0.005)
                continue
            served += 1
            if index == 0 and served % 3 == 0:
                assignment_skip(assignment=assignment, labeler=user)
                skipped[user.pk].append(assignment.comparison_id)
                continue
            token = uuid.uuid4()
            ranking = [[cid] for cid in assignment.display_order]
            annotation, created = ranking_submit(
                assignment=assignment, labeler=user, ranking=ranking, client_token=token
            )
            assert created
            # A retried request (same token) must not count twice.
            again, created_again = ranking_submit(
                assignment=assignment, labeler=user, ranking=ranking, client_token=token
            )
            assert (again.pk, created_again) == (annotation.pk, False)
            submitted[user.pk].append(annotation.pk)
        raise AssertionError(f"worker {index} ran past the deadline")

    errors = run_threads(WORKERS, work)
    assert errors == []

    annotations = list(Annotation.objects.all())
    # Nothing lost, nothing duplicated: the stored annotations are exactly those reported.
    assert sorted(a.pk for a in annotations) == sorted(
        pk for pks in submitted.values() for pk in pks
    )
    assert len(annotations) == 2 * len(comparisons)
    per_pair = Counter((a.comparison_id, a.labeler_id) for a in annotations)
    assert max(per_pair.values()) == 1
    per_comparison = Counter(a.comparison_id for a in annotations)
    for comparison in Comparison.objects.filter(project=project):
        assert comparison.status == Comparison.Status.COMPLETE
        assert comparison.submitted_count == comparison.required == 2
        assert per_comparison[comparison.pk] == 2
    # Skipped comparisons went to others, never back to the one who skipped.
    for comparison_id in skipped[users[0].pk]:
        assert (comparison_id, users[0].pk) not in per_pair
    assert Assignment.objects.filter(status=Assignment.Status.LEASED).count() == 0


def test_one_labeler_in_many_tabs_gets_one_lease(make_project, make_labeler, make_comparisons):
    project = make_project("tabs", num_candidates=2, overlap=1)
    user = make_labeler("tabs", projects=[project])
    make_comparisons(project, 10)
    # Past the first call, which creates the labeler's queue row (and so serializes anyway).
    first = assignment_next(project=project, labeler=user)
    assignment_skip(assignment=first, labeler=user)
    got: list[int] = []

    def work(_index: int) -> None:
        got.append(assignment_next(project=project, labeler=user).pk)

    assert run_threads(WORKERS, work) == []
    assert len(set(got)) == 1
    assert Assignment.objects.filter(labeler=user, status="leased").count() == 1


def test_competing_for_the_last_slot_one_wins(make_project, make_labeler, make_comparisons):
    project = make_project("last", num_candidates=2, overlap=1)
    users = [make_labeler(f"l{i}", projects=[project]) for i in range(WORKERS)]
    (comparison,) = make_comparisons(project, 1)
    got: list[int | None] = []

    def work(index: int) -> None:
        assignment = assignment_next(project=project, labeler=users[index])
        got.append(assignment.comparison_id if assignment else None)

    assert run_threads(WORKERS, work) == []
    assert sorted(got, key=str) == [comparison.pk] + [None] * (WORKERS - 1)
    assert Assignment.objects.count() == 1


def test_a_replayed_submit_racing_itself_stores_one_annotation(
    make_project, make_labeler, make_comparisons
):
    project = make_project("replay", num_candidates=2, overlap=1)
    user = make_labeler("replay", projects=[project])
    make_comparisons(project, 1)
    assignment = assignment_next(project=project, labeler=user)
    token = uuid.uuid4()
    results: list[tuple[int, bool]] = []

    def work(_index: int) -> None:
        annotation, created = ranking_submit(
            assignment=assignment,
            labeler=user,
            ranking=[[cid] for cid in assignment.display_order],
            client_token=token,
        )
        results.append((annotation.pk, created))

    assert run_threads(WORKERS, work) == []
    assert len({pk for pk, _ in results}) == 1
    assert sorted(created for _, created in results) == [False] * (WORKERS - 1) + [True]
    assert Annotation.objects.count() == 1
    assert Comparison.objects.get().submitted_count == 1


# ---------------------------------------------------------------------------------------
# PostgreSQL's SKIP LOCKED branch, step by step (SQLite has no row locks: its writers queue)
# ---------------------------------------------------------------------------------------


def _needs_skip_locked() -> None:
    if not connection.features.has_select_for_update_skip_locked:
        pytest.skip("SKIP LOCKED is PostgreSQL's; SQLite serializes writers instead")


class _Holder(threading.Thread):
    """Holds a comparison's row lock in its own transaction until told to let go."""

    def __init__(self, comparison_id: int, *, then: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.comparison_id = comparison_id
        self.then = then  # runs under the lock just before the commit
        self.locked = threading.Event()
        self.release = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with transaction.atomic():
                Comparison.objects.select_for_update().get(pk=self.comparison_id)
                self.locked.set()
                self.release.wait(timeout=30)
                if self.then is not None:
                    self.then()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.error = exc
        finally:
            self.locked.set()
            connection.close()

    def __enter__(self) -> _Holder:
        self.start()
        assert self.locked.wait(timeout=30)
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.join(timeout=30)
        assert self.error is None, self.error


def test_a_locked_queue_head_is_skipped_not_waited_for(
    make_project, make_labeler, make_comparisons
):
    _needs_skip_locked()
    project = make_project("skip", num_candidates=2, overlap=1)
    user = make_labeler("skip", projects=[project])
    first, second = make_comparisons(project, 2)
    with _Holder(first.pk), CaptureQueriesContext(connection) as queries:
        started = time.monotonic()
        assignment = assignment_next(project=project, labeler=user)
        waited = time.monotonic() - started
    assert assignment.comparison_id == second.pk
    assert waited < 5  # went past the locked head at once
    assert any("FOR UPDATE OF c SKIP LOCKED" in q["sql"] for q in queries)


def test_with_every_head_locked_it_waits_for_the_first(
    make_project, make_labeler, make_comparisons
):
    _needs_skip_locked()
    project = make_project("wait", num_candidates=2, overlap=1)
    user = make_labeler("wait", projects=[project])
    (only,) = make_comparisons(project, 1)
    holder = _Holder(only.pk)
    with holder:
        threading.Timer(0.3, holder.release.set).start()  # lets go while we wait
        assignment = assignment_next(project=project, labeler=user)
    # The holder took nothing: the slot is still free once its lock is gone.
    assert assignment is not None and assignment.comparison_id == only.pk


def test_a_slot_taken_under_the_lock_is_recounted_not_leased(
    make_project, make_labeler, make_comparisons
):
    _needs_skip_locked()
    project = make_project("taken", num_candidates=2, overlap=1)
    user, rival = (make_labeler(n, projects=[project]) for n in ("mine", "rival"))
    (only,) = make_comparisons(project, 1)

    def take_the_slot() -> None:
        now = timezone.now()
        Assignment.objects.create(
            comparison=only,
            labeler=rival,
            display_order=only.candidate_ids,
            leased_at=now,
            expires_at=now + timedelta(minutes=10),
        )

    holder = _Holder(only.pk, then=take_the_slot)
    with holder:
        threading.Timer(0.3, holder.release.set).start()
        assignment = assignment_next(project=project, labeler=user)
    assert (
        assignment is None
    )  # the queue's snapshot said "room"; the recount under the lock did not
    assert list(Assignment.objects.values_list("labeler", flat=True)) == [rival.pk]


def test_a_late_submit_under_the_lock_is_not_turned_back_into_a_lease(
    make_project, make_labeler, make_comparisons
):
    # The queue names the labeler's lapsed lease as the row to reuse before the lock is
    # granted; their late submit of that lease commits meanwhile. Leasing the row again would
    # let them submit twice and fill both slots alone.
    _needs_skip_locked()
    project = make_project("late", num_candidates=2, overlap=2, lease_seconds=60)
    user = make_labeler("late", projects=[project])
    (only,) = make_comparisons(project, 1)
    lapsed = assignment_next(project=project, labeler=user)
    later = timezone.now() + timedelta(seconds=120)

    def submit_late() -> None:
        ranking_submit(
            assignment=lapsed,
            labeler=user,
            ranking=[[c] for c in lapsed.display_order],
            client_token=uuid.uuid4(),
            now=later,
        )

    holder = _Holder(only.pk, then=submit_late)
    with holder:
        threading.Timer(0.3, holder.release.set).start()
        assignment = assignment_next(project=project, labeler=user, now=later)
    assert assignment is None  # their one slot is used; the other is for someone else
    assert Assignment.objects.get(pk=lapsed.pk).status == "submitted"
    assert Annotation.objects.filter(labeler=user).count() == 1
