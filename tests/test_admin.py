"""Admin pages render for staff and are refused to labelers."""

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

pytestmark = pytest.mark.django_db

MODELS = [
    "annotation_project",
    "annotation_prompt",
    "annotation_candidate",
    "annotation_comparison",
    "annotation_assignment",
    "annotation_annotation",
    "annotation_export",
    "lineage_modelversion",
    "lineage_trainingrun",
]


@pytest.fixture
def superuser(db):
    return get_user_model().objects.create_superuser("root", "root@example.com", "pw-root-123")


@pytest.mark.parametrize("name", MODELS)
def test_changelists_render_for_staff(client, superuser, project, make_comparisons, name):
    make_comparisons(project, n=2)
    client.force_login(superuser)
    response = client.get(reverse(f"admin:{name}_changelist"))
    assert response.status_code == 200


def test_project_page_shows_progress(client, superuser, project, make_comparisons):
    make_comparisons(project, n=3)
    client.force_login(superuser)
    listing = client.get(reverse("admin:annotation_project_changelist")).content.decode()
    assert "0 / 3" in listing
    page = client.get(
        reverse("admin:annotation_project_change", args=[project.pk])
    ).content.decode()
    assert "3 prompts, 12 candidates, 3 comparisons (0 complete), 0 annotations" in page


def test_pipeline_commands_action(client, superuser, project):
    client.force_login(superuser)
    response = client.post(
        reverse("admin:annotation_project_changelist"),
        {"action": "show_pipeline_commands", "_selected_action": [project.pk]},
        follow=True,
    )
    assert "python manage.py build_comparisons demo" in response.content.decode()


def test_annotations_are_read_only(client, superuser):
    client.force_login(superuser)
    assert client.get(reverse("admin:annotation_annotation_add")).status_code == 403


def test_labelers_are_refused(client, labeler):
    client.force_login(labeler)
    response = client.get(reverse("admin:annotation_project_changelist"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_stats_page_and_export_action(
    client, superuser, project, make_comparisons, settings, tmp_path
):
    from annotation.models import Export

    settings.DATA_DIR = tmp_path
    make_comparisons(project, n=2)
    client.force_login(superuser)
    page = client.get(reverse("admin:annotation_project_stats", args=[project.pk]))
    assert page.status_code == 200 and "Agreement" in page.content.decode()
    response = client.post(
        reverse("admin:annotation_project_changelist"),
        {"action": "export_preferences", "_selected_action": [project.pk]},
        follow=True,
    )
    export = Export.objects.get(project=project)
    page = response.content.decode()
    assert f"Export {export.pk} of demo: 0 pairs." in page and str(export.path) not in page
    assert reverse("api:export-download", kwargs={"export_id": export.pk}) in page
    assert export.created_by == superuser


def test_annotations_per_day_reach_back_to_since_but_not_before_the_project(
    project, make_labeler, make_comparisons
):
    import uuid
    from datetime import date, timedelta

    from django.utils import timezone

    from annotation.models import Project
    from annotation.selectors.stats import annotations_per_day
    from annotation.services.labeling import assignment_next, ranking_submit

    make_comparisons(project, n=1)
    alice = make_labeler("alice", projects=[project])
    assignment = assignment_next(project=project, labeler=alice)
    ranking_submit(
        assignment=assignment,
        labeler=alice,
        ranking=[[c] for c in assignment.display_order],
        client_token=uuid.uuid4(),
    )
    today = timezone.localdate()
    Project.objects.filter(pk=project.pk).update(created_at=timezone.now() - timedelta(days=3))
    project.refresh_from_db()
    # A week back asked for, the project is 3 days old: 3 empty days, then today's one.
    days = annotations_per_day(project, since=today - timedelta(days=7))
    assert days == [(today - timedelta(days=n), 0) for n in (3, 2, 1)] + [(today, 1)]
    # Year 1 used to pad 739,000 days into the admin's chart (120 MB of HTML).
    assert annotations_per_day(project, since=date(1, 1, 1)) == days
    assert annotations_per_day(project, since=today) == [(today, 1)]


def test_stats_page_refused_to_labelers(client, labeler, project):
    client.force_login(labeler)
    response = client.get(reverse("admin:annotation_project_stats", args=[project.pk]))
    assert response.status_code == 302


def test_api_tokens_show_by_prefix_and_can_be_revoked(client, superuser, labeler):
    from annotation.models import ApiToken
    from annotation.services.tokens import api_token_issue

    key = api_token_issue(labeler)
    token = ApiToken.objects.get(digest=ApiToken.digest_of(key))
    client.force_login(superuser)
    listing = client.get(reverse("admin:annotation_apitoken_changelist")).content.decode()
    assert token.prefix in listing and key not in listing and token.digest not in listing
    assert client.get(reverse("admin:annotation_apitoken_add")).status_code == 403
    page = client.get(reverse("admin:annotation_apitoken_change", args=[token.pk]))
    assert key not in page.content.decode() and token.digest not in page.content.decode()
    response = client.post(
        reverse("admin:annotation_apitoken_changelist"),
        {"action": "delete_selected", "_selected_action": [token.pk], "post": "yes"},
    )
    assert response.status_code == 302
    assert not ApiToken.objects.filter(pk=token.pk).exists()
    # DRF's clear-text token admin is gone.
    assert b"authtoken" not in client.get(reverse("admin:index")).content


def test_stats_page_labels_figures_links_labelers_and_colours_the_weak(
    client, superuser, project, make_labeler, make_comparisons, settings
):
    import uuid
    from datetime import timedelta

    from django.utils import timezone

    from annotation.models import Annotation
    from annotation.services.labeling import assignment_next, ranking_submit

    settings.LABELER_THRESHOLDS = {
        "gold_accuracy": 0.7,
        "agreement_with_consensus": 0.6,
        "median_seconds": 5,
    }
    make_comparisons(project, n=2)
    fast, careful = (make_labeler(n, projects=[project]) for n in ("fast", "careful"))
    for user, ms in ((fast, 800), (careful, 30_000)):
        assignment = assignment_next(project=project, labeler=user)
        ranking_submit(
            assignment=assignment,
            labeler=user,
            ranking=[[c] for c in assignment.display_order],
            time_spent_ms=ms,
            client_token=uuid.uuid4(),
        )
    old = Annotation.objects.get(labeler=careful)
    Annotation.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=2))
    client.force_login(superuser)
    url = reverse("admin:annotation_project_stats", args=[project.pk])
    page = client.get(url).content.decode()
    # Human labels with an explanation, integer counts.
    assert '<th scope="row">Comparisons</th><td class="num">2</td>' in page
    assert "Units of labeling work" in page and "comparisons_shared" not in page
    assert "2.000" not in page.split('id="progress"')[1].split("</table>")[0]
    # Per-labeler links to their annotations; the 0.8 s median is weak, 30 s is not.
    link = reverse("admin:annotation_annotation_changelist")
    assert (
        f'href="{link}?labeler__id__exact={fast.pk}&amp;comparison__project__id__exact={project.pk}"'
        in page
    )
    assert '<td class="num weak" title="below the threshold">0.8</td>' in page
    assert '<td class="num">30.0</td>' in page
    # A trend with a bar per day (3 days: two ago, yesterday with none, today).
    assert page.count("<rect") == 3 and "annotations per day" in page.lower()
    assert "Models" in page and "m0" in page and "m1" in page
    # The date filter: today only leaves the careful labeler's older annotation out.
    today = timezone.localdate().isoformat()
    filtered = client.get(url, {"since": today}).content.decode()
    assert ">fast</a>" in filtered and ">careful</a>" not in filtered
    assert page.count("<rect") == 3 and filtered.count("<rect") == 1
    bad = client.get(url, {"since": "2030-01-02", "until": "2030-01-01"}).content.decode()
    assert "The end date is before the start date." in bad


def test_a_superuser_deletes_a_project_with_candidates_but_not_one_with_annotations(
    client, superuser, make_project, make_comparisons, make_labeler
):
    import uuid

    from annotation.models import Candidate, Comparison, Project, Prompt
    from annotation.services.labeling import assignment_next, ranking_submit

    scratch = make_project("scratch", num_candidates=2, overlap=1)
    make_comparisons(scratch, n=2)
    client.force_login(superuser)
    url = reverse("admin:annotation_project_delete", args=[scratch.pk])
    page = client.get(url).content.decode()
    assert "doesn’t have permission to delete" not in page
    assert "4 candidates" in page or "Candidates: 4" in page
    assert client.post(url, {"post": "yes"}).status_code == 302
    assert not Project.objects.filter(slug="scratch").exists()
    assert not Candidate.objects.filter(prompt__project__slug="scratch").exists()

    # A prompt goes the same way, with its candidates and comparisons.
    other = make_project("other", num_candidates=2, overlap=1)
    make_comparisons(other, n=2)
    prompt = other.prompts.first()
    response = client.post(
        reverse("admin:annotation_prompt_delete", args=[prompt.pk]), {"post": "yes"}
    )
    assert response.status_code == 302
    assert not Prompt.objects.filter(pk=prompt.pk).exists()
    assert Comparison.objects.filter(project=other).count() == 1

    # Labeled work is protected: the page names what blocks it, and nothing is deleted.
    labeler = make_labeler("lab", projects=[other])
    assignment = assignment_next(project=other, labeler=labeler)
    ids = assignment.display_order
    ranking_submit(
        assignment=assignment,
        labeler=labeler,
        ranking=[[ids[0]], [ids[1]]],
        client_token=uuid.uuid4(),
    )
    url = reverse("admin:annotation_project_delete", args=[other.pk])
    page = client.get(url).content.decode()
    assert "<title>Cannot delete project" in page and "Annotation" in page
    client.post(url, {"post": "yes"})
    assert Project.objects.filter(slug="other").exists()
    assert Candidate.objects.filter(prompt__project=other).count() == 2


def test_project_admins_can_revoke_api_tokens_but_delete_nothing_else(client, labeler):
    from annotation.models import ApiToken
    from annotation.services.projects import labeler_create
    from annotation.services.tokens import api_token_issue

    admin_user, _key = labeler_create(username="pat", staff=True, password="pw-Pat-12345!")
    assert admin_user.has_perm("annotation.delete_apitoken")
    assert not admin_user.has_perm("annotation.delete_project")
    assert not admin_user.has_perm("annotation.delete_annotation")
    key = api_token_issue(labeler)
    token = ApiToken.objects.get(digest=ApiToken.digest_of(key))
    client.force_login(admin_user)
    response = client.post(
        reverse("admin:annotation_apitoken_changelist"),
        {"action": "delete_selected", "_selected_action": [token.pk], "post": "yes"},
    )
    assert response.status_code == 302
    assert not ApiToken.objects.filter(pk=token.pk).exists()
    # A superuser's tokens are not theirs to see or revoke.
    root = get_user_model().objects.create_superuser("root", "r@example.com", "pw-root-123")
    root_token = ApiToken.objects.get(digest=ApiToken.digest_of(api_token_issue(root)))
    listing = client.get(reverse("admin:annotation_apitoken_changelist")).content.decode()
    assert root_token.prefix not in listing
    client.post(
        reverse("admin:annotation_apitoken_changelist"),
        {"action": "delete_selected", "_selected_action": [root_token.pk], "post": "yes"},
    )
    assert ApiToken.objects.filter(pk=root_token.pk).exists()


def test_a_project_admin_revokes_their_own_tokens_but_not_another_admins(client):
    from annotation.models import ApiToken
    from annotation.services.projects import labeler_create
    from annotation.services.tokens import api_token_issue

    pat, _ = labeler_create(username="pat", staff=True, password="pw-Pat-12345!")
    sam, _ = labeler_create(username="sam", staff=True, password="pw-Sam-12345!")
    own = ApiToken.objects.get(digest=ApiToken.digest_of(api_token_issue(pat)))
    peer = ApiToken.objects.get(digest=ApiToken.digest_of(api_token_issue(sam)))
    client.force_login(pat)
    listing = client.get(reverse("admin:annotation_apitoken_changelist")).content.decode()
    assert own.prefix in listing and peer.prefix not in listing
    peer_page = client.get(reverse("admin:annotation_apitoken_delete", args=[peer.pk]))
    assert peer_page.status_code == 302  # "doesn't exist" for this admin
    for token in (peer, own):
        client.post(
            reverse("admin:annotation_apitoken_changelist"),
            {"action": "delete_selected", "_selected_action": [token.pk], "post": "yes"},
        )
    assert ApiToken.objects.filter(pk=peer.pk).exists()
    assert not ApiToken.objects.filter(pk=own.pk).exists()


def test_a_project_admins_group_made_before_gets_the_token_permission_on_migrate(db):
    from importlib import import_module

    from django.apps import apps
    from django.contrib.auth.models import Group, Permission

    group = Group.objects.create(name="project admins")
    grant = import_module("annotation.migrations.0015_project_admins_revoke_tokens").grant
    grant(apps, None)
    assert group.permissions.filter(codename="delete_apitoken").exists()
    assert not Permission.objects.filter(group=group).exclude(codename="delete_apitoken")


def test_the_annotations_list_reads_candidate_texts_once_per_page(
    client, superuser, make_project, make_comparisons, make_labeler
):
    import uuid

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from annotation.services.labeling import assignment_next, ranking_submit

    project = make_project("many", num_candidates=2, overlap=8)
    make_comparisons(project, n=1, texts=["Paris.", "Lyon?"])
    client.force_login(superuser)
    url = reverse("admin:annotation_annotation_changelist")

    def label(n):
        for i in range(n):
            labeler = make_labeler(f"lab{i}-{n}", projects=[project])
            assignment = assignment_next(project=project, labeler=labeler)
            a, b = sorted(assignment.display_order)
            ranking_submit(
                assignment=assignment, labeler=labeler, ranking=[[a], [b]],
                client_token=uuid.uuid4(),
            )  # fmt: skip

    def queries() -> tuple[int, str]:
        with CaptureQueriesContext(connection) as captured:
            page = client.get(url).content.decode()
        return len(captured), page

    label(1)
    few, _ = queries()
    label(6)
    many, page = queries()
    assert page.count("Paris. &gt; Lyon?") == 7
    assert many == few
