"""The assignment engine: leases, fair order, gold rate, submit rules, late submits, skips."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from annotation.errors import ConflictError, NotAllowedError, ServiceValidationError
from annotation.models import Annotation, Assignment, Comparison, LabelerQueue
from annotation.selectors.queue import display_order_for, queue_head_sql
from annotation.services.labeling import (
    assignment_next,
    assignment_renew,
    assignment_skip,
    leases_expire,
    ranking_submit,
)

pytestmark = pytest.mark.django_db

T0 = timezone.now().replace(microsecond=0)


def at(seconds: float):
    return T0 + timedelta(seconds=seconds)


def strict(assignment: Assignment) -> list[list[int]]:
    """A strict ranking in the order the labeler was shown."""
    return [[cid] for cid in assignment.display_order]


def submit(assignment, labeler, ranking=None, now=None, token=None, **extra):
    return ranking_submit(
        assignment=assignment,
        labeler=labeler,
        ranking=ranking if ranking is not None else strict(assignment),
        client_token=token or uuid.uuid4(),
        now=now or at(1),
        **extra,
    )


@pytest.fixture
def bob(make_labeler, project):
    return make_labeler("bob", projects=[project])


@pytest.fixture
def carol(make_labeler, project):
    return make_labeler("carol", projects=[project])


def refresh(obj):
    obj.refresh_from_db()
    return obj


# ---------------------------------------------------------------------------------------
# next
# ---------------------------------------------------------------------------------------


def test_next_leases_a_comparison_with_a_stored_per_labeler_order(
    project, labeler, make_comparisons
):
    first, *_ = make_comparisons(project, 3)
    assignment = assignment_next(project=project, labeler=labeler, now=at(0))
    assert assignment.comparison_id == first.pk
    assert assignment.status == Assignment.Status.LEASED
    assert assignment.leased_at == at(0)
    assert assignment.expires_at == at(600)
    stored = refresh(assignment).display_order
    assert sorted(stored) == sorted(first.candidate_ids)
    assert stored == display_order_for(first, labeler)


def test_the_lease_lasts_the_projects_lease_seconds(make_project, make_labeler, make_comparisons):
    project = make_project("short", num_candidates=2, lease_seconds=60)
    user = make_labeler("short", projects=[project])
    make_comparisons(project, 2)
    first = assignment_next(project=project, labeler=user, now=at(0))
    assert first.expires_at == at(60)
    assert assignment_next(project=project, labeler=user, now=at(59)).expires_at == at(119)
    # Lapsed at 119: leased again (the slot is free), for a fresh lease_seconds.
    assert assignment_next(project=project, labeler=user, now=at(119)).expires_at == at(179)


def test_display_order_is_shuffled_per_labeler(project, make_labeler, make_comparisons):
    (comparison,) = make_comparisons(project, 1)
    users = [make_labeler(f"u{i}", projects=[project]) for i in range(8)]
    orders = {tuple(display_order_for(comparison, u)) for u in users}
    # 8 labelers over 4! = 24 orders: a constant order would give one.
    assert len(orders) >= 3
    assert all(sorted(o) == sorted(comparison.candidate_ids) for o in orders)
    assert display_order_for(comparison, users[0]) == display_order_for(comparison, users[0])


def test_next_returns_the_open_lease_and_renews_it(project, labeler, make_comparisons):
    make_comparisons(project, 3)
    first = assignment_next(project=project, labeler=labeler, now=at(0))
    again = assignment_next(project=project, labeler=labeler, now=at(500))
    assert again.pk == first.pk
    assert again.expires_at == at(1100)
    assert refresh(first).expires_at == at(1100)
    assert Assignment.objects.filter(labeler=labeler).count() == 1


def test_an_expired_lease_is_leased_again_to_its_labeler_on_the_same_row(
    project, labeler, make_comparisons
):
    # SPEC section 11: an expired lease does not exclude its labeler while the slot is free.
    # (Before: the labeler got c2 and never saw c1 again.)
    c1, c2, _ = make_comparisons(project, 3)
    first = assignment_next(project=project, labeler=labeler, now=at(0))
    second = assignment_next(project=project, labeler=labeler, now=at(600))  # expires_at <= now
    assert first.comparison_id == c1.pk
    assert second.pk == first.pk
    assert second.comparison_id == c1.pk
    assert refresh(first).status == Assignment.Status.LEASED
    assert refresh(first).leased_at == at(600)
    assert refresh(first).expires_at == at(1200)
    assert Assignment.objects.filter(labeler=labeler).count() == 1


def test_an_expired_lease_after_housekeeping_is_served_back_and_submits(
    project, labeler, make_comparisons
):
    (comparison,) = make_comparisons(project, 1)
    first = assignment_next(project=project, labeler=labeler, now=at(0))
    assert leases_expire(now=at(700)) == 1
    again = assignment_next(project=project, labeler=labeler, now=at(800))
    assert again is not None and again.pk == first.pk
    assert refresh(first).status == Assignment.Status.LEASED
    submit(again, labeler, now=at(801))
    assert refresh(comparison).submitted_count == 1
    assert assignment_next(project=project, labeler=labeler, now=at(802)) is None


def test_an_expired_lease_is_not_served_back_when_the_slot_is_taken(
    make_project, make_labeler, make_comparisons
):
    project = make_project("taken", num_candidates=2, overlap=1)
    alice = make_labeler("ta", projects=[project])
    bob = make_labeler("tb", projects=[project])
    c1, c2 = make_comparisons(project, 2)
    mine = assignment_next(project=project, labeler=alice, now=at(0))
    theirs = assignment_next(project=project, labeler=bob, now=at(601))
    assert theirs.comparison_id == c1.pk  # the slot alice let lapse
    nxt = assignment_next(project=project, labeler=alice, now=at(602))
    assert nxt.comparison_id == c2.pk
    assert refresh(mine).status == Assignment.Status.EXPIRED


def test_fair_order_fewest_submitted_first_then_oldest(project, labeler, bob, make_comparisons):
    c1, c2, c3 = make_comparisons(project, 3)
    submit(assignment_next(project=project, labeler=bob, now=at(0)), bob)  # c1 has 1 of 2
    got = assignment_next(project=project, labeler=labeler, now=at(2))
    assert got.comparison_id == c2.pk  # 0 submitted, older than c3
    submit(got, labeler, now=at(3))
    assert assignment_next(project=project, labeler=labeler, now=at(4)).comparison_id == c3.pk


def test_open_leases_count_against_required(project, labeler, bob, carol, make_comparisons):
    (comparison,) = make_comparisons(project, 1)  # overlap 2
    assert (
        assignment_next(project=project, labeler=labeler, now=at(0)).comparison_id == comparison.pk
    )
    assert assignment_next(project=project, labeler=bob, now=at(1)).comparison_id == comparison.pk
    assert assignment_next(project=project, labeler=carol, now=at(2)) is None
    # An expired lease frees its slot without any housekeeping having run.
    taken = assignment_next(project=project, labeler=carol, now=at(600))
    assert taken.comparison_id == comparison.pk
    assert Assignment.objects.filter(status=Assignment.Status.EXPIRED).count() == 0


def test_next_returns_none_when_everything_is_complete(
    make_project, make_labeler, make_comparisons
):
    project = make_project("solo", num_candidates=3, overlap=1)
    user = make_labeler("solo", projects=[project])
    make_comparisons(project, 2)
    for i in range(2):
        submit(assignment_next(project=project, labeler=user, now=at(i)), user, now=at(i))
    assert assignment_next(project=project, labeler=user, now=at(5)) is None
    assert set(Comparison.objects.values_list("status", flat=True)) == {"complete"}


def test_non_members_are_refused_and_staff_may_label(
    project, make_labeler, staff_user, make_comparisons
):
    make_comparisons(project, 1)
    outsider = make_labeler("eve")
    with pytest.raises(NotAllowedError):
        assignment_next(project=project, labeler=outsider)
    assert Assignment.objects.count() == 0
    assert assignment_next(project=project, labeler=staff_user) is not None


def test_an_inactive_project_serves_nothing(project, labeler, make_comparisons):
    make_comparisons(project, 1)
    project.active = False
    project.save()
    assert assignment_next(project=project, labeler=labeler) is None


def test_one_labeler_holds_one_lease_per_project(project, labeler, make_project, make_comparisons):
    other = make_project("other", num_candidates=4, overlap=1)
    other.members.add(labeler)
    make_comparisons(project, 2)
    make_comparisons(other, 2, prefix="o")
    a = assignment_next(project=project, labeler=labeler, now=at(0))
    b = assignment_next(project=other, labeler=labeler, now=at(1))
    assert a.comparison.project_id == project.pk
    assert b.comparison.project_id == other.pk
    assert assignment_next(project=project, labeler=labeler, now=at(2)).pk == a.pk


# ---------------------------------------------------------------------------------------
# gold
# ---------------------------------------------------------------------------------------


def make_gold(comparisons):
    for c in comparisons:
        Comparison.objects.filter(pk=c.pk).update(
            is_gold=True, gold_ranking=[[cid] for cid in c.candidate_ids]
        )


def serve_all(project, user):
    served = []
    for i in range(100):
        assignment = assignment_next(project=project, labeler=user, now=at(i))
        if assignment is None:
            return served
        served.append(refresh(assignment.comparison).is_gold)
        submit(assignment, user, now=at(i))
    raise AssertionError("queue never ran dry")


def test_gold_is_served_at_the_gold_rate(make_project, make_labeler, make_comparisons):
    project = make_project("g", num_candidates=2, overlap=1, gold_rate=0.25)
    user = make_labeler("g", projects=[project])
    comparisons = make_comparisons(project, 10)
    make_gold(comparisons[:2])
    # Gold once one more keeps the share <= 25%: the 4th and the 8th comparison.
    assert serve_all(project, user) == [
        False,
        False,
        False,
        True,
        False,
        False,
        False,
        True,
        False,
        False,
    ]
    queue = LabelerQueue.objects.get(project=project, labeler=user)
    assert (queue.served, queue.served_gold) == (10, 2)


def test_gold_is_never_served_when_the_rate_is_zero(make_project, make_labeler, make_comparisons):
    project = make_project("g0", num_candidates=2, overlap=1)
    user = make_labeler("g0", projects=[project])
    comparisons = make_comparisons(project, 3)
    make_gold(comparisons[:1])
    assert serve_all(project, user) == [False, False]


def test_gold_fills_in_once_regular_work_runs_out(make_project, make_labeler, make_comparisons):
    project = make_project("g1", num_candidates=2, overlap=1, gold_rate=0.1)
    user = make_labeler("g1", projects=[project])
    comparisons = make_comparisons(project, 3)
    make_gold(comparisons[1:])
    assert serve_all(project, user) == [False, True, True]


def test_regular_work_is_served_when_gold_is_due_but_none_is_left(
    make_project, make_labeler, make_comparisons
):
    project = make_project("g2", num_candidates=2, overlap=1, gold_rate=1.0)
    user = make_labeler("g2", projects=[project])
    comparisons = make_comparisons(project, 3)
    make_gold(comparisons[:1])
    assert serve_all(project, user) == [True, False, False]


# ---------------------------------------------------------------------------------------
# submit
# ---------------------------------------------------------------------------------------


def test_submit_stores_the_annotation_and_counts_it(project, labeler, bob, make_comparisons):
    (comparison,) = make_comparisons(project, 1)
    a, b, c, d = comparison.candidate_ids
    assignment = assignment_next(project=project, labeler=labeler, now=at(0))
    token = uuid.uuid4()
    annotation, created = ranking_submit(
        assignment=assignment,
        labeler=labeler,
        ranking=[[c], [a, d], [b]],
        flags={a: ["harmful"], str(b): ["unhelpful", "untruthful"], str(c): []},
        rationale="  c is right  ",
        time_spent_ms=1234,
        client_token=token,
        now=at(10),
    )
    assert created is True
    annotation.refresh_from_db()
    assert annotation.ranking == [[c], [a, d], [b]]
    assert annotation.flags == {str(a): ["harmful"], str(b): ["unhelpful", "untruthful"]}
    assert annotation.ratings == {}
    assert annotation.rationale == "c is right"
    assert annotation.time_spent_ms == 1234
    assert annotation.client_token == token
    assert (annotation.comparison_id, annotation.labeler_id) == (comparison.pk, labeler.pk)
    assignment.refresh_from_db()
    assert assignment.status == Assignment.Status.SUBMITTED
    assert assignment.submitted_at == at(10)
    comparison.refresh_from_db()
    assert (comparison.submitted_count, comparison.status) == (1, "open")

    submit(assignment_next(project=project, labeler=bob, now=at(11)), bob, now=at(12))
    comparison.refresh_from_db()
    assert (comparison.submitted_count, comparison.status) == (2, "complete")
    assert comparison.completed_at == at(12)


def test_replaying_a_client_token_returns_the_first_annotation(project, labeler, make_comparisons):
    make_comparisons(project, 1)
    assignment = assignment_next(project=project, labeler=labeler, now=at(0))
    token = uuid.uuid4()
    first, created = submit(assignment, labeler, token=token)
    # Same token, another body (a retried request after an edit): the first one stands.
    again, created_again = submit(assignment, labeler, token=str(token), rationale="changed")
    assert (created, created_again) == (True, False)
    assert again.pk == first.pk
    assert Annotation.objects.count() == 1
    assert refresh(assignment.comparison).submitted_count == 1


def test_a_client_token_cannot_answer_two_assignments(project, labeler, make_comparisons):
    make_comparisons(project, 2)
    token = uuid.uuid4()
    submit(assignment_next(project=project, labeler=labeler, now=at(0)), labeler, token=token)
    second = assignment_next(project=project, labeler=labeler, now=at(2))
    with pytest.raises(ConflictError, match="already used for another assignment") as exc:
        submit(second, labeler, token=token, now=at(3))
    assert "client_token" in exc.value.errors
    assert refresh(second).status == Assignment.Status.LEASED
    assert refresh(second.comparison).submitted_count == 0  # the failed insert left nothing
    assert Annotation.objects.count() == 1


def test_submitting_an_assignment_deleted_meanwhile_is_a_conflict(
    project, labeler, make_comparisons
):
    make_comparisons(project, 1)
    assignment = assignment_next(project=project, labeler=labeler, now=at(0))
    Assignment.objects.filter(pk=assignment.pk).delete()  # an admin cleaned up, say
    with pytest.raises(ConflictError, match="no longer exists"):
        submit(assignment, labeler, now=at(1))
    assert Annotation.objects.count() == 0


def test_submit_on_someone_elses_assignment_is_refused(project, labeler, bob, make_comparisons):
    make_comparisons(project, 1)
    assignment = assignment_next(project=project, labeler=labeler, now=at(0))
    with pytest.raises(NotAllowedError):
        submit(assignment, bob)
    with pytest.raises(NotAllowedError):
        assignment_skip(assignment=assignment, labeler=bob)
    assert Annotation.objects.count() == 0


def test_a_labeler_removed_from_the_project_cannot_submit(project, labeler, make_comparisons):
    make_comparisons(project, 1)
    assignment = assignment_next(project=project, labeler=labeler, now=at(0))
    project.members.remove(labeler)
    with pytest.raises(NotAllowedError):
        submit(assignment, labeler)


@pytest.mark.parametrize(
    "leave",
    [
        lambda project, user, others: project.members.remove(user),
        lambda project, user, others: user.labeling_projects.remove(project),
        lambda project, user, others: project.members.set(others),  # the admin form's way
        lambda project, user, others: (project.members.clear(), project.members.add(*others)),
        lambda project, user, others: user.labeling_projects.clear(),
    ],
    ids=["remove", "remove-reverse", "set", "clear", "clear-reverse"],
)
def test_leaving_the_project_gives_the_leased_slot_back(
    project, labeler, bob, carol, make_comparisons, leave
):
    (comparison,) = make_comparisons(project, 1)  # overlap 2
    mine = assignment_next(project=project, labeler=labeler)
    assignment_next(project=project, labeler=bob)
    assert assignment_next(project=project, labeler=carol) is None  # both slots leased

    leave(project, labeler, [bob, carol])

    assert refresh(mine).status == Assignment.Status.EXPIRED
    assert assignment_next(project=project, labeler=carol).comparison_id == comparison.pk


def test_leaving_a_project_keeps_leases_elsewhere_and_staff_leases(
    project, make_project, labeler, staff_user, make_comparisons
):
    other = make_project("other", num_candidates=4, overlap=2)
    other.members.add(labeler)
    make_comparisons(project, 1)
    make_comparisons(other, 1)
    here = assignment_next(project=project, labeler=labeler)
    elsewhere = assignment_next(project=other, labeler=labeler)
    project.members.add(staff_user)
    staff_lease = assignment_next(project=project, labeler=staff_user)

    project.members.remove(labeler, staff_user)

    assert refresh(here).status == Assignment.Status.EXPIRED
    assert refresh(elsewhere).status == Assignment.Status.LEASED
    assert refresh(staff_lease).status == Assignment.Status.LEASED  # staff may label anywhere


def test_submit_reads_the_clock_once_it_holds_the_comparison_lock(
    project, labeler, make_comparisons, monkeypatch
):
    # A submit that waited on another labeler's transaction judges its lease and stamps
    # submitted_at by the time it got the lock, not the time it started waiting.
    import annotation.services.labeling as labeling

    make_comparisons(project, 1)
    assignment = assignment_next(project=project, labeler=labeler)
    locked_at = []

    def lock_then_note_the_time(*args):
        target = real_lock(*args)
        locked_at.append(timezone.now())
        return target

    real_lock = labeling.comparison_locked_for
    monkeypatch.setattr(labeling, "comparison_locked_for", lock_then_note_the_time)
    ranking_submit(
        assignment=assignment,
        labeler=labeler,
        ranking=strict(assignment),
        client_token=uuid.uuid4(),
    )
    assert refresh(assignment).submitted_at >= locked_at[0]


def test_a_labeler_removed_from_the_project_cannot_skip(project, labeler, make_comparisons):
    make_comparisons(project, 1)
    assignment = assignment_next(project=project, labeler=labeler, now=at(0))
    project.members.remove(labeler)
    with pytest.raises(NotAllowedError):
        assignment_skip(assignment=assignment, labeler=labeler)
    assert (
        refresh(assignment).status == Assignment.Status.EXPIRED
    )  # released on leaving, not skipped


def test_skipping_an_assignment_deleted_meanwhile_is_a_conflict(project, labeler, make_comparisons):
    make_comparisons(project, 1)
    assignment = assignment_next(project=project, labeler=labeler, now=at(0))
    Assignment.objects.filter(pk=assignment.pk).delete()
    with pytest.raises(ConflictError, match="no longer exists"):
        assignment_skip(assignment=assignment, labeler=labeler)
    assert not Assignment.objects.exists()


def test_an_invalid_submission_stores_nothing(project, labeler, make_comparisons):
    (comparison,) = make_comparisons(project, 1)
    a, b, c, d = comparison.candidate_ids
    assignment = assignment_next(project=project, labeler=labeler, now=at(0))
    with pytest.raises(ServiceValidationError) as exc:
        submit(assignment, labeler, ranking=[[a], [b], [c]])
    assert exc.value.errors == {"ranking": [f"Candidate {d} is missing from the ranking."]}
    with pytest.raises(ServiceValidationError) as exc:
        submit(assignment, labeler, token="not-a-uuid")
    assert "client_token" in exc.value.errors
    assert Annotation.objects.count() == 0
    assert refresh(assignment).status == Assignment.Status.LEASED
    assert refresh(comparison).submitted_count == 0


def test_ties_are_refused_where_the_project_does_not_allow_them(
    make_project, make_labeler, make_comparisons
):
    project = make_project("strict", num_candidates=3, overlap=1, allow_ties=False)
    user = make_labeler("s", projects=[project])
    (comparison,) = make_comparisons(project, 1)
    a, b, c = comparison.candidate_ids
    assignment = assignment_next(project=project, labeler=user, now=at(0))
    with pytest.raises(ServiceValidationError) as exc:
        submit(assignment, user, ranking=[[a, b], [c]])
    assert exc.value.errors["ranking"] == ["Tier 1 is a tie; this project does not allow ties."]
    # "All bad" as one tier of every candidate states no preference: accepted.
    annotation, _ = submit(assignment, user, ranking=[[a, b, c]], all_bad=True)
    assert annotation.all_bad is True


def test_pairwise_answers(make_project, make_labeler, make_comparisons):
    project = make_project("pw", task_type="pairwise", overlap=4, allow_ties=False)
    users = [make_labeler(f"pw{i}", projects=[project]) for i in range(4)]
    (comparison,) = make_comparisons(project, 1)
    a, b = comparison.candidate_ids
    answers = [([[a], [b]], False), ([[b], [a]], False), ([[a, b]], True), ([[b], [a]], True)]
    for user, (ranking, all_bad) in zip(users, answers):
        assignment = assignment_next(project=project, labeler=user, now=at(0))
        if ranking == [[a, b]]:
            with pytest.raises(ServiceValidationError):  # a plain tie: ties are off here
                submit(assignment, user, ranking=ranking)
        annotation, _ = submit(assignment, user, ranking=ranking, all_bad=all_bad)
        assert (annotation.ranking, annotation.all_bad) == (ranking, all_bad)
    assert refresh(comparison).status == "complete"


def test_ratings_are_stored_by_candidate(make_project, make_labeler, make_comparisons):
    project = make_project("rated", num_candidates=2, overlap=1, rating_scale=5)
    user = make_labeler("r", projects=[project])
    (comparison,) = make_comparisons(project, 1)
    a, b = comparison.candidate_ids
    assignment = assignment_next(project=project, labeler=user, now=at(0))
    with pytest.raises(ServiceValidationError) as exc:
        submit(assignment, user, ratings={a: 6})
    assert exc.value.errors == {
        "ratings": [f"Candidate {a}: rating must be an integer from 1 to 5."]
    }
    annotation, _ = submit(assignment, user, ratings={a: 5, str(b): 1})
    assert refresh(annotation).ratings == {str(a): 5, str(b): 1}


def test_a_late_submit_is_accepted_while_the_slot_is_free(project, labeler, make_comparisons):
    (comparison,) = make_comparisons(project, 1)
    assignment = assignment_next(project=project, labeler=labeler, now=at(0))
    annotation, created = submit(assignment, labeler, now=at(5000))
    assert created
    assert refresh(comparison).submitted_count == 1


def test_a_late_submit_after_housekeeping_is_accepted_while_the_slot_is_free(
    project, labeler, make_comparisons
):
    make_comparisons(project, 1)
    assignment = assignment_next(project=project, labeler=labeler, now=at(0))
    assert leases_expire(now=at(601)) == 1
    assert refresh(assignment).status == Assignment.Status.EXPIRED
    submit(assignment, labeler, now=at(700))
    assert refresh(assignment).status == Assignment.Status.SUBMITTED


def test_a_late_submit_is_refused_when_the_slot_was_taken(
    make_project, make_labeler, make_comparisons
):
    project = make_project("late", num_candidates=2, overlap=1)
    alice = make_labeler("late-a", projects=[project])
    bob = make_labeler("late-b", projects=[project])
    (comparison,) = make_comparisons(project, 1)
    mine = assignment_next(project=project, labeler=alice, now=at(0))
    assert assignment_next(project=project, labeler=bob, now=at(300)) is None
    theirs = assignment_next(project=project, labeler=bob, now=at(601))
    assert theirs.comparison_id == comparison.pk
    with pytest.raises(ConflictError):
        submit(mine, alice, now=at(602))
    assert Annotation.objects.count() == 0
    submit(theirs, bob, now=at(603))
    with pytest.raises(ConflictError):  # and once complete, too
        submit(mine, alice, now=at(604))
    assert Annotation.objects.count() == 1
    assert refresh(comparison).submitted_count == 1


def test_a_lapsed_lease_is_not_renewed_over_someone_who_took_the_slot(
    make_project, make_labeler, make_comparisons
):
    project = make_project("renew", num_candidates=2, overlap=1)
    alice = make_labeler("ra", projects=[project])
    bob = make_labeler("rb", projects=[project])
    make_comparisons(project, 1)
    mine = assignment_next(project=project, labeler=alice, now=at(0))
    assignment_next(project=project, labeler=bob, now=at(601))
    # Alice's clock says her lease still runs; the slot is bob's all the same.
    assert assignment_next(project=project, labeler=alice, now=at(599)) is None
    assert refresh(mine).status == Assignment.Status.EXPIRED


def test_renew_extends_a_running_lease_and_one_that_ran_out_with_its_slot_free(
    make_project, make_labeler, make_comparisons
):
    project = make_project("keep", num_candidates=2, overlap=1, lease_seconds=60)
    alice = make_labeler("ka", projects=[project])
    make_comparisons(project, 2)
    mine = assignment_next(project=project, labeler=alice, now=at(0))
    assert assignment_renew(assignment=mine, labeler=alice, now=at(30)).expires_at == at(90)
    # Ran out (and housekeeping marked it): back at work, the same comparison is hers again,
    # where `next` might have leased her the other one.
    leases_expire(now=at(200))
    assert refresh(mine).status == Assignment.Status.EXPIRED
    renewed = assignment_renew(assignment=mine, labeler=alice, now=at(201))
    assert (renewed.status, renewed.expires_at) == (Assignment.Status.LEASED, at(261))
    assert Assignment.objects.filter(labeler=alice).count() == 1
    submit(mine, alice, now=at(202))
    assert Annotation.objects.count() == 1


def test_renew_is_refused_when_the_slot_was_taken_or_the_work_is_closed(
    make_project, make_labeler, make_comparisons
):
    project = make_project("lost", num_candidates=2, overlap=1, lease_seconds=60)
    alice = make_labeler("la", projects=[project])
    bob = make_labeler("lb", projects=[project])
    make_comparisons(project, 1)
    mine = assignment_next(project=project, labeler=alice, now=at(0))
    theirs = assignment_next(project=project, labeler=bob, now=at(61))
    with pytest.raises(ConflictError, match="Somebody else took this comparison"):
        assignment_renew(assignment=mine, labeler=alice, now=at(62))
    with pytest.raises(NotAllowedError):
        assignment_renew(assignment=theirs, labeler=alice, now=at(62))
    submit(theirs, bob, now=at(63))
    with pytest.raises(ConflictError, match="submitted: there is no lease to renew"):
        assignment_renew(assignment=theirs, labeler=bob, now=at(64))
    assert refresh(theirs).expires_at == at(121)  # unchanged by the refusals


def test_renew_is_refused_once_the_labeler_moved_on_or_the_project_paused(
    make_project, make_labeler, make_comparisons
):
    project = make_project("moved", num_candidates=2, overlap=1, lease_seconds=60)
    alice = make_labeler("ma", projects=[project])
    make_comparisons(project, 2)
    first = assignment_next(project=project, labeler=alice, now=at(0))
    assignment_skip(assignment=first, labeler=alice)
    with pytest.raises(ConflictError, match="skipped"):
        assignment_renew(assignment=first, labeler=alice, now=at(1))
    second = assignment_next(project=project, labeler=alice, now=at(2))
    assert second.pk != first.pk
    project.active = False
    project.save(update_fields=["active"])
    with pytest.raises(ConflictError, match="paused"):
        assignment_renew(assignment=second, labeler=alice, now=at(3))


def test_renew_is_refused_while_another_lease_of_the_labeler_runs(
    make_project, make_labeler, make_comparisons
):
    # Two tabs: the lease of the first ran out and `next` in the second leased another
    # comparison; renewing the first now would hold two.
    project = make_project("tabs", num_candidates=2, overlap=1, lease_seconds=60)
    alice = make_labeler("ta", projects=[project])
    make_comparisons(project, 2)
    first = assignment_next(project=project, labeler=alice, now=at(0))
    # Served last from now on, so the second tab's `next` leases the other comparison.
    Comparison.objects.filter(pk=first.comparison_id).update(priority=-1)
    second = assignment_next(project=project, labeler=alice, now=at(70))
    assert second.comparison_id != first.comparison_id
    with pytest.raises(ConflictError, match="another comparison"):
        assignment_renew(assignment=first, labeler=alice, now=at(71))
    assert assignment_renew(assignment=second, labeler=alice, now=at(72)).expires_at == at(132)


def test_two_open_leases_on_one_slot_still_give_one_annotation(
    make_project, make_labeler, make_comparisons
):
    # Cannot happen through assignment_next; forced here to show submit re-checks the count.
    project = make_project("double", num_candidates=2, overlap=1)
    alice = make_labeler("da", projects=[project])
    bob = make_labeler("db", projects=[project])
    (comparison,) = make_comparisons(project, 1)
    mine = assignment_next(project=project, labeler=alice, now=at(0))
    theirs = Assignment.objects.create(
        comparison=comparison,
        labeler=bob,
        display_order=comparison.candidate_ids,
        leased_at=at(0),
        expires_at=at(600),
    )
    submit(mine, alice, now=at(1))
    with pytest.raises(ConflictError):
        submit(theirs, bob, now=at(2))
    assert refresh(comparison).submitted_count == 1
    assert Annotation.objects.count() == 1


def test_a_second_submit_is_a_correction_that_supersedes(project, labeler, make_comparisons):
    (comparison,) = make_comparisons(project, 1)
    a, b, c, d = comparison.candidate_ids
    assignment = assignment_next(project=project, labeler=labeler, now=at(0))
    first, _ = submit(assignment, labeler, ranking=[[a], [b], [c], [d]])
    second, created = submit(assignment, labeler, ranking=[[d], [c], [b], [a]], now=at(2000))
    third, _ = submit(assignment, labeler, ranking=[[a, b, c, d]], now=at(2001))
    assert created
    assert second.supersedes_id == first.pk
    assert third.supersedes_id == second.pk
    assert refresh(comparison).submitted_count == 1
    assert list(Annotation.objects.filter(superseded_by__isnull=True)) == [third]


def test_corrections_are_capped_per_assignment(project, labeler, make_comparisons, settings):
    # 300 corrections of one assignment were accepted; past CORRECTIONS_MAX they are a 409.
    settings.CORRECTIONS_MAX = 3
    (comparison,) = make_comparisons(project, 1)
    ids = list(comparison.candidate_ids)
    assignment = assignment_next(project=project, labeler=labeler, now=at(0))
    submit(assignment, labeler, ranking=[[i] for i in ids])
    for n in range(3):
        submit(assignment, labeler, ranking=[[i] for i in ids[n:] + ids[:n]], now=at(10 + n))
    with pytest.raises(ConflictError, match=r"already has 3 corrections.*CORRECTIONS_MAX = 3"):
        submit(assignment, labeler, ranking=[[i] for i in reversed(ids)], now=at(20))
    assert Annotation.objects.count() == 4
    assert refresh(comparison).submitted_count == 1


def test_an_inactive_project_refuses_submits_on_earlier_leases(project, labeler, make_comparisons):
    first, second = make_comparisons(project, 2)
    leased = assignment_next(project=project, labeler=labeler, now=at(0))
    token = uuid.uuid4()
    stored, _ = submit(leased, labeler, now=at(1), token=token)
    again = assignment_next(project=project, labeler=labeler, now=at(2))
    project.active = False
    project.save()
    with pytest.raises(ConflictError, match="'demo' is not active"):
        submit(again, labeler, now=at(3))  # a lease taken before the project was paused
    with pytest.raises(ConflictError, match="not active"):
        submit(leased, labeler, ranking=list(reversed(strict(leased))), now=at(4))  # correction
    assert submit(leased, labeler, now=at(5), token=token) == (stored, False)  # a replay
    assert assignment_next(project=project, labeler=labeler, now=at(6)) is None
    assert Annotation.objects.count() == 1
    assert refresh(again).status == Assignment.Status.LEASED


def test_a_skipped_assignment_cannot_be_submitted(project, labeler, make_comparisons):
    make_comparisons(project, 1)
    assignment = assignment_next(project=project, labeler=labeler, now=at(0))
    assignment_skip(assignment=assignment, labeler=labeler, now=at(1))
    with pytest.raises(ConflictError):
        submit(assignment, labeler, now=at(2))
    assert Annotation.objects.count() == 0


# ---------------------------------------------------------------------------------------
# skip and housekeeping
# ---------------------------------------------------------------------------------------


def test_skip_frees_the_slot_and_is_never_served_again(
    make_project, make_labeler, make_comparisons
):
    project = make_project("skip", num_candidates=2, overlap=1)
    alice = make_labeler("sa", projects=[project])
    bob = make_labeler("sb", projects=[project])
    c1, c2 = make_comparisons(project, 2)
    mine = assignment_next(project=project, labeler=alice, now=at(0))
    assert mine.comparison_id == c1.pk
    skipped = assignment_skip(assignment=mine, labeler=alice, now=at(1))
    assert skipped.status == Assignment.Status.SKIPPED
    assert assignment_skip(assignment=mine, labeler=alice).status == "skipped"  # idempotent
    nxt = assignment_next(project=project, labeler=alice, now=at(2))
    assert nxt.comparison_id == c2.pk
    submit(nxt, alice, now=at(3))
    assert assignment_next(project=project, labeler=alice, now=at(4)) is None  # c1 still open
    assert assignment_next(project=project, labeler=bob, now=at(5)).comparison_id == c1.pk


def test_a_submitted_assignment_cannot_be_skipped(project, labeler, make_comparisons):
    make_comparisons(project, 1)
    assignment = assignment_next(project=project, labeler=labeler, now=at(0))
    submit(assignment, labeler)
    with pytest.raises(ConflictError):
        assignment_skip(assignment=assignment, labeler=labeler)
    assert refresh(assignment).status == Assignment.Status.SUBMITTED


def test_leases_expire_marks_only_lapsed_leases(project, labeler, bob, carol, make_comparisons):
    make_comparisons(project, 3)
    done = assignment_next(project=project, labeler=labeler, now=at(0))
    submit(done, labeler, now=at(1))
    old = assignment_next(project=project, labeler=bob, now=at(0))
    fresh = assignment_next(project=project, labeler=carol, now=at(500))
    assert leases_expire(now=at(600)) == 1
    assert [refresh(a).status for a in (done, old, fresh)] == ["submitted", "expired", "leased"]
    assert leases_expire(now=at(600)) == 0


def test_one_assignment_per_comparison_and_labeler_is_a_constraint(
    project, labeler, make_comparisons
):
    make_comparisons(project, 1)
    a = assignment_next(project=project, labeler=labeler, now=at(0))
    with pytest.raises(IntegrityError), transaction.atomic():
        Assignment.objects.create(
            comparison_id=a.comparison_id,
            labeler=labeler,
            display_order=a.display_order,
            leased_at=at(0),
            expires_at=at(1),
        )


# ---------------------------------------------------------------------------------------
# the hot path stays on indexes
# ---------------------------------------------------------------------------------------


def test_next_and_submit_take_a_bounded_number_of_queries(project, labeler, make_comparisons):
    make_comparisons(project, 20)
    # The first call creates the labeler's queue row; measure the steady state.
    submit(assignment_next(project=project, labeler=labeler, now=at(0)), labeler, now=at(0))
    with CaptureQueriesContext(connection) as queries:
        assignment = assignment_next(project=project, labeler=labeler, now=at(1))
        submit(assignment, labeler, now=at(2))
    # About 20 statements on PostgreSQL with savepoints (fewer on SQLite), whatever the
    # size of the project: no per-comparison or per-annotation queries.
    assert len(queries) <= 20, [q["sql"] for q in queries]


def test_the_queue_query_walks_the_queue_index_in_order(project, labeler, make_comparisons):
    make_comparisons(project, 5)
    sql, params = queue_head_sql(project=project, labeler=labeler, gold=False, now=at(0))
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # A 5-row table would be scanned sequentially; ask what the plan is at scale.
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute(f"EXPLAIN {sql}", params)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            assert "comparison_queue_idx" in plan
            assert "Sort" not in plan, plan
        else:
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
            plan = "\n".join(row[-1] for row in cursor.fetchall())
            assert (
                "USING INDEX comparison_queue_idx (project_id=? AND status=? AND is_gold=?)" in plan
            )
            assert "TEMP B-TREE" not in plan, plan  # ordered by the index, not sorted
            assert "SCAN" not in plan, plan


def test_a_queue_head_read_before_a_late_submit_does_not_lease_that_row_again(
    make_project, make_labeler, make_comparisons, monkeypatch
):
    # On PostgreSQL the queue is read before the comparison's lock is granted (see the
    # step-by-step version in test_labeling_concurrency.py); a late submit of the lease it
    # names as the row to reuse can commit in between. Here the stale read is replayed.
    from annotation.selectors.queue import queue_head
    from annotation.services import labeling

    project = make_project("stale", num_candidates=2, overlap=2, lease_seconds=60)
    user = make_labeler("stale", projects=[project])
    make_comparisons(project, 1)
    lapsed = assignment_next(project=project, labeler=user, now=at(0))
    stale = queue_head(project=project, labeler=user, gold=False, now=at(120))
    assert stale.prior_assignment_id == lapsed.pk
    ranking_submit(
        assignment=lapsed,
        labeler=user,
        ranking=[[c] for c in lapsed.display_order],
        client_token=uuid.uuid4(),
        now=at(120),
    )
    monkeypatch.setattr(labeling, "queue_head", lambda **kwargs: stale)
    assert assignment_next(project=project, labeler=user, now=at(121)) is None
    assert Assignment.objects.get(pk=lapsed.pk).status == "submitted"
    assert Annotation.objects.filter(labeler=user).count() == 1
