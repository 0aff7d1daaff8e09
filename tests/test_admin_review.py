"""The admin as a review tool: texts not ids, gold, reject/restore, filters, read-only invariants."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from annotation.models import Annotation, Assignment, Candidate, Comparison, Prompt
from annotation.services.labeling import assignment_next, ranking_submit

pytestmark = pytest.mark.django_db


@pytest.fixture
def root(client, db):
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-root-123")
    client.force_login(user)
    return user


@pytest.fixture
def world(make_project, make_labeler, make_comparisons):
    project = make_project("team", num_candidates=3, overlap=2, allow_ties=False)
    ann, ben = (make_labeler(n, projects=[project]) for n in ("ann", "ben"))
    comparisons = make_comparisons(project, 2, texts=["Paris.", "Lyon?", "No idea"])
    return project, ann, ben, comparisons


def label(project, user, *, flags=None, ms=4000):
    assignment = assignment_next(project=project, labeler=user)
    annotation, _ = ranking_submit(
        assignment=assignment,
        labeler=user,
        ranking=[[c] for c in assignment.display_order],
        flags=flags,
        time_spent_ms=ms,
        client_token=uuid.uuid4(),
    )
    return annotation


# -- read-only invariants ----------------------------------------------------------------


def test_comparison_change_form_cannot_alter_counts_status_or_candidates(client, root, world):
    project, ann, _, (comparison, other) = world
    label(project, ann)
    before = Comparison.objects.get(pk=comparison.pk)
    url = reverse("admin:annotation_comparison_change", args=[comparison.pk])
    response = client.post(
        url,
        {
            "project": project.pk,
            "prompt": other.prompt_id,
            "submitted_count": 0,
            "required": 9,
            "status": "complete",
            "candidate_ids": "[99999, 1]",
            "candidates": list(other.candidates.values_list("pk", flat=True)),
            "is_gold": "on",
            "gold_ranking": "[[99999], [1]]",
        },
    )
    assert response.status_code in (200, 302)
    after = Comparison.objects.get(pk=comparison.pk)
    for name in (
        "prompt_id",
        "submitted_count",
        "required",
        "status",
        "candidate_ids",
        "is_gold",
        "gold_ranking",
    ):
        assert getattr(after, name) == getattr(before, name), name
    assert sorted(after.candidates.values_list("pk", flat=True)) == sorted(before.candidate_ids)
    assert client.get(reverse("admin:annotation_comparison_add")).status_code == 403


def test_assignment_candidate_and_prompt_change_forms_are_read_only(client, root, world):
    project, ann, _, (comparison, _) = world
    annotation = label(project, ann)
    assignment = annotation.assignment
    client.post(
        reverse("admin:annotation_assignment_change", args=[assignment.pk]),
        {
            "status": "leased",
            "expires_at_0": "2030-01-01",
            "expires_at_1": "00:00:00",
            "labeler": root.pk,
        },
    )
    fresh = Assignment.objects.get(pk=assignment.pk)
    assert (fresh.status, fresh.expires_at, fresh.labeler_id) == (
        assignment.status,
        assignment.expires_at,
        assignment.labeler_id,
    )
    candidate = Candidate.objects.get(pk=comparison.candidate_ids[0])
    client.post(
        reverse("admin:annotation_candidate_change", args=[candidate.pk]),
        {"text": "rewritten", "prompt": candidate.prompt_id, "model_name": "someone-else"},
    )
    fresh_candidate = Candidate.objects.get(pk=candidate.pk)
    assert (fresh_candidate.text, fresh_candidate.model_name) == (
        candidate.text,
        candidate.model_name,
    )
    prompt = comparison.prompt
    client.post(
        reverse("admin:annotation_prompt_change", args=[prompt.pk]),
        {"messages": '[{"role": "user", "content": "changed"}]', "metadata": "{}", "source": "x"},
    )
    fresh_prompt = Prompt.objects.get(pk=prompt.pk)
    assert fresh_prompt.messages == prompt.messages
    assert fresh_prompt.content_hash == prompt.content_hash
    for name in ("assignment", "candidate", "prompt"):
        assert client.get(reverse(f"admin:annotation_{name}_add")).status_code == 403


# -- texts, not ids ------------------------------------------------------------------------


def test_annotation_pages_show_prompt_and_ranked_texts(client, root, world):
    project, ann, _, _ = world
    annotation = label(project, ann)
    listing = client.get(reverse("admin:annotation_annotation_changelist")).content.decode()
    assert "Question p" in listing and " &gt; " in listing and "Paris." in listing
    page = client.get(
        reverse("admin:annotation_annotation_change", args=[annotation.pk])
    ).content.decode()
    assert annotation.comparison.prompt.text in page
    first = Candidate.objects.get(pk=annotation.ranking[0][0])
    assert "#1" in page and first.text in page
    assert str(annotation.ranking) not in page


def test_comparison_page_shows_candidates_and_annotations_side_by_side(client, root, world):
    project, ann, ben, _ = world
    annotation = label(project, ann)
    label(project, ben)  # the other comparison (fewest annotations first), then this one
    label(project, ben)
    page = client.get(
        reverse("admin:annotation_comparison_change", args=[annotation.comparison_id])
    ).content.decode()
    assert "review-side-by-side" in page
    for text in ("Paris.", "Lyon?", "No idea", ">ann<", ">ben<"):
        assert text in page


def test_candidate_text_is_escaped(client, root, make_project, make_labeler, make_comparisons):
    project = make_project("xss", num_candidates=2, overlap=1)
    (comparison,) = make_comparisons(project, 1, texts=["<script>alert(1)</script>", "fine"])
    page = client.get(
        reverse("admin:annotation_comparison_change", args=[comparison.pk])
    ).content.decode()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page


# -- gold ----------------------------------------------------------------------------------


def test_gold_page_saves_a_validated_ranking(client, root, world):
    _, _, _, (comparison, _) = world
    url = reverse("admin:annotation_comparison_gold", args=[comparison.pk])
    page = client.get(url).content.decode()
    assert "Paris." in page and "Save as gold" in page
    a, b, c = comparison.candidate_ids
    response = client.post(url, {f"rank-{a}": 2, f"rank-{b}": 1, f"rank-{c}": 3, "save": "1"})
    assert response.status_code == 302
    comparison.refresh_from_db()
    assert comparison.is_gold and comparison.gold_ranking == [[b], [a], [c]]
    # A tie where the project allows none is refused with the service's message.
    response = client.post(url, {f"rank-{a}": 1, f"rank-{b}": 1, f"rank-{c}": 2, "save": "1"})
    assert response.status_code == 400
    assert "does not allow ties" in response.content.decode()
    comparison.refresh_from_db()
    assert comparison.gold_ranking == [[b], [a], [c]]
    response = client.post(url, {f"rank-{a}": "x", "save": "1"})
    assert response.status_code == 400
    client.post(url, {"clear": "1"})
    comparison.refresh_from_db()
    assert not comparison.is_gold and comparison.gold_ranking is None


def test_review_pages_refuse_labelers(client, world):
    project, ann, _, (comparison, _) = world
    annotation = label(project, ann)
    client.force_login(ann)
    for url in (
        reverse("admin:annotation_comparison_gold", args=[comparison.pk]),
        reverse("admin:annotation_annotation_reject", args=[annotation.pk]),
        reverse("admin:annotation_annotation_reject_since"),
    ):
        response = client.get(url)
        assert response.status_code == 302 and "/login/" in response["Location"]


# -- reject and restore ---------------------------------------------------------------------


def test_reject_action_asks_for_a_reason_then_rejects(client, root, world):
    project, ann, ben, _ = world
    mine = [label(project, ann), label(project, ann)]
    changelist = reverse("admin:annotation_annotation_changelist")
    ids = [a.pk for a in mine]
    form = client.post(changelist, {"action": "reject_selected", "_selected_action": ids})
    assert form.status_code == 200 and 'name="reason"' in form.content.decode()
    assert not Annotation.objects.filter(rejected_at__isnull=False).exists()
    done = client.post(
        changelist,
        {"action": "reject_selected", "_selected_action": ids, "apply": "1", "reason": "bot-like"},
        follow=True,
    )
    assert "Rejected 2 annotations" in done.content.decode()
    assert Annotation.objects.filter(rejected_at__isnull=False).count() == 2
    assert set(Comparison.objects.values_list("submitted_count", flat=True)) == {0}
    restore = client.post(
        changelist, {"action": "restore_selected", "_selected_action": ids}, follow=True
    )
    assert "Restored 2 annotations" in restore.content.decode()
    assert not Annotation.objects.filter(rejected_at__isnull=False).exists()


def test_reject_and_restore_one_annotation(client, root, world):
    project, ann, _, _ = world
    annotation = label(project, ann)
    url = reverse("admin:annotation_annotation_reject", args=[annotation.pk])
    assert client.post(url, {"reason": ""}).status_code == 200  # form error, nothing done
    assert Annotation.objects.get(pk=annotation.pk).rejected_at is None
    client.post(url, {"reason": "copied answers"})
    annotation.refresh_from_db()
    assert annotation.rejection_reason == "copied answers" and annotation.rejected_by == root
    page = client.get(reverse("admin:annotation_annotation_change", args=[annotation.pk]))
    assert "copied answers" in page.content.decode()
    client.post(reverse("admin:annotation_annotation_restore", args=[annotation.pk]))
    annotation.refresh_from_db()
    assert annotation.rejected_at is None


def test_reject_a_labelers_work_since_a_date(client, root, world):
    project, ann, ben, _ = world
    old = label(project, ann)
    Annotation.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=5))
    recent = label(project, ann)
    kept = label(project, ben)
    url = reverse("admin:annotation_annotation_reject_since")
    since = (timezone.now() - timedelta(days=1)).strftime("%Y-%m-%d %H:%M")
    body = {"project": project.pk, "labeler": ann.pk, "since": since, "reason": "bad week"}
    preview = client.post(url, body)
    assert "1 annotation will be rejected" in preview.content.decode()
    assert not Annotation.objects.filter(rejected_at__isnull=False).exists()
    client.post(url, {**body, "confirm": "1"})
    rejected = set(
        Annotation.objects.filter(rejected_at__isnull=False).values_list("pk", flat=True)
    )
    assert rejected == {recent.pk}
    assert kept.pk not in rejected and old.pk not in rejected
    assert (
        "Reject a labeler"
        in client.get(reverse("admin:annotation_annotation_changelist")).content.decode()
    )


def test_reject_since_needs_the_review_permission_to_confirm(client, world):
    # The page refused a GET, but a confirming POST rejected the work all the same.
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    project, ann, _, _ = world
    recent = label(project, ann)
    viewer = get_user_model().objects.create_user("viewer", password="pw-view-123", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__startswith="view_"))
    client.force_login(viewer)
    since = (timezone.now() - timedelta(days=1)).strftime("%Y-%m-%d %H:%M")
    body = {"project": project.pk, "labeler": ann.pk, "since": since, "reason": "x"}
    url = reverse("admin:annotation_annotation_reject_since")
    assert client.post(url, {**body, "confirm": "1"}).status_code == 403
    assert not Annotation.objects.get(pk=recent.pk).rejected_at


# -- filters ---------------------------------------------------------------------------------


def listed(client, query: str) -> set[int]:
    response = client.get(reverse("admin:annotation_annotation_changelist") + query)
    assert response.status_code == 200
    return {row.pk for row in response.context["cl"].result_list}


def test_annotation_filters(client, root, world, make_project, make_labeler, make_comparisons):
    project, ann, ben, (first, _) = world
    flagged = label(project, ann, flags={str(first.candidate_ids[0]): ["harmful"]}, ms=1500)
    slow = label(project, ann, ms=40000)
    other = label(project, ben, ms=8000)
    elsewhere = make_project("else", num_candidates=2, overlap=1)
    cat = make_labeler("cat", projects=[elsewhere])
    make_comparisons(elsewhere, 1, prefix="e")
    foreign = label(elsewhere, cat)
    assert listed(client, "?flagged=yes") == {flagged.pk}
    assert listed(client, "?flagged=no") == {slow.pk, other.pk, foreign.pk}
    assert listed(client, "?faster_than=2") == {flagged.pk}
    assert listed(client, "?faster_than=10") == {flagged.pk, other.pk, foreign.pk}
    assert listed(client, f"?labeler__id__exact={ben.pk}") == {other.pk}
    assert listed(client, f"?comparison__project__id__exact={elsewhere.pk}") == {foreign.pk}
    client.post(reverse("admin:annotation_annotation_reject", args=[slow.pk]), {"reason": "x"})
    assert listed(client, "?rejected=yes") == {slow.pk}


def test_export_list_shows_a_short_sha256(client, root, world, tmp_path, settings):
    from annotation.services.exports import ExportOptions, export_create

    settings.DATA_DIR = tmp_path
    project, ann, _, _ = world
    label(project, ann)
    export = export_create(project=project, options=ExportOptions())
    page = client.get(reverse("admin:annotation_export_changelist")).content.decode()
    assert export.sha256[:12] + "…" in page
    assert f">{export.sha256}<" not in page


def test_disagreeing_with_consensus_filter(
    client, root, make_project, make_labeler, make_comparisons
):
    project = make_project("cons", num_candidates=3, overlap=3)
    users = [make_labeler(n, projects=[project]) for n in ("x", "y", "z")]
    (comparison,) = make_comparisons(project, 1)
    order = list(comparison.candidate_ids)
    made = []
    for user, ranking in zip(users, [order, order, order[::-1]], strict=True):
        assignment = assignment_next(project=project, labeler=user)
        annotation, _ = ranking_submit(
            assignment=assignment,
            labeler=user,
            ranking=[[c] for c in ranking],
            client_token=uuid.uuid4(),
        )
        made.append(annotation)
    assert listed(client, "?disagrees=yes") == {made[2].pk}
    assert listed(client, f"?disagrees=yes&comparison__project__id__exact={project.pk}") == {
        made[2].pk
    }


def test_statistics_page_shows_gold_accuracy_per_labeler(client, root, world):
    from annotation.services.gold import comparison_gold_set

    project, ann, _, comparisons = world
    for comparison in comparisons:
        comparison_gold_set(comparison=comparison, ranking=[[c] for c in comparison.candidate_ids])
    project.gold_rate = 1.0
    project.save()
    assignment = assignment_next(project=project, labeler=ann)
    ids = Comparison.objects.get(pk=assignment.comparison_id).candidate_ids
    ranking_submit(
        assignment=assignment,
        labeler=ann,
        ranking=[[c] for c in reversed(ids)],
        client_token=uuid.uuid4(),
    )
    page = client.get(reverse("admin:annotation_project_stats", args=[project.pk])).content.decode()
    assert "Gold accuracy" in page
    assert '<td class="num weak" title="below the threshold">0.000 (1 gold)</td>' in page


def test_gold_actions_on_the_comparison_list(client, root, world):
    from annotation.services.gold import comparison_gold_set

    _, _, _, (first, second) = world
    changelist = reverse("admin:annotation_comparison_changelist")
    response = client.post(changelist, {"action": "save_as_gold", "_selected_action": [first.pk]})
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:annotation_comparison_gold", args=[first.pk])
    response = client.post(
        changelist,
        {"action": "save_as_gold", "_selected_action": [first.pk, second.pk]},
        follow=True,
    )
    assert "Select exactly one" in response.content.decode()
    comparison_gold_set(comparison=first, ranking=[[c] for c in first.candidate_ids])
    client.post(changelist, {"action": "remove_gold", "_selected_action": [first.pk, second.pk]})
    assert not Comparison.objects.filter(is_gold=True).exists()


def test_export_action_says_1_pair(
    client, root, make_project, make_labeler, make_comparisons, tmp_path, settings
):
    settings.DATA_DIR = tmp_path
    project = make_project("one", num_candidates=2, overlap=1)
    ann = make_labeler("ann", projects=[project])
    make_comparisons(project, 1)
    label(project, ann)
    response = client.post(
        reverse("admin:annotation_project_changelist"),
        {"action": "export_preferences", "_selected_action": [project.pk]},
        follow=True,
    )
    page = response.content.decode()
    assert ": 1 pair." in page and "1 pairs" not in page
