"""Settings that shape stored rankings lock once a project has comparisons (SPEC section 11)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.urls import reverse

from annotation.errors import ServiceValidationError
from annotation.models import Project
from annotation.services.projects import project_update

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "changes",
    [
        {"num_candidates": 3},
        {"allow_ties": False},
        {"rating_scale": 5},
        {"task_type": "pairwise", "num_candidates": 2},
        {"flags": ["unhelpful", "harmful"]},  # "untruthful" removed
    ],
)
def test_locked_settings_are_refused_once_comparisons_exist(project, make_comparisons, changes):
    make_comparisons(project, 1)
    with pytest.raises(ServiceValidationError) as exc:
        project_update(project=project, **changes)
    field = next(iter(changes)) if "flags" not in changes else "flags"
    assert field in exc.value.errors
    assert "comparisons" in str(exc.value.detail)
    stored = Project.objects.get(pk=project.pk)
    assert stored.num_candidates == 4 and stored.allow_ties and stored.rating_scale == 0
    assert stored.flags == ["unhelpful", "untruthful", "harmful"]


def test_model_validation_refuses_too(project, make_comparisons):
    make_comparisons(project, 1)
    project.num_candidates = 3
    with pytest.raises(ValidationError) as exc:
        project.full_clean()
    assert "num_candidates cannot change" in str(exc.value.message_dict["num_candidates"])


def test_other_settings_and_new_flag_codes_still_change(project, make_comparisons):
    make_comparisons(project, 1)
    updated = project_update(
        project=project, overlap=3, lease_seconds=120, flags=[*project.flags, "off-topic"]
    )
    assert updated.overlap == 3 and "off-topic" in updated.flags


def test_without_comparisons_everything_may_change(project):
    updated = project_update(project=project, num_candidates=3, allow_ties=False, rating_scale=5)
    assert (updated.num_candidates, updated.allow_ties, updated.rating_scale) == (3, False, 5)


def _admin_form_data(page) -> dict:
    """The change form's current values as a POST body."""
    form = page.context["adminform"].form
    data = {}
    for name, field in form.fields.items():
        value = form.initial.get(name, field.initial)
        if callable(value):  # a model default such as default_flags (add form)
            value = value()
        if value is None:
            continue
        if isinstance(value, bool):
            if value:
                data[name] = "on"
            continue
        if isinstance(value, list) and name == "members":
            data[name] = [getattr(v, "pk", v) for v in value]
            continue
        data[name] = field.prepare_value(value) if hasattr(field, "prepare_value") else value
    return data


def test_the_admin_refuses_a_locked_change(client, project, make_comparisons):
    make_comparisons(project, 1)
    root = get_user_model().objects.create_superuser("root", "r@example.com", "pw-root-123")
    client.force_login(root)
    url = reverse("admin:annotation_project_change", args=[project.pk])
    data = _admin_form_data(client.get(url))
    data["num_candidates"] = "3"
    response = client.post(url, data)
    assert response.status_code == 200  # the form again, with the error
    assert (
        "num_candidates cannot change once the project has comparisons" in response.content.decode()
    )
    assert Project.objects.get(pk=project.pk).num_candidates == 4


def test_the_page_draws_ranks_from_the_comparison_not_the_project(
    client, make_project, make_labeler, make_comparisons
):
    # A comparison of 3 in a project that (through a raw update, past the lock) says K=4.
    project = make_project("k3", num_candidates=3, overlap=1)
    alice = make_labeler("k3a", projects=[project])
    make_comparisons(project, 1)
    Project.objects.filter(pk=project.pk).update(num_candidates=4)
    client.force_login(alice)
    html = client.get(reverse("label", kwargs={"slug": project.slug})).content.decode()
    assert "3rd" in html and "4th" not in html.split('<template id="card-template">')[0]


def test_the_admin_sets_task_type_and_allow_edit_then_locks_them(client, make_comparisons):
    root = get_user_model().objects.create_superuser("root", "r@example.com", "pw-root-123")
    client.force_login(root)
    add = reverse("admin:annotation_project_add")
    data = _admin_form_data(client.get(add))
    data.update(slug="edits", name="Edits", allow_edit="on", num_candidates="2")
    data["task_type"] = "ranking"
    response = client.post(add, data)
    assert response.status_code == 302, response.content.decode()[:2000]
    project = Project.objects.get(slug="edits")
    assert project.allow_edit is True
    # A demonstration project cannot take allow_edit.
    data.update(slug="demos", task_type="demonstration")
    refused = client.post(add, data)
    assert refused.status_code == 200
    assert "allow_edit is for ranking projects" in refused.content.decode()
    data.pop("allow_edit")
    assert client.post(add, data).status_code == 302
    assert Project.objects.get(slug="demos").task_type == "demonstration"

    make_comparisons(project, 1)
    url = reverse("admin:annotation_project_change", args=[project.pk])
    data = _admin_form_data(client.get(url))
    data.pop("allow_edit")
    response = client.post(url, data)
    assert response.status_code == 200
    assert "allow_edit cannot change once the project has comparisons" in response.content.decode()
    assert Project.objects.get(pk=project.pk).allow_edit is True


def test_rating_labels_one_per_point_or_none(make_project):
    from django.core.management import call_command

    project = make_project("rated", rating_scale=3, rating_labels=["Bad", "OK", "Good"])
    assert project.rating_choices() == [("1", "1 · Bad"), ("2", "2 · OK"), ("3", "3 · Good")]
    assert make_project("plain", rating_scale=2).rating_choices() == [("1", "1"), ("2", "2")]
    for bad in (["Bad", "OK"], ["Bad", "", "Good"], "Bad,OK,Good", ["x" * 61] * 3):
        with pytest.raises(ServiceValidationError, match="rating_labels|labels"):
            make_project(f"bad{len(str(bad))}", rating_scale=3, rating_labels=bad)
    call_command(
        "create_project", "cli", "--rating-scale", "2", "--rating-labels", "Worse, Better",
        stdout=__import__("io").StringIO(),
    )  # fmt: skip
    assert Project.objects.get(slug="cli").rating_labels == ["Worse", "Better"]
