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
    assert f"export {export.pk} with 0 pairs" in response.content.decode()
    assert export.created_by == superuser


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
