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
